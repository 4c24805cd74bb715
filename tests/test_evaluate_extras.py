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
    # the summary scores follow from what the JSON records beside them
    disentanglement, completeness = _dci(np.array(d["importance"]))
    assert d["dci_disentanglement"] == pytest.approx(disentanglement, abs=1e-9)
    assert d["dci_completeness"] == pytest.approx(completeness, abs=1e-9)
    per_factor = [v for v in d["mig_per_factor"].values() if v is not None]
    assert d["mig"] == pytest.approx(float(np.mean(per_factor)))
    for probe in ("linear", "mlp"):
        scores = list(d["informativeness"][probe].values())
        assert d[f"informativeness_{probe}"] == pytest.approx(float(np.mean(scores)))
    assert set(d["informativeness"]) == {"linear", "mlp"} and set(d["informativeness"]["mlp"]) == set(factors)
    assert (monet_run / "figures" / "disentanglement_test.png").stat().st_size > 1000


def _dci(importance: np.ndarray) -> tuple[float, float]:
    """DCI disentanglement and completeness (Eastwood & Williams 2018) of an importance matrix ``[latents,
    factors]``, written out here independently of the package: ``sum_i rho_i (1 - H_F(P_i.))`` and
    ``sum_j rho_j (1 - H_D(P_.j))`` over the factors that any latent informs."""
    r = np.abs(importance)[:, np.abs(importance).sum(0) > 0]
    n_latents, n_factors = r.shape

    def entropy(p: np.ndarray, base: int) -> np.ndarray:
        logs = np.log(np.where(p > 0, p, 1.0))
        return -(p * logs).sum(-1) / np.log(base)

    rows, cols = r.sum(1), r.sum(0)
    p_rows = r / np.where(rows > 0, rows, 1.0)[:, None]
    p_cols = r / cols[None, :]
    disentanglement = float((rows / r.sum() * (1 - entropy(p_rows, n_factors)))[rows > 0].sum())
    completeness = float((cols / r.sum() * (1 - entropy(p_cols.T, n_latents))).sum())
    return disentanglement, completeness


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
