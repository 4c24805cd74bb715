"""Segmentation by MONet's decoded masks and the generative reconstruction: ``decoded_*`` and
``generative_mse`` in validation, ``evaluate`` and ``metrics.json``."""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from scenedecomp.metrics.batch import batch_metrics
from scenedecomp.models.output import ModelOutput


def _output(log_masks: torch.Tensor, decoded_logits: torch.Tensor, slot_recons: torch.Tensor) -> ModelOutput:
    recon = (log_masks.exp() * slot_recons).sum(1)
    return ModelOutput(torch.zeros(()), {}, log_masks, slot_recons, recon, torch.zeros(log_masks.shape[0], 3, 2),
                       {"recon_log_masks": F.log_softmax(decoded_logits, dim=1)})


def test_decoded_metrics_equal_an_independent_computation():
    gen = torch.Generator().manual_seed(0)
    b, k, h, w = 3, 3, 6, 7
    true = torch.randint(0, 3, (b, h, w), generator=gen)
    attention = F.log_softmax(torch.randn(b, k, 1, h, w, generator=gen) * 3, dim=1)
    decoded_logits = torch.randn(b, k, 1, h, w, generator=gen) * 3
    slot_recons = torch.rand(b, k, 3, h, w, generator=gen)
    image = torch.rand(b, 3, h, w, generator=gen)
    result = batch_metrics({"image": image, "mask": true}, _output(attention, decoded_logits, slot_recons))
    decoded_labels = decoded_logits.argmax(1).squeeze(1)
    attention_labels = attention.argmax(1).squeeze(1)
    for i in range(b):
        assert abs(float(result["decoded_ari"][i]) - adjusted_rand_score(
            true[i].flatten().numpy(), decoded_labels[i].flatten().numpy())) < 1e-6
        assert abs(float(result["ari"][i]) - adjusted_rand_score(
            true[i].flatten().numpy(), attention_labels[i].flatten().numpy())) < 1e-6
        fg = (true[i] > 0).flatten().numpy()
        assert abs(float(result["decoded_fg_ari"][i]) - adjusted_rand_score(
            true[i].flatten().numpy()[fg], decoded_labels[i].flatten().numpy()[fg])) < 1e-6
    generative = (F.softmax(decoded_logits, dim=1) * slot_recons).sum(1)
    expected = ((generative - image) ** 2).mean((1, 2, 3))
    torch.testing.assert_close(result["generative_mse"].float(), expected.float())
    assert not torch.allclose(result["generative_mse"].float(), result["mse"].float())
    # without ground truth only the generative reconstruction is scored
    assert set(batch_metrics({"image": image}, _output(attention, decoded_logits, slot_recons))) == {
        "mse", "generative_mse"}


def test_models_without_decoded_masks_get_no_decoded_metrics():
    log_masks = F.log_softmax(torch.randn(2, 3, 1, 4, 4), dim=1)
    out = ModelOutput(torch.zeros(()), {}, log_masks, torch.rand(2, 3, 3, 4, 4), torch.rand(2, 3, 4, 4),
                      torch.zeros(2, 3, 2))
    assert not any(name.startswith(("decoded_", "generative")) for name in batch_metrics(
        {"image": torch.rand(2, 3, 4, 4), "mask": torch.zeros(2, 4, 4, dtype=torch.long)}, out))


def test_monet_run_records_decoded_metrics(monet_run):
    metrics = json.loads((monet_run / "metrics.json").read_text())
    for key in ("decoded_fg_ari", "decoded_ari", "decoded_msc", "generative_mse"):
        assert key in metrics and np.isfinite(metrics[key]), key
    history = [json.loads(line) for line in (monet_run / "history.jsonl").read_text().splitlines()]
    assert all("decoded_msc" in row and "generative_mse" in row for row in history)
