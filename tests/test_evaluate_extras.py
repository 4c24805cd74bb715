"""`evaluate --disentanglement` and `evaluate --split <ood>` on tiny trained runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scenedecomp.cli import main
from scenedecomp.evaluation.latents import DisentanglementError, score_split
from scenedecomp.inference.run import find_run, load_weights


def test_evaluate_disentanglement_writes_metrics_and_matrix(monet_run, capsys):
    assert main(["evaluate", str(monet_run), "--disentanglement", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "DCI D" in out and "MIG" in out
    metrics = json.loads((monet_run / "metrics.json").read_text())
    assert "train_seconds" in metrics and metrics["num_images"] == 40  # what was there is kept
    d = metrics["disentanglement"]
    factors = ["shape", "scale", "orientation", "x", "y", "color[0]", "color[1]", "color[2]"]
    assert d["factor_names"] == factors and d["factors"]["shape"] == "categorical"
    assert np.array(d["importance"]).shape == (5, len(factors))  # latent_dim 5 x factors
    assert d["num_train"] + d["num_test"] == d["num_objects"] >= 20
    for key in ("dci_disentanglement", "dci_completeness", "mig"):
        assert d[key] is None or 0 <= d[key] <= 1, key
    assert set(d["informativeness"]) == {"linear", "mlp"} and set(d["informativeness"]["mlp"]) == set(factors)
    assert (monet_run / "figures" / "disentanglement_test.png").stat().st_size > 1000


def test_evaluate_ood_split_with_more_slots(monet_run, air_run, capsys):
    assert main(["evaluate", str(monet_run), "--split", "ood_more_objects", "--num-slots", "5", "--quiet"]) == 0
    metrics = json.loads((monet_run / "metrics_ood_more_objects.json").read_text())
    assert metrics["split"] == "ood_more_objects" and metrics["num_slots"] == 5 and metrics["num_images"] == 40
    for split in ("ood_identical_color", "ood_large_objects", "ood_small_objects"):
        assert main(["evaluate", str(air_run), "--split", split, "--quiet"]) == 0
        assert json.loads((air_run / f"metrics_{split}.json").read_text())["split"] == split
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["evaluate", str(monet_run), "--split", "ood_nothing"])
    assert "invalid choice" in capsys.readouterr().err


def test_disentanglement_needs_factors(monet_run):
    _, ckpt, cfg = find_run(monet_run)
    module = load_weights(ckpt, cfg)
    loader = [{"image": torch.rand(2, 3, 16, 16)}]
    with pytest.raises(DisentanglementError, match="no per-object factors"):
        score_split(module, loader)
