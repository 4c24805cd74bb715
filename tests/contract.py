"""The tests' check of the batch contract every dataset yields and every model consumes (the contract is
stated in :mod:`scenedecomp.data`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def check_item(item: Mapping[str, Any], source: str = "dataset") -> None:
    """Fail (``AssertionError`` naming ``source``) if ``item`` breaks the contract.

    ``item`` may be a single scene (``image [C,H,W]``) or a batch (``image [B,C,H,W]``).
    """
    if "image" not in item:
        raise AssertionError(f"{source}: item has no 'image' (keys: {sorted(item)})")
    image = item["image"]
    if not torch.is_tensor(image) or not image.is_floating_point():
        raise AssertionError(f"{source}: 'image' must be a float tensor, got {type(image).__name__}")
    if image.dim() not in (3, 4):
        raise AssertionError(f"{source}: 'image' must be [C,H,W] or [B,C,H,W], got shape {tuple(image.shape)}")
    if image.numel() and (image.min() < 0 or image.max() > 1):
        raise AssertionError(f"{source}: 'image' values must lie in [0, 1], got [{image.min():.3g}, {image.max():.3g}]")
    if "mask" in item:
        mask = item["mask"]
        if mask.is_floating_point():
            raise AssertionError(f"{source}: 'mask' must be an integer label map, got {mask.dtype}")
        if tuple(mask.shape) != tuple(image.shape[:-3]) + tuple(image.shape[-2:]):
            raise AssertionError(
                f"{source}: 'mask' shape {tuple(mask.shape)} does not match image shape {tuple(image.shape)}"
            )
