"""Generated sprite datasets: ``shapes`` and ``multi_sprites`` (Multi-dSprites-like).

Both are rendered with numpy, vectorised over chunks of images, with hard (not anti-aliased) masks so
the label map matches the image exactly, and cached on disk (:mod:`scenedecomp.data.cache`).

Options (both datasets; pass to ``open_dataset(name, split, **options)``):

- ``image_size`` (default 64): the canvas is rendered directly at this size (all geometry is defined
  in canvas units [0, 1], so a 32x32 split shows the same scenes as the 64x64 one, not a downsample);
- ``num_images``: images in the split (defaults in :data:`DEFAULT_NUM_IMAGES`);
- ``seed`` (default 0): base seed; each split draws from its own stream,
  ``SeedSequence(seed, spawn_key=(crc32(dataset name), crc32(split), block))``, so splits differ;
- ``min_objects`` / ``max_objects``: number of objects drawn uniformly in this range; per-object arrays
  are padded to ``max_objects``;
- ``cache_dir``: where the generated arrays are stored (default ``$SCENEDECOMP_CACHE`` or
  ``~/.cache/scenedecomp``).

Determinism: scene parameters are drawn in fixed blocks of :data:`PARAM_BLOCK` images, each block from
its own seed, and rendering is a pure function of the parameters. The same (seed, split, options)
therefore gives bit-identical arrays, independent of the render chunk size and thread count, and the
first ``n`` images of a split do not depend on ``num_images`` (a larger split extends a smaller one).

Categorical factors are coded from 1 (dSprites convention); 0 marks padding slots.

``shapes``
    Black background, ``0..2`` non-overlapping circles or squares (``shape`` 1 = circle, 2 = square),
    size (diameter / side) an integer in 12..20 px at 64x64 (scaled proportionally at other sizes),
    colour red / green / aqua (``color`` 1, 2, 3). Objects are kept at least 1 px (at 64x64) apart,
    bounding box to bounding box, and fully inside the canvas. Factors: ``shape`` int64, ``size`` float32
    (px at the 64x64 reference), ``x``, ``y`` float32 (centre in canvas units, x = column, y = row
    downwards), ``color`` int64.

``multi_sprites``
    Multi-dSprites ``colored_on_colored``-like: ``1..4`` sprites drawn back to front over a random RGB
    background. dSprites factor grid: ``shape`` 1 = square, 2 = ellipse, 3 = heart; ``scale`` one of
    ``linspace(0.5, 1, 6)``; ``orientation`` one of ``linspace(0, 2*pi, 40)`` (as in dSprites, both
    endpoints included, so 0 and 2*pi are the same pose); ``x``, ``y`` one of ``linspace(0, 1, 32)``.
    Geometry: a sprite of scale ``s`` has radius ``R = 0.15 * s`` canvas units (at 64x64 and scale 1 the
    square is 15.4 px wide (21.7 px diagonal), the ellipse 19.2 x 9.6 px, the heart 19.2 x 19.2 px); the
    centre is at ``0.15 + 0.7 * x`` (columns) and ``0.15 + 0.7 * y`` (rows, downwards), so centres stay
    inside the canvas and large rotated sprites can be clipped slightly at the border. A sprite is a
    binary function of the coordinates rotated by ``-orientation`` and divided by ``R`` about its
    centre: square ``max(|u|,|v|) <= 0.8``; ellipse ``u^2 + (2v)^2 <= 1``; heart
    ``(X^2+Y^2-1)^3 <= X^2 Y^3`` with ``X = 1.139 u``, ``Y = 0.125 - 1.125 v`` (lobes up at
    orientation 0). Pixel centres are sampled at ``(i + 0.5) / image_size``.
    Colours: background and sprites uniform over 8-bit RGB; a sprite colour closer than
    :data:`MIN_COLOR_DISTANCE` (Euclidean, RGB in [0, 1]) to the background is redrawn (sprites may
    resemble each other). ``color`` factor: float32 ``[3]`` = the exact 8-bit colour / 255. The background
    colour is kept in ``dataset.arrays["background_color"]`` (float32 ``[N, 3]``).
    Label ``k`` (1-based) is sprite ``k`` in drawing order, minus the pixels of later sprites.
    ``visibility[k-1]`` is 1 when label ``k`` has at least one pixel; a fully occluded sprite keeps its
    slot and factors with visibility 0 (so labels can skip a number), and ``num_objects`` counts the
    visible sprites. The top sprite is always visible, so ``num_objects >= 1`` when ``min_objects >= 1``.

Out-of-distribution test splits of ``multi_sprites`` (:data:`OOD_SPLITS`; ``evaluate --split <name>``):
``ood_more_objects`` (``max_objects + 1`` to ``max_objects + 2`` sprites), ``ood_identical_color`` (all
sprites of a scene share one colour), ``ood_large_objects`` / ``ood_small_objects`` (scales 1.1-1.5 /
0.3-0.45 instead of 0.5-1.0). Each draws from its own stream (seeded by the split name), 1000 images by
default; the train/val/test splits and their cache files are unchanged by their existence.
"""

