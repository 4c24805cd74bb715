"""The metrics of one batch: per-image scores of a model's output against the ground truth the batch holds
(shared by validation during training and by evaluation)."""

from __future__ import annotations

import torch

from .counting import count_accuracy
from .reconstruction import mse
from .segmentation import segmentation_metrics


def batch_metrics(batch: dict, out, background_labels=(0,)) -> dict[str, torch.Tensor]:
    """Per-image metrics ``{name: [B]}`` of a model output (``out``, a
    :class:`~scenedecomp.models.output.ModelOutput`) for whatever ground truth the batch carries.

    Models with decoded masks (``extras["recon_log_masks"]``, MONet's component VAE) also get
    ``generative_mse`` (the image rebuilt from the decoded masks and slot images) and, with ground truth,
    ``decoded_ari`` / ``decoded_fg_ari`` / ``decoded_msc`` (segmentation by the decoded masks' argmax).
    """
    image = batch["image"]
    result = {"mse": mse(image, out.recon.clamp(0, 1))}
    if "mask" in batch:
        result.update(segmentation_metrics(batch["mask"], out.predicted_labels(), background_labels))
    decoded = out.extras.get("recon_log_masks")  # MONet-family: the component VAE's decoded masks
    if decoded is not None:
        # the generative reconstruction: each slot's decoded image under its decoded mask
        generative = (decoded.exp() * out.slot_recons).sum(1)
        result["generative_mse"] = mse(image, generative.clamp(0, 1))
        if "mask" in batch:
            seg = segmentation_metrics(batch["mask"], decoded, background_labels)
            result.update({f"decoded_{k}": seg[k] for k in ("ari", "fg_ari", "msc")})
    if "num_objects" in batch and "num_objects" in out.extras:
        result["count_accuracy"] = count_accuracy(batch["num_objects"], out.extras["num_objects"])
    return result
