"""The tests' check of the batch contract every dataset yields and every model consumes (the contract is
stated in :mod:`scenedecomp.data`).

A dataset item (one scene) is a ``dict`` with

- ``image``: float32 tensor ``[C, H, W]`` with values in ``[0, 1]`` (required);
- ``mask``: int64 label map ``[H, W]``; 0 is background unless the dataset declares more background
  labels (``Dataset.background_labels``); objects are labelled 1..O (optional);
- ``num_objects``: int64 scalar, number of foreground objects in the scene (optional);
- ``visibility``: float32 ``[O_max]``, 1 for a visible object slot, 0 for padding (optional);
- ``factors``: ``dict[str, Tensor]`` of per-object ground-truth factors, each ``[O_max, ...]`` and padded
  with zeros past the scene's objects (optional).

``torch.utils.data.default_collate`` stacks items into a batch with a leading ``B`` axis:
``image [B,C,H,W]``, ``mask [B,H,W]``, ``num_objects [B]``, ``visibility [B,O_max]``,
``factors[name] [B,O_max,...]``.
"""

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
