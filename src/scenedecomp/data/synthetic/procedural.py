"""The procedural toolkit the generated datasets share: scene parameters drawn in fixed, seeded blocks (so the
first N scenes of a split do not depend on its size), rendering in chunks over threads, the options check,
pixel centres and per-object visibility."""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..registry import DatasetError

PARAM_BLOCK = 1000  # images per parameter-sampling block (fixed: part of the generator definition)


RENDER_CHUNK = 256  # images rendered per vectorised step (does not change the output)


def block_rng(name: str, seed: int, split: str, block: int) -> np.random.Generator:
    key = (zlib.crc32(name.encode()), zlib.crc32(split.encode()), block)
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


Params = dict[str, np.ndarray]


def sample_params(name: str, seed: int, split: str, num_images: int,
                   sample_block: Callable[[np.random.Generator], Params]) -> Params:
    num_blocks = math.ceil(num_images / PARAM_BLOCK)
    blocks = [sample_block(block_rng(name, seed, split, b)) for b in range(num_blocks)]
    return {key: np.concatenate([block[key] for block in blocks])[:num_images] for key in blocks[0]}


def num_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def render_all(params: Params, image_size: int, max_objects: int,
                render_chunk: Callable[[Params, int], tuple[np.ndarray, np.ndarray]],
                chunk: int = RENDER_CHUNK, workers: int | None = None, first_label: int = 1) -> Params:
    """Render every scene: chunks of ``chunk`` images, spread over threads (numpy releases the GIL).
    Object ``j`` is label ``first_label + j`` in the rendered label maps (its ``visibility`` column)."""
    n = len(next(iter(params.values())))
    image = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    mask = np.empty((n, image_size, image_size), dtype=np.uint8)

    def work(start: int) -> None:
        stop = min(start + chunk, n)
        image[start:stop], mask[start:stop] = render_chunk(
            {key: value[start:stop] for key, value in params.items()}, image_size)

    workers = workers or num_workers()
    starts = range(0, n, chunk)
    if workers == 1 or n <= chunk:
        for start in starts:
            work(start)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, starts))
    # visibility: object k's label has at least one pixel
    visibility = np.zeros((n, max_objects), dtype=np.float32)
    for start in range(0, n, 4096):
        labels = mask[start:start + 4096].reshape(-1, image_size * image_size)
        for k in range(max_objects):
            visibility[start:start + 4096, k] = (labels == first_label + k).any(axis=1)
    return {"image": image, "mask": mask, "visibility": visibility,
            "num_objects": visibility.sum(axis=1).astype(np.int64)}


def pixel_centres(image_size: int) -> np.ndarray:
    return ((np.arange(image_size, dtype=np.float64) + 0.5) / image_size).astype(np.float32)


def check_options(name: str, split: str, image_size: Any, num_images: Any, seed: Any, min_objects: Any,
                   max_objects: Any, lowest: int) -> tuple[int, int, int, int, int]:
    def integer(option: str, value: Any, low: int, high: int | None = None) -> int:
        return check_integer(f"{name} {split}", option, value, low, high)

    image_size = integer("image_size", image_size, 8)
    num_images = integer("num_images", num_images, 1)
    seed = integer("seed", seed, 0)
    min_objects = integer("min_objects", min_objects, lowest)
    max_objects = integer("max_objects", max_objects, max(min_objects, 1), 255)
    return image_size, num_images, seed, min_objects, max_objects


def check_integer(where: str, option: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int when it is an integer in ``[low, high]``; else a one-line :class:`DatasetError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
            high is not None and value > high):
        bound = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")
        raise DatasetError(f"{where}: {option} must be {bound}, got {value!r}")
    return int(value)
