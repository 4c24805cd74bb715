"""Reconstruction metrics."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mse"]


def mse(images: Tensor, reconstructions: Tensor) -> Tensor:
    """Per-image mean squared error, averaged over channels and pixels.

    Args:
        images: target images ``[B, C, H, W]`` (in [0, 1] by convention).
        reconstructions: reconstructions (e.g. the mixture over slots) ``[B, C, H, W]``.

    Returns:
        float64 tensor ``[B]``.
    """
    if images.shape != reconstructions.shape:
        raise ValueError(f"images and reconstructions must have the same shape, got {tuple(images.shape)} "
                         f"and {tuple(reconstructions.shape)}")
    diff = images.to(torch.float64) - reconstructions.to(torch.float64)
    return diff.pow(2).reshape(diff.shape[0], -1).mean(dim=1)