from __future__ import annotations

import os

import numpy as np

from ..cache import FACTOR_PREFIX, SceneArrayDataset, open_generated
from ..registry import DatasetError, register_dataset
from .procedural import PARAM_BLOCK, Params, check_options, pixel_centres, render_all, sample_params

DEFAULT_NUM_IMAGES = {
    "shapes": {"train": 10_000, "val": 1_000, "test": 1_000},
    "multi_sprites": {"train": 50_000, "val": 1_000, "test": 1_000},
}

# --- shapes -------------------------------------------------------------------------------------------
SHAPES_VERSION = 1
SHAPES_SHAPES = ("circle", "square")  # codes 1, 2
SHAPES_COLORS = ("red", "green", "aqua")  # codes 1, 2, 3
SHAPES_PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 255, 255]], dtype=np.uint8)  # 0 = bg
SHAPES_SIZE_RANGE = (12, 20)  # px at the 64x64 reference, inclusive
SHAPES_REFERENCE_SIZE = 64
SHAPES_GAP = 1.0 / SHAPES_REFERENCE_SIZE  # minimum box-to-box gap in canvas units
_MAX_PLACEMENT_ROUNDS = 1000

# --- multi_sprites ------------------------------------------------------------------------------------
MULTI_SPRITES_VERSION = 1
SPRITE_SHAPES = ("square", "ellipse", "heart")  # codes 1, 2, 3
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2.0 * np.pi, 40)
POSITIONS = np.linspace(0.0, 1.0, 32)
BASE_RADIUS = 0.15  # sprite radius at scale 1, canvas units
CENTRE_MARGIN = 0.15  # sprite centre = margin + (1 - 2 * margin) * position
SQUARE_HALF_SIDE = 0.8  # in units of the radius
ELLIPSE_MINOR = 0.5  # semi-minor axis, in units of the radius (semi-major = 1)
HEART_X, HEART_Y_SCALE, HEART_Y_SHIFT = 1.139, 1.125, 0.125
MIN_COLOR_DISTANCE = 0.25

# --- multi_sprites out-of-distribution test splits (``open_dataset("multi_sprites", split=<name>)``) ----
# Each has its own random stream (the split name seeds it) and 1000 images by default; every option not
# named here (image_size, seed, min/max_objects) is taken from the call, i.e. from the training config.
OOD_SPLITS = {
    "ood_more_objects": "max_objects+1 .. max_objects+2 sprites (5-6 for the default 1-4; factors padded)",
    "ood_identical_color": "every sprite of a scene has the same colour (like Objects Room identical_color)",
    "ood_large_objects": "sprite scales 1.1-1.5 (training 0.5-1.0)",
    "ood_small_objects": "sprite scales 0.3-0.45 (training 0.5-1.0)",
}
OOD_SCALES = {"ood_large_objects": np.linspace(1.1, 1.5, 5), "ood_small_objects": np.linspace(0.3, 0.45, 4)}
OOD_NUM_IMAGES = 1000


# --- shared machinery ---------------------------------------------------------------------------------


