"""Tests for scenedecomp.metrics (ARI / FG-ARI, segmentation covering, MSE, counting, summarize)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from scenedecomp.metrics import (
    ari,
    count_accuracy,
    count_accuracy_by_count,
    labels_from_masks,
    mse,
    segmentation_covering,
    segmentation_metrics,
    summarize,
)

# ----------------------------------------------------------------------------------------------------
# helpers


def _random_case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch of 4 label maps: random sizes 8..32, 1..6 true labels, predictions that are either random
    or a noisy, relabelled copy of the truth (so ARI values span the whole range, not just ~0)."""
    g = torch.Generator().manual_seed(seed)
    h = int(torch.randint(8, 33, (1,), generator=g))
    w = int(torch.randint(8, 33, (1,), generator=g))
    n_true = int(torch.randint(1, 7, (1,), generator=g))
    n_pred = int(torch.randint(1, 7, (1,), generator=g))
    true = torch.randint(0, n_true, (4, h, w), generator=g)
    # Blocky ground truth for half the batch (more realistic segments than i.i.d. noise).
    blocks = torch.randint(0, n_true, (2, 4, 4), generator=g)
    true[:2] = blocks.repeat_interleave(math.ceil(h / 4), 1).repeat_interleave(math.ceil(w / 4), 2)[:, :h, :w]
    pred = torch.randint(0, n_pred, (4, h, w), generator=g)
    perm = torch.randperm(10, generator=g) * 7 + 3  # non-contiguous labels
    noisy = perm[true]
    flip = torch.rand(4, h, w, generator=g) < 0.2
    noisy[flip] = pred[flip]
    pred[1::2] = noisy[1::2]
    return true, pred


