"""Disentanglement metrics on synthetic codes with known structure, and the probes against scikit-learn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.linalg import hadamard
from scipy.stats import ortho_group
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from scenedecomp.metrics.disentanglement import (
    MLP_ALPHAS,
    dci,
    disentanglement_metrics,
    match_slots,
    matched_samples,
    mig,
    probe_scores,
)

M = 1200


def _factors(rng):
    return {"a": rng.random(M).astype(np.float32), "b": rng.random(M).astype(np.float32),
            "c": rng.random(M).astype(np.float32), "shape": rng.integers(1, 4, M)}


def _as_matrix(f):
    return np.stack([f["a"], f["b"], f["c"], f["shape"].astype(np.float64)], 1)


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(0)
    f = _factors(rng)
    x = _as_matrix(f)
    x = (x - x.mean(0)) / x.std(0)
    perm, scale = np.array([2, 0, 3, 1]), np.array([3.0, -0.5, 7.0, 1.5])
    identity = x[:, perm] * scale + 0.01 * rng.standard_normal((M, 4))
    rotation = x @ (hadamard(4) / 2)  # the most mixing rotation: every latent is +-0.5 of every factor
    noise = rng.standard_normal((M, 4))
    kw = {"probes": ("linear",), "seed": 0}
    return {name: disentanglement_metrics(code, f, **kw)
            for name, code in (("identity", identity), ("rotation", rotation), ("noise", noise))}


def test_permuted_scaled_identity_scores_about_one(scores):
    s = scores["identity"]
    assert s["dci_disentanglement"] > 0.9 and s["dci_completeness"] > 0.9, s
    assert s["mig"] > 0.8, s["mig_per_factor"]
    assert all(v > 0.99 for k, v in s["informativeness"]["linear"].items() if k != "shape")
    assert s["informativeness"]["linear"]["shape"] > 0.95
    r = np.array(s["importance"])  # latent 0 codes factor c (index 2), latent 1 codes a, ...
    assert list(r.argmax(1)) == [2, 0, 3, 1]


def test_random_rotation_scores_low(scores):
    s, ident = scores["rotation"], scores["identity"]
    assert s["dci_disentanglement"] < 0.5 and s["dci_completeness"] < 0.5, s
    assert s["mig"] < 0.3 < ident["mig"]
    # the information is all there (a rotation is invertible): linear probes still read the continuous factors
    assert all(v > 0.99 for k, v in s["informativeness"]["linear"].items() if k != "shape")


def test_pure_noise_scores_about_zero(scores):
    s = scores["noise"]
    assert s["dci_disentanglement"] < 0.15 and s["dci_completeness"] < 0.15, s
    assert s["mig"] < 0.05 and abs(s["informativeness_linear"]) < 0.1
    assert s["dci_informativeness"] < 0.2


@pytest.mark.parametrize("method", ["gbt", "random_forest", "lasso"])
def test_generic_random_rotations_score_lower_than_identity(method):
    rng = np.random.default_rng(5)
    f = _factors(rng)
    x = _as_matrix(f)
    x = (x - x.mean(0)) / x.std(0)
    ident = disentanglement_metrics(x[:, ::-1] * 2, f, probes=(), importance=method)
    rotated = [disentanglement_metrics(x @ ortho_group.rvs(4, random_state=seed), f, probes=(), importance=method)
               for seed in range(4)]
    mean_d = np.mean([r["dci_disentanglement"] for r in rotated])
    mean_c = np.mean([r["dci_completeness"] for r in rotated])
    assert ident["dci_disentanglement"] > 0.9 and ident["dci_completeness"] > 0.9, method
    assert mean_d < 0.6 and mean_c < 0.6, (method, mean_d, mean_c)


def test_dci_on_known_importance_matrices():
    eye = dci(np.eye(3))
    assert eye["disentanglement"] == pytest.approx(1) and eye["completeness"] == pytest.approx(1)
    assert eye["per_latent"] == pytest.approx([1, 1, 1]) and eye["per_factor"] == pytest.approx([1, 1, 1])
    uniform = dci(np.ones((4, 3)))
    assert uniform["disentanglement"] == pytest.approx(0) and uniform["completeness"] == pytest.approx(0)
    # one latent codes two factors equally: that latent's disentanglement is 1 - log_3(2)
    half = dci(np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    assert half["per_latent"][0] == pytest.approx(1 - np.log(2) / np.log(3))
    assert half["per_factor"] == pytest.approx([1, 1, 1])


def test_mig_needs_two_latents_and_skips_constant_factors():
    rng = np.random.default_rng(0)
    z = rng.random((5000, 2))
    out = mig(z, {"x": (z[:, 0], False), "const": (np.zeros(5000), False)})
    assert out["mig"] > 0.9 and np.isnan(out["per_factor"]["const"])
    with pytest.raises(ValueError, match="two latent"):
        mig(z[:, :1], {"x": (z[:, 0], False)})


@pytest.mark.parametrize("kind, categorical", [("linear", False), ("linear", True), ("mlp", False), ("mlp", True)])
def test_probes_equal_scikit_learn(kind, categorical):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + 0.1 * rng.standard_normal(300))
    if categorical:
        y = np.digitize(y, [-0.5, 0.7])
    train, test = slice(0, 220), slice(220, None)
    ours = probe_scores(x[train], y[train], x[test], y[test], categorical, kind, seed=0)
    if kind == "linear":
        head = LogisticRegression(max_iter=2000) if categorical else LinearRegression()
    else:  # the L2 weight with the best 3-fold CV score on the training objects, refitted on all of them
        cls = MLPClassifier if categorical else MLPRegressor
        folds = KFold(3).split(x[train]) if not categorical else StratifiedKFold(3).split(x[train], y[train])
        folds = list(folds)
        def cv(alpha):
            scores = []
            for fit, val in folds:
                m = make_pipeline(StandardScaler(), cls(hidden_layer_sizes=(64,), alpha=alpha, max_iter=2000,
                                                        random_state=0)).fit(x[train][fit], y[train][fit])
                pred = m.predict(x[train][val])
                scores.append(accuracy_score(y[train][val], pred) if categorical else r2_score(y[train][val], pred))
            return np.mean(scores)
        best = max(MLP_ALPHAS, key=cv)
        head = cls(hidden_layer_sizes=(64,), alpha=best, max_iter=2000, random_state=0)
    ref = make_pipeline(StandardScaler(), head).fit(x[train], y[train]).predict(x[test])
    expected = accuracy_score(y[test], ref) if categorical else r2_score(y[test], ref)
    assert ours == pytest.approx(expected, abs=1e-12)
    assert ours > (0.5 if categorical else 0.3)  # the probe learnt something real


def test_hungarian_matching_equals_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(30):
        true = rng.integers(0, 4, (6, 6))
        pred = rng.integers(0, 3, (6, 6))
        objects = [o for o in (1, 2, 3) if (true == o).any()]
        pairs = match_slots(true, pred, 3, objects)

        def iou(o, s, true=true, pred=pred):
            a, b = true == o, pred == s
            return (a & b).sum() / max((a | b).sum(), 1)

        best = max(sum(iou(o, s) for o, s in zip(objects, perm))
                   for perm in itertools.permutations(range(3), len(objects)))
        assert sum(p[2] for p in pairs) == pytest.approx(best)
        assert len({p[1] for p in pairs}) == len(pairs)  # one slot per object


def test_matched_samples_pick_the_matched_slot_latent():
    true = np.zeros((1, 4, 4), np.int64)
    true[0, :2, :2] = 1
    true[0, 2:, 2:] = 2
    pred = np.zeros((1, 4, 4), np.int64)
    pred[0, :2, :2] = 2  # slot 2 = object 1
    pred[0, 2:, 2:] = 1  # slot 1 = object 2
    latents = np.arange(9, dtype=np.float64).reshape(1, 3, 3)
    factors = {"size": np.array([[10.0, 20.0, 0.0]])}
    codes, f, iou = matched_samples(latents, pred, true, factors, visibility=np.array([[1, 1, 0]]))
    assert codes.tolist() == [[6, 7, 8], [3, 4, 5]] and f["size"].tolist() == [10, 20] and iou.tolist() == [1, 1]


def test_matched_samples_follow_the_datasets_label_of_factor_row_zero():
    # objects_room_like: labels 0-3 are background regions, factor row j is label 4 + j
    true = np.zeros((1, 4, 4), np.int64)
    true[0, 0] = 2  # a wall: background, never matched
    true[0, 2:, :2] = 4
    true[0, 2:, 2:] = 5
    pred = np.zeros((1, 4, 4), np.int64)
    pred[0, 0] = 3
    pred[0, 2:, :2] = 1
    pred[0, 2:, 2:] = 2
    latents = np.arange(12, dtype=np.float64).reshape(1, 4, 3)
    factors = {"size": np.array([[10.0, 20.0, 30.0]])}
    codes, f, _ = matched_samples(latents, pred, true, factors, first_label=4, background_labels=(0, 1, 2, 3))
    assert codes.tolist() == [[3, 4, 5], [6, 7, 8]] and f["size"].tolist() == [10, 20]
    # converted files: rows indexed by label, row 0 the background
    label_rows = {"size": np.array([[0.0, 10.0, 20.0]])}
    true2 = np.where(true >= 4, true - 3, 0)
    codes, f, _ = matched_samples(latents, pred, true2, label_rows, first_label=0)
    assert f["size"].tolist() == [10, 20], "row 0 (background) is never taken as an object"
    with_offset_one = matched_samples(latents, pred, true2, label_rows)[1]["size"].tolist()
    assert with_offset_one == [0, 10], "the default (multi_sprites) reading would pair the wrong rows"