def _compose(masks: np.ndarray, image_index: np.ndarray, slot: np.ndarray, palette: np.ndarray,
             image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Label map (later slots on top) and RGB image from per-object boolean masks ``[M, S, S]``."""
    b, slots_plus_bg = palette.shape[:2]
    full = np.zeros((b, slots_plus_bg - 1, image_size, image_size), dtype=bool)
    full[image_index, slot] = masks
    label = np.zeros((b, image_size, image_size), dtype=np.uint8)
    for k in range(slots_plus_bg - 1):
        label[full[:, k]] = k + 1
    image = palette[np.arange(b)[:, None, None], label]
    return image, label


def _default_num_images(name: str, split: str, num_images: int | None) -> int:
    if num_images is not None:
        return num_images
    defaults = DEFAULT_NUM_IMAGES[name]
    if split not in defaults:
        raise DatasetError(f"{name}: no default size for split {split!r}; pass num_images")
    return defaults[split]


# --- shapes -------------------------------------------------------------------------------------------
def _sample_shapes_block(rng: np.random.Generator, min_objects: int, max_objects: int) -> Params:
    n, o = PARAM_BLOCK, max_objects
    count = rng.integers(min_objects, max_objects + 1, size=n)
    present = np.arange(o)[None, :] < count[:, None]
    shape = rng.integers(1, len(SHAPES_SHAPES) + 1, size=(n, o))
    size = rng.integers(SHAPES_SIZE_RANGE[0], SHAPES_SIZE_RANGE[1] + 1, size=(n, o))
    color = rng.integers(1, len(SHAPES_COLORS) + 1, size=(n, o))
    extent = size / SHAPES_REFERENCE_SIZE  # canvas units
    unit = rng.random((n, o, 2))
    pending = np.ones(n, dtype=bool)
    pair_i, pair_j = np.triu_indices(o, k=1)
    for _ in range(_MAX_PLACEMENT_ROUNDS):
        centre = extent[..., None] / 2 + unit * (1 - extent[..., None])
        reach = (extent[:, pair_i] + extent[:, pair_j])[..., None] / 2 + SHAPES_GAP
        overlap = (np.abs(centre[:, pair_i] - centre[:, pair_j]) < reach).all(axis=-1)
        overlap &= present[:, pair_i] & present[:, pair_j]
        pending = overlap.any(axis=1)
        if not pending.any():
            break
        unit[pending] = rng.random((int(pending.sum()), o, 2))
    else:
        raise DatasetError(f"shapes: cannot place {max_objects} non-overlapping objects; lower max_objects")
    palette = np.zeros((n, o + 1, 3), dtype=np.uint8)
    palette[:, 1:] = np.where(present[..., None], SHAPES_PALETTE[color], 0)
    return {"shape": np.where(present, shape, 0), "size": np.where(present, size, 0).astype(np.float32),
            "x": np.where(present, centre[..., 0], 0).astype(np.float32),
            "y": np.where(present, centre[..., 1], 0).astype(np.float32),
            "color": np.where(present, color, 0), "palette": palette}


def _render_shapes_chunk(p: Params, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = pixel_centres(image_size)
    image_index, slot = np.nonzero(p["shape"] > 0)
    radius = (p["size"][image_index, slot] / (2 * SHAPES_REFERENCE_SIZE))[:, None, None]
    dx = coords[None, None, :] - p["x"][image_index, slot][:, None, None]
    dy = coords[None, :, None] - p["y"][image_index, slot][:, None, None]
    circle = dx * dx + dy * dy < radius * radius
    square = (np.abs(dx) < radius) & (np.abs(dy) < radius)
    masks = np.where((p["shape"][image_index, slot] == 1)[:, None, None], circle, square)
    return _compose(masks, image_index, slot, p["palette"], image_size)


def generate_shapes(num_images: int, image_size: int = 64, seed: int = 0, split: str = "train",
                    min_objects: int = 0, max_objects: int = 2) -> dict[str, np.ndarray]:
    """Arrays of a ``shapes`` split (layout of :mod:`scenedecomp.data.cache`), in memory."""
    image_size, num_images, seed, min_objects, max_objects = check_options(
        "shapes", split, image_size, num_images, seed, min_objects, max_objects, lowest=0)
    params = sample_params("shapes", seed, split, num_images,
                            lambda rng: _sample_shapes_block(rng, min_objects, max_objects))
    arrays = render_all(params, image_size, max_objects, _render_shapes_chunk)
    for key in ("shape", "size", "x", "y", "color"):
        arrays[FACTOR_PREFIX + key] = params[key]
    return arrays


@register_dataset("shapes")
def shapes(split: str = "train", *, image_size: int = 64, num_images: int | None = None, seed: int = 0,
           min_objects: int = 0, max_objects: int = 2, cache_dir: str | os.PathLike | None = None
           ) -> SceneArrayDataset:
    """``shapes``: 0-2 non-overlapping red/green/aqua circles and squares on black (module docstring)."""
    num_images = _default_num_images("shapes", split, num_images)
    image_size, num_images, seed, min_objects, max_objects = check_options(
        "shapes", split, image_size, num_images, seed, min_objects, max_objects, lowest=0)
    options = {"image_size": image_size, "num_images": num_images, "seed": seed,
               "min_objects": min_objects, "max_objects": max_objects}
    return open_generated(
        "shapes", split, SHAPES_VERSION, options, lambda: generate_shapes(split=split, **options),
        cache_dir=cache_dir, describe=f"{num_images} images at {image_size}x{image_size}",
        max_objects=max_objects)


# --- multi_sprites ------------------------------------------------------------------------------------
def _sample_sprites_block(rng: np.random.Generator, min_objects: int, max_objects: int,
                          same_color: bool = False, scales: np.ndarray | None = None) -> Params:
    n, o = PARAM_BLOCK, max_objects
    count = rng.integers(min_objects, max_objects + 1, size=n)
    present = np.arange(o)[None, :] < count[:, None]
    shape = rng.integers(1, len(SPRITE_SHAPES) + 1, size=(n, o))
    scales = SCALES if scales is None else np.asarray(scales, dtype=np.float64)
    scale = scales[rng.integers(0, len(scales), size=(n, o))]
    orientation = ORIENTATIONS[rng.integers(0, len(ORIENTATIONS), size=(n, o))]
    x = POSITIONS[rng.integers(0, len(POSITIONS), size=(n, o))]
    y = POSITIONS[rng.integers(0, len(POSITIONS), size=(n, o))]
    background = rng.integers(0, 256, size=(n, 3))
    color = rng.integers(0, 256, size=(n, o, 3))
    while True:
        too_close = np.linalg.norm((color - background[:, None, :]) / 255.0, axis=-1) < MIN_COLOR_DISTANCE
        if not too_close.any():
            break
        color[too_close] = rng.integers(0, 256, size=(int(too_close.sum()), 3))
    if same_color:  # OOD: every sprite takes the first one's colour (already far enough from the background)
        color[:] = color[:, :1]
    color = np.where(present[..., None], color, 0).astype(np.uint8)
    palette = np.concatenate([background[:, None, :].astype(np.uint8), color], axis=1)

    def keep(values: np.ndarray) -> np.ndarray:
        return np.where(present, values, 0).astype(np.float32)

    return {"shape": np.where(present, shape, 0), "scale": keep(scale), "orientation": keep(orientation),
            "x": keep(x), "y": keep(y), "color": color.astype(np.float32) / np.float32(255.0),
            "background_color": background.astype(np.float32) / np.float32(255.0), "palette": palette}


def _render_sprites_chunk(p: Params, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = pixel_centres(image_size)
    image_index, slot = np.nonzero(p["shape"] > 0)
    codes = p["shape"][image_index, slot]
    span = np.float32(1.0 - 2.0 * CENTRE_MARGIN)
    cx = CENTRE_MARGIN + span * p["x"][image_index, slot]
    cy = CENTRE_MARGIN + span * p["y"][image_index, slot]
    radius = np.float32(BASE_RADIUS) * p["scale"][image_index, slot]
    angle = p["orientation"][image_index, slot].astype(np.float64)
    cos = (np.cos(angle) / radius).astype(np.float32)
    sin = (np.sin(angle) / radius).astype(np.float32)
    dx = (coords[None, :] - cx[:, None]).astype(np.float32)  # [M, S] along columns
    dy = (coords[None, :] - cy[:, None]).astype(np.float32)  # [M, S] along rows
    masks = np.empty((len(codes), image_size, image_size), dtype=bool)
    for code in (1, 2, 3):
        sel = np.nonzero(codes == code)[0]
        if not len(sel):
            continue
        c, s = cos[sel, None, None], sin[sel, None, None]
        ddx, ddy = dx[sel, None, :], dy[sel, :, None]
        if code == 1:  # square
            u = np.abs(c * ddx + s * ddy)
            v = np.abs(c * ddy - s * ddx)
            masks[sel] = np.maximum(u, v) <= SQUARE_HALF_SIDE
        elif code == 2:  # ellipse
            u = c * ddx + s * ddy
            v = (c / ELLIPSE_MINOR) * ddy - (s / ELLIPSE_MINOR) * ddx
            masks[sel] = u * u + v * v <= 1.0
        else:  # heart
            hx = (HEART_X * c) * ddx + (HEART_X * s) * ddy
            hy = (HEART_Y_SHIFT - (HEART_Y_SCALE * c) * ddy) + (HEART_Y_SCALE * s) * ddx
            hx2, hy2 = hx * hx, hy * hy
            q = hx2 + hy2 - 1.0
            masks[sel] = q * q * q <= hx2 * hy2 * hy
    return _compose(masks, image_index, slot, p["palette"], image_size)


def generate_multi_sprites(num_images: int, image_size: int = 64, seed: int = 0, split: str = "train",
                           min_objects: int = 1, max_objects: int = 4, same_color: bool = False,
                           scales: list[float] | None = None) -> dict[str, np.ndarray]:
    """Arrays of a ``multi_sprites`` split (layout of :mod:`scenedecomp.data.cache`), in memory.

    ``same_color`` and ``scales`` (the scale values to draw from instead of :data:`SCALES`) serve the
    out-of-distribution splits; their defaults leave the output unchanged."""
    image_size, num_images, seed, min_objects, max_objects = check_options(
        "multi_sprites", split, image_size, num_images, seed, min_objects, max_objects, lowest=0)
    params = sample_params("multi_sprites", seed, split, num_images,
                            lambda rng: _sample_sprites_block(rng, min_objects, max_objects, same_color, scales))
    arrays = render_all(params, image_size, max_objects, _render_sprites_chunk)
    for key in ("shape", "scale", "orientation", "x", "y", "color"):
        arrays[FACTOR_PREFIX + key] = params[key]
    arrays["background_color"] = params["background_color"]
    return arrays


@register_dataset("multi_sprites", extra_splits=tuple(OOD_SPLITS))
def multi_sprites(split: str = "train", *, image_size: int = 64, num_images: int | None = None, seed: int = 0,
                  min_objects: int = 1, max_objects: int = 4, cache_dir: str | os.PathLike | None = None
                  ) -> SceneArrayDataset:
    """``multi_sprites``: Multi-dSprites-like coloured sprites on a coloured background (module docstring);
    ``split`` may also name an out-of-distribution test split (:data:`OOD_SPLITS`)."""
    if split in OOD_SPLITS and num_images is None:
        num_images = OOD_NUM_IMAGES
    num_images = _default_num_images("multi_sprites", split, num_images)
    image_size, num_images, seed, min_objects, max_objects = check_options(
        "multi_sprites", split, image_size, num_images, seed, min_objects, max_objects, lowest=0)
    if split == "ood_more_objects":
        min_objects, max_objects = max_objects + 1, max_objects + 2
    options = {"image_size": image_size, "num_images": num_images, "seed": seed,
               "min_objects": min_objects, "max_objects": max_objects}
    if split == "ood_identical_color":  # OOD options enter the cache key only where they are used
        options["same_color"] = True
    if split in OOD_SCALES:
        options["scales"] = [round(float(v), 6) for v in OOD_SCALES[split]]
    return open_generated(
        "multi_sprites", split, MULTI_SPRITES_VERSION, options,
        lambda: generate_multi_sprites(split=split, **options),
        cache_dir=cache_dir, describe=f"{num_images} images at {image_size}x{image_size}",
        max_objects=max_objects)


__all__ = ["DEFAULT_NUM_IMAGES", "OOD_SPLITS", "generate_multi_sprites", "generate_shapes", "multi_sprites", "shapes"]