def _permute_labels(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Bijectively map the label values to a shuffled, non-contiguous set of large values."""
    uniq, inv = torch.unique(labels, return_inverse=True)
    new = torch.randperm(uniq.numel(), generator=torch.Generator().manual_seed(seed)) * 37 + 1000
    return new[inv]


def _sk_ari(true: np.ndarray, pred: np.ndarray, keep: np.ndarray | None = None) -> float:
    t, p = true.reshape(-1), pred.reshape(-1)
    if keep is not None:
        t, p = t[keep.reshape(-1)], p[keep.reshape(-1)]
    if t.size < 2:
        return float("nan")
    return float(adjusted_rand_score(t, p))


def _loop_covering(true: np.ndarray, pred: np.ndarray, weighted: bool, bg=(0,)) -> float:
    """Direct per-segment implementation for one image."""
    scores, weights = [], []
    for lab in np.unique(true):
        if lab in bg:
            continue
        seg = true == lab
        best = 0.0
        for plab in np.unique(pred):
            pseg = pred == plab
            best = max(best, (seg & pseg).sum() / (seg | pseg).sum())
        scores.append(best)
        weights.append(seg.sum() if weighted else 1.0)
    if not scores:
        return float("nan")
    return float(np.average(scores, weights=weights))


def _assert_close_nan(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float64), equal_nan=True,
                               rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# ARI


@pytest.mark.parametrize("seed", range(8))
def test_ari_matches_sklearn(seed):
    true, pred = _random_case(seed)
    out = ari(true, pred)
    assert out.dtype == torch.float64 and out.shape == (4,)
    expected = [_sk_ari(true[i].numpy(), pred[i].numpy()) for i in range(4)]
    _assert_close_nan(out, expected)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("bg", [(0,), (0, 1)])
def test_fg_ari_matches_sklearn(seed, bg):
    true, pred = _random_case(seed)
    out = ari(true, pred, ignore_background=True, background_labels=bg)
    keep = ~np.isin(true.numpy(), bg)
    expected = [_sk_ari(true[i].numpy(), pred[i].numpy(), keep[i]) for i in range(4)]
    _assert_close_nan(out, expected)


def test_ari_values_are_not_trivial():
    # Guard that the random cases really exercise the comparison (not all 0/1/NaN).
    vals = torch.cat([ari(*_random_case(s)) for s in range(8)])
    vals = vals[~vals.isnan()]
    assert ((vals > 0.05) & (vals < 0.99)).sum() >= 4


def test_ari_permutation_invariance_and_label_values():
    true, pred = _random_case(3)
    base = ari(true, pred, ignore_background=True)
    permuted = _permute_labels(pred)
    assert not torch.equal(permuted, pred)
    torch.testing.assert_close(ari(true, permuted, ignore_background=True), base, equal_nan=True)
    # 0/255-style non-contiguous labels and small integer dtypes.
    true8 = (true * 40).to(torch.uint8)
    torch.testing.assert_close(ari(true8, pred.to(torch.int32), ignore_background=True), base,
                               equal_nan=True)
    # Symmetric without background masking.
    torch.testing.assert_close(ari(true, pred), ari(pred, true))


def test_ari_perfect_and_batch_independence():
    true, _ = _random_case(5)
    torch.testing.assert_close(ari(true, true + 3), torch.ones(4, dtype=torch.float64))
    # Each image is scored independently of the other images in the batch.
    t, p = _random_case(6)
    full = ari(t, p)
    single = torch.cat([ari(t[i:i + 1], p[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(full, single)


def test_ari_edge_cases():
    # (a) no foreground / fewer than 2 counted pixels -> NaN
    bg_only = torch.zeros(1, 4, 4, dtype=torch.long)
    pred = torch.arange(16).reshape(1, 4, 4)
    assert torch.isnan(ari(bg_only, pred, ignore_background=True)).all()
    one_px = bg_only.clone()
    one_px[0, 2, 2] = 1
    assert torch.isnan(ari(one_px, pred, ignore_background=True)).all()
    assert torch.isnan(ari(torch.zeros(1, 1, 1, dtype=torch.long), torch.zeros(1, 1, 1, dtype=torch.long)))
    # (b) both a single cluster (one foreground object, constant prediction) -> 1.0 (sklearn agrees)
    obj = bg_only.clone()
    obj[0, 1:3, 1:3] = 4
    const = torch.full_like(obj, 2)
    assert ari(obj, const, ignore_background=True).item() == 1.0
    assert adjusted_rand_score([4, 4, 4, 4], [2, 2, 2, 2]) == 1.0
    # ... and over all pixels a constant prediction vs object + background -> 0
    assert ari(obj, const).item() == pytest.approx(0.0, abs=1e-12)
    # (c) constant prediction with several true objects -> 0
    several = torch.tensor([[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]]])
    const0 = torch.zeros_like(several)
    assert ari(several, const0, ignore_background=True).item() == pytest.approx(0.0, abs=1e-12)
    # all-distinct truth vs constant prediction -> 0 (sklearn agrees; denominator stays positive)
    distinct = torch.arange(16).reshape(1, 4, 4)
    assert ari(distinct, torch.zeros_like(distinct)).item() == pytest.approx(0.0, abs=1e-12)
    assert adjusted_rand_score(np.arange(16), np.zeros(16)) == pytest.approx(0.0, abs=1e-12)
    # Negative ARI example from the sklearn docs.
    t = torch.tensor([[[0, 0, 1, 1]]])
    p = torch.tensor([[[0, 1, 0, 1]]])
    assert ari(t, p).item() == pytest.approx(-0.5)
    # Mixed batch: the NaN image does not affect the others.
    batch_true = torch.cat([bg_only, several])
    batch_pred = torch.cat([pred, several])
    _assert_close_nan(ari(batch_true, batch_pred, ignore_background=True), [float("nan"), 1.0])


def test_ari_large_image_float64():
    g = torch.Generator().manual_seed(0)
    true = torch.randint(0, 5, (1, 300, 300), generator=g)
    pred = true.clone()
    pred[torch.rand(1, 300, 300, generator=g) < 0.3] = 7
    expected = adjusted_rand_score(true.reshape(-1).numpy(), pred.reshape(-1).numpy())
    assert ari(true, pred).item() == pytest.approx(expected, rel=1e-10)


def test_ari_input_validation():
    with pytest.raises(ValueError):
        ari(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(TypeError):
        ari(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))


# ----------------------------------------------------------------------------------------------------
# Segmentation covering


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("weighted", [False, True])
def test_covering_matches_loop(seed, weighted):
    true, pred = _random_case(seed)
    bg = (0,) if seed % 2 else (0, 1)
    out = segmentation_covering(true, pred, weighted=weighted, background_labels=bg)
    assert out.dtype == torch.float64 and out.shape == (4,)
    expected = [_loop_covering(true[i].numpy(), pred[i].numpy(), weighted, bg) for i in range(4)]
    _assert_close_nan(out, expected)


def test_covering_hand_computed():
    # GT: row 0 = object 1 (4 px), rows 1-2 = object 2 (8 px), row 3 = background.
    true = torch.tensor([[[1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2], [0, 0, 0, 0]]])
    # Object 1 perfectly covered (IoU 1), object 2 half covered (best IoU 4/8 = 0.5).
    pred = torch.tensor([[[5, 5, 5, 5], [6, 6, 6, 6], [7, 7, 7, 7], [8, 8, 8, 8]]])
    assert segmentation_covering(true, pred).item() == pytest.approx(0.75)  # (1 + 0.5) / 2
    assert segmentation_covering(true, pred, weighted=True).item() == pytest.approx(2 / 3)  # (4 + 4) / 12
    # Predicted segments include background pixels: slot 5 also covering row 3 -> IoU 4/8 for object 1.
    pred_bg = pred.clone()
    pred_bg[0, 3] = 5
    assert segmentation_covering(true, pred_bg).item() == pytest.approx(0.5)
    assert segmentation_covering(true, pred_bg, weighted=True).item() == pytest.approx(0.5)
    # Perfect prediction -> 1; over-segmentation is penalised.
    assert segmentation_covering(true, true + 10).item() == pytest.approx(1.0)
    split = torch.arange(16).reshape(1, 4, 4)
    assert segmentation_covering(true, split).item() == pytest.approx((0.25 + 0.125) / 2)


def test_covering_edge_cases():
    bg_only = torch.zeros(2, 4, 4, dtype=torch.long)
    bg_only[1, 0, 0] = 3
    pred = torch.zeros_like(bg_only)
    out = segmentation_covering(bg_only, pred)
    assert torch.isnan(out[0]) and out[1].item() == pytest.approx(1 / 16)
    assert torch.isnan(segmentation_covering(bg_only, pred, weighted=True)[0])
    # Permutation invariance of predicted labels.
    true, p = _random_case(2)
    for weighted in (False, True):
        torch.testing.assert_close(segmentation_covering(true, _permute_labels(p), weighted=weighted),
                                   segmentation_covering(true, p, weighted=weighted), equal_nan=True)


# ----------------------------------------------------------------------------------------------------
# convenience wrapper


def test_segmentation_metrics_from_log_masks():
    true, pred = _random_case(1)
    pred = pred % 5
    log_masks = torch.log_softmax(torch.nn.functional.one_hot(pred, 5).permute(0, 3, 1, 2).double() * 3
                                  + 0.1 * torch.randn(4, 5, *pred.shape[1:]), dim=1).unsqueeze(2)
    assert log_masks.shape == (4, 5, 1, *pred.shape[1:])
    torch.testing.assert_close(labels_from_masks(log_masks), pred)
    from_masks = segmentation_metrics(true, log_masks)
    from_labels = segmentation_metrics(true, pred)
    assert set(from_masks) == {"ari", "fg_ari", "msc", "sc"}
    for key in from_masks:
        torch.testing.assert_close(from_masks[key], from_labels[key], equal_nan=True)
    torch.testing.assert_close(from_labels["fg_ari"], ari(true, pred, ignore_background=True),
                               equal_nan=True)
    torch.testing.assert_close(from_labels["sc"], segmentation_covering(true, pred, weighted=True),
                               equal_nan=True)


# ----------------------------------------------------------------------------------------------------
# MSE, counting, summarize


def test_mse_matches_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 7, 5, generator=g)
    y = torch.rand(3, 3, 7, 5, generator=g)
    out = mse(x, y)
    expected = ((x.numpy().astype(np.float64) - y.numpy()) ** 2).reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    assert out.shape == (3,)
    assert mse(x, x).abs().max().item() == 0.0
    with pytest.raises(ValueError):
        mse(x, y[:, :2])


def test_count_accuracy_and_by_count():
    true = torch.tensor([0, 1, 1, 2, 2, 2, 3])
    pred = torch.tensor([0, 1, 2, 2, 2, 1, 0])
    torch.testing.assert_close(count_accuracy(true, pred),
                               torch.tensor([1, 1, 0, 1, 1, 0, 0], dtype=torch.float64))
    by = count_accuracy_by_count(true, pred)
    assert list(by) == [0, 1, 2, 3]
    assert by == pytest.approx({0: 1.0, 1: 0.5, 2: 2 / 3, 3: 0.0})
    # Lists and float predictions (rounded) are accepted.
    assert count_accuracy([1, 2], [1.0, 2.2]).tolist() == [1.0, 1.0]


def test_summarize_skips_nan():
    per_image = {
        "ari": torch.tensor([0.5, 1.0, float("nan"), 0.0], dtype=torch.float64),
        "mse": torch.tensor([1.0, 2.0, 3.0, 4.0]),
        "empty": torch.full((4,), float("nan")),
    }
    s = summarize(per_image)
    assert s["num_images"] == 4
    assert s["ari"] == pytest.approx(0.5)
    assert s["ari_std"] == pytest.approx(np.nanstd([0.5, 1.0, np.nan, 0.0]))
    assert s["ari_count"] == 3
    assert s["mse"] == pytest.approx(2.5) and s["mse_count"] == 4
    assert math.isnan(s["empty"]) and math.isnan(s["empty_std"]) and s["empty_count"] == 0
    assert summarize({}) == {"num_images": 0}
