"""Object counting metrics (AIR) and aggregation of per-image metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["count_accuracy", "count_accuracy_by_count", "summarize"]


def _as_counts(x: Tensor | Sequence[int]) -> Tensor:
    t = torch.as_tensor(x)
    if t.is_floating_point():
        t = t.round()
    return t.reshape(-1).long()


def count_accuracy(true_counts: Tensor | Sequence[int], pred_counts: Tensor | Sequence[int]) -> Tensor:
    """Per-image count accuracy.

    Args:
        true_counts: true number of objects per image ``[B]``.
        pred_counts: inferred number of present objects per image ``[B]`` (floats are rounded).

    Returns:
        float64 tensor ``[B]``: 1.0 where the counts are equal, else 0.0. Its mean is the count accuracy.
    """
    t = _as_counts(true_counts)
    p = _as_counts(pred_counts).to(t.device)
    if t.shape != p.shape:
        raise ValueError(f"count tensors must have the same shape, got {tuple(t.shape)} and {tuple(p.shape)}")
    return (t == p).to(torch.float64)


def count_accuracy_by_count(
    true_counts: Tensor | Sequence[int], pred_counts: Tensor | Sequence[int]
) -> dict[int, float]:
    """Count accuracy split by the true count.

    Args:
        true_counts: ``[B]`` true counts.
        pred_counts: ``[B]`` inferred counts.

    Returns:
        ``{true_count: accuracy}`` for every true count that occurs, sorted by count.
    """
    t = _as_counts(true_counts)
    correct = count_accuracy(true_counts, pred_counts)
    values, inv = torch.unique(t, return_inverse=True)
    hits = torch.zeros(values.numel(), dtype=torch.float64, device=t.device).index_add_(0, inv, correct)
    totals = torch.bincount(inv, minlength=values.numel()).to(torch.float64)
    acc = (hits / totals).tolist()
    return {int(v): float(a) for v, a in zip(values.tolist(), acc, strict=True)}


def summarize(per_image: Mapping[str, Tensor]) -> dict[str, float]:
    """Aggregate per-image metrics into scalars (e.g. for ``metrics.json``).

    Args:
        per_image: ``{name: tensor [B]}`` of per-image values; NaN marks images where the metric is
            undefined (e.g. FG-ARI / MSC on an image without foreground).

    Returns:
        For every ``name``: ``name`` (mean over the non-NaN images), ``name_std`` (population standard
        deviation, ddof=0, over the non-NaN images) and ``name_count`` (number of non-NaN images, an int).
        Mean and std are NaN when no image is valid. Plus ``num_images``: the batch size of the first
        tensor (0 for an empty dict).
    """
    out: dict[str, float] = {"num_images": 0}
    for i, (key, value) in enumerate(per_image.items()):
        value = torch.as_tensor(value).detach()
        if i == 0:
            out["num_images"] = int(value.shape[0]) if value.dim() else 1
        v = value.to(torch.float64).reshape(-1).cpu()
        valid = v[~torch.isnan(v)]
        count = int(valid.numel())
        if count:
            mean = float(valid.mean())
            std = float(valid.std(correction=0))
        else:
            mean = std = float("nan")
        out[key] = mean
        out[f"{key}_std"] = std
        out[f"{key}_count"] = count
    return out
