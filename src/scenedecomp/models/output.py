"""The one model output contract: training, metrics and figures are written once against it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class ModelOutput:
    """What every scene-decomposition model returns from ``forward(image, num_slots=None)``.

    Shapes use ``B`` batch, ``K`` slots, ``C`` channels, ``H``/``W`` pixels, ``D`` latent size.

    Attributes:
        loss: scalar that the optimiser minimises (mean over the batch of the per-image loss).
        loss_terms: named scalar parts of the loss for logging, e.g. ``nll``, ``kl_z``, ``kl_mask``
            (batch means, unweighted); they are detached by the training loop before logging.
        log_masks: ``[B,K,1,H,W]`` log of the per-slot masks used for segmentation;
            ``log_masks.exp().sum(1) == 1`` per pixel. The predicted label map is ``log_masks.argmax(1)``.
        slot_recons: ``[B,K,C,H,W]`` per-slot reconstructed images (unmasked means) in ``[0, 1]``.
        recon: ``[B,C,H,W]`` the reconstruction mixture ``sum_k m_k * slot_recons_k``.
        latents: ``[B,K,D]`` per-slot latent means (the object representations).
        extras: model-specific tensors (e.g. AIR's ``z_where``/``z_pres``, MONet's decoded mask logits).
    """

    loss: Tensor
    loss_terms: dict[str, Tensor]
    log_masks: Tensor
    slot_recons: Tensor
    recon: Tensor
    latents: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def num_slots(self) -> int:
        return self.log_masks.shape[1]

    def predicted_labels(self) -> Tensor:
        """``[B,H,W]`` int64 label map: the argmax slot per pixel."""
        return self.log_masks.argmax(dim=1).squeeze(1)

    def masks(self) -> Tensor:
        """``[B,K,1,H,W]`` masks in probability space."""
        return self.log_masks.exp()

    def _map(self, fn, per_image=None) -> ModelOutput:
        """Apply ``fn`` to every tensor (and ``per_image`` to the per-image tensors, if given)."""
        img = per_image or fn

        def apply(value, f):
            return f(value) if torch.is_tensor(value) else value

        return ModelOutput(
            loss=fn(self.loss),
            loss_terms={k: fn(v) for k, v in self.loss_terms.items()},
            log_masks=img(self.log_masks),
            slot_recons=img(self.slot_recons),
            recon=img(self.recon),
            latents=img(self.latents),
            extras={k: apply(v, img) for k, v in self.extras.items()},
        )

    def detach(self) -> ModelOutput:
        return self._map(torch.Tensor.detach)

    def cpu(self) -> ModelOutput:
        return self._map(lambda t: t.detach().cpu())

    def select(self, index) -> ModelOutput:
        """The outputs of the images ``index`` (a slice or index tensor) of the batch; losses unchanged."""
        return self._map(lambda t: t, lambda t: t[index])
