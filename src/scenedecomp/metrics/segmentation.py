"""Segmentation metrics: adjusted Rand index (ARI / FG-ARI) and segmentation covering (MSC / SC).

All functions are batched pure-torch implementations: the contingency table between the true and the
predicted labelling of every image is built sparsely with a single ``torch.unique`` over combined
``(image, true label, predicted label)`` keys, so there is no Python loop over pixels or images and the
cost does not depend on how many distinct label values occur. Pair counts (n choose 2) are accumulated
in float64, which is exact for any realistic image size.

Label maps are integer tensors of shape ``[B, H, W]`` (any trailing spatial shape ``[B, ...]`` works, it
is flattened). Label values need not be contiguous (e.g. 0/255 masks are fine).

Per-image results are ``float64`` tensors of shape ``[B]``. Images on which a metric is undefined get
``NaN``; aggregators (see :func:`scenedecomp.metrics.summarize`) skip NaN images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["ari", "segmentation_covering", "segmentation_metrics", "labels_from_masks"]


def _flatten_pair(true: Tensor, pred: Tensor) -> tuple[Tensor, Tensor]:
    """Check and flatten two label maps ``[B, ...]`` to int64 ``[B, N]``."""
    if true.shape != pred.shape:
        raise ValueError(f"true and pred label maps must have the same shape, got {tuple(true.shape)} "
                         f"and {tuple(pred.shape)}")
    if true.dim() < 2:
        raise ValueError(f"label maps must have shape [B, H, W], got {tuple(true.shape)}")
    for name, t in (("true", true), ("pred", pred)):
        if t.is_floating_point() or t.is_complex():
            raise TypeError(f"{name} must be an integer label map, got dtype {t.dtype}")
    b = true.shape[0]
    return true.reshape(b, -1).long(), pred.reshape(b, -1).long()


def _dense_ids(x: Tensor) -> tuple[Tensor, int]:
    """Relabel arbitrary integer labels to 0..U-1 (globally over the batch); returns ids and U."""
    uniq, inv = torch.unique(x, return_inverse=True)
    return inv, max(int(uniq.numel()), 1)


def _background_mask(true: Tensor, background_labels: Sequence[int]) -> Tensor:
    """Boolean mask ``[B, N]`` of pixels whose true label is NOT a background label."""
    bg = torch.as_tensor(list(background_labels), dtype=true.dtype, device=true.device)
    if bg.numel() == 0:
        return torch.ones_like(true, dtype=torch.bool)
    return ~torch.isin(true, bg)


def _comb2(counts: Tensor) -> Tensor:
    c = counts.to(torch.float64)
    return c * (c - 1.0) / 2.0


def _sum_comb2_per_image(keys: Tensor, keys_per_image: int, batch: int) -> Tensor:
    """Sum over the distinct keys of an image of C(count(key), 2); key // keys_per_image is the image."""
    uniq, counts = torch.unique(keys, return_counts=True)
    out = torch.zeros(batch, dtype=torch.float64, device=keys.device)
    return out.index_add_(0, uniq // keys_per_image, _comb2(counts))


def ari(
    true: Tensor,
    pred: Tensor,
    ignore_background: bool = False,
    background_labels: Sequence[int] = (0,),
) -> Tensor:
    """Adjusted Rand index (Hubert & Arabie, 1985) between two labellings, per image.

    Args:
        true: ground-truth integer label map ``[B, H, W]`` (any non-negative labels, not necessarily
            contiguous).
        pred: predicted integer label map ``[B, H, W]`` (e.g. argmax over slots).
        ignore_background: if True only pixels whose TRUE label is not in ``background_labels`` are
            counted (this is FG-ARI); the prediction on those pixels is used as is.
        background_labels: true labels treated as background when ``ignore_background`` is True.

    Returns:
        float64 tensor ``[B]``. On every image with at least 2 counted pixels it equals
        ``sklearn.metrics.adjusted_rand_score`` on the same pixels.

    Edge cases:
        * fewer than 2 counted pixels (in particular an image with no foreground when
          ``ignore_background=True``): ``NaN`` -- the ARI is undefined there (sklearn returns 1.0).
          Aggregators skip NaN images (:func:`scenedecomp.metrics.summarize` uses a nan-mean and reports
          how many images were counted).
        * both labellings identical up to a permutation of labels -- including both being a single
          cluster, e.g. one visible foreground object with a constant prediction under FG-ARI: 1.0,
          as sklearn (DeepMind's implementation can give NaN there).
        * constant prediction with several true segments: 0.0 (the chance level).
    """
    t, p = _flatten_pair(true, pred)
    batch = t.shape[0]
    device = t.device
    if ignore_background:
        valid = _background_mask(t, background_labels)
    else:
        valid = torch.ones_like(t, dtype=torch.bool)

    tid, nt = _dense_ids(t)
    pid, npd = _dense_ids(p)
    img = torch.arange(batch, device=device).unsqueeze(1).expand_as(tid)
    img, tid, pid = img[valid], tid[valid], pid[valid]

    n = torch.bincount(img, minlength=batch).to(torch.float64)
    true_keys = img * nt + tid
    sum_ij = _sum_comb2_per_image(true_keys * npd + pid, nt * npd, batch)  # pairs together in both
    sum_a = _sum_comb2_per_image(true_keys, nt, batch)  # pairs together in true
    sum_b = _sum_comb2_per_image(img * npd + pid, npd, batch)  # pairs together in pred
    total = _comb2(n)

    # Pair-confusion form (same as sklearn): tp/fn/fp/tn counts of unordered pixel pairs.
    tp = sum_ij
    fn = sum_a - sum_ij
    fp = sum_b - sum_ij
    tn = total - sum_a - sum_b + sum_ij
    num = 2.0 * (tp * tn - fn * fp)
    den = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    # den == 0 only when the labellings agree perfectly or n < 2 (both handled below).
    value = num / torch.where(den > 0, den, torch.ones_like(den))
    one = torch.ones_like(value)
    value = torch.where((fn == 0) & (fp == 0), one, value)
    return torch.where(n < 2, torch.full_like(value, float("nan")), value)


def segmentation_covering(
    true: Tensor,
    pred: Tensor,
    weighted: bool = False,
    background_labels: Sequence[int] = (0,),
) -> Tensor:
    """Segmentation covering per image: mean (MSC) or size-weighted (SC) best IoU of each GT segment.

    For every non-empty ground-truth foreground segment ``R`` (true labels not in
    ``background_labels``) take ``max_{R'} |R & R'| / |R | R'|`` over the predicted segments ``R'``.
    Predicted segments are taken over ALL pixels, background pixels included (as in genesis /
    object-centric-library), so a slot that also covers background is penalised. Unlike ARI this
    penalises over-segmentation.

    Args:
        true: ground-truth integer label map ``[B, H, W]``.
        pred: predicted integer label map ``[B, H, W]``.
        weighted: False -> MSC, the unweighted mean over GT segments; True -> SC, weighted by ``|R|``.
        background_labels: true labels that are background (not segments to be covered).

    Returns:
        float64 tensor ``[B]`` in [0, 1]. An image with no foreground pixel gets ``NaN`` (genesis and
        object-centric-library average in a 0 instead); aggregators skip NaN images.
    """
    t, p = _flatten_pair(true, pred)
    batch = t.shape[0]
    device = t.device
    fg = _background_mask(t, background_labels)

    tid, nt = _dense_ids(t)
    pid, npd = _dense_ids(p)
    img = torch.arange(batch, device=device).unsqueeze(1).expand_as(tid)

    # Predicted segment sizes over all pixels; keys sorted by (image, pred id).
    pred_keys, pred_sizes = torch.unique(img * npd + pid, return_counts=True)

    img, tid, pid = img[fg], tid[fg], pid[fg]
    true_row = img * nt + tid
    true_keys, true_sizes = torch.unique(true_row, return_counts=True)  # GT foreground segments
    joint_keys, inter = torch.unique(true_row * npd + pid, return_counts=True)  # non-empty overlaps

    j_true = torch.searchsorted(true_keys, joint_keys // npd)
    j_pred = torch.searchsorted(pred_keys, (joint_keys // (nt * npd)) * npd + joint_keys % npd)
    inter = inter.to(torch.float64)
    union = true_sizes[j_true].to(torch.float64) + pred_sizes[j_pred].to(torch.float64) - inter
    iou = inter / union

    best = torch.zeros(true_keys.numel(), dtype=torch.float64, device=device)
    best = best.scatter_reduce_(0, j_true, iou, reduce="amax")
    weights = true_sizes.to(torch.float64) if weighted else torch.ones_like(best)
    seg_img = true_keys // nt
    num = torch.zeros(batch, dtype=torch.float64, device=device).index_add_(0, seg_img, best * weights)
    den = torch.zeros(batch, dtype=torch.float64, device=device).index_add_(0, seg_img, weights)
    return torch.where(den > 0, num / den.clamp_min(1.0), torch.full_like(num, float("nan")))


def labels_from_masks(masks_or_labels: Tensor) -> Tensor:
    """Predicted label map ``[B, H, W]`` from (log) masks.

    Accepts an integer label map ``[B, H, W]`` (returned unchanged), (log) masks ``[B, K, 1, H, W]``
    or ``[B, K, H, W]`` (argmax over the slot dim 1).
    """
    x = masks_or_labels
    if not x.is_floating_point():
        return x
    if x.dim() == 5:
        if x.shape[2] != 1:
            raise ValueError(f"masks must have shape [B, K, 1, H, W], got {tuple(x.shape)}")
        return x.argmax(dim=1).squeeze(1)
    if x.dim() == 4:
        return x.argmax(dim=1)
    raise ValueError(f"expected a label map [B, H, W] or masks [B, K, 1, H, W], got {tuple(x.shape)}")


def segmentation_metrics(
    true: Tensor,
    log_masks_or_pred: Tensor,
    background_labels: Sequence[int] = (0,),
) -> dict[str, Tensor]:
    """All per-image segmentation metrics at once.

    Args:
        true: ground-truth integer label map ``[B, H, W]``.
        log_masks_or_pred: predicted integer label map ``[B, H, W]`` or floating (log) masks
            ``[B, K, 1, H, W]`` (also ``[B, K, H, W]``); masks are turned into labels by argmax over K.
        background_labels: true labels that are background.

    Returns:
        dict of float64 tensors ``[B]``: ``ari`` (all pixels), ``fg_ari`` (foreground pixels), ``msc``
        (mean segmentation covering), ``sc`` (size-weighted segmentation covering). NaN marks images
        where a metric is undefined (see :func:`ari`, :func:`segmentation_covering`).
    """
    pred = labels_from_masks(log_masks_or_pred)
    return {
        "ari": ari(true, pred),
        "fg_ari": ari(true, pred, ignore_background=True, background_labels=background_labels),
        "msc": segmentation_covering(true, pred, weighted=False, background_labels=background_labels),
        "sc": segmentation_covering(true, pred, weighted=True, background_labels=background_labels),
    }
