"""Generated ``objects_room_like`` dataset: procedural 3-D rooms with the Objects Room label layout.

A stand-in for DeepMind's Objects Room (a MuJoCo room, a multi-object extension of 3d-shapes) that
exercises the thesis' dataset shape without the real files: 64x64 RGB (any ``image_size``), four
background regions and up to three objects, K = 7 label values. Every pixel is ray-cast (one ray
through the pixel centre, numpy, vectorised over chunks of images) against a small 3-D scene, so
perspective, occlusion by depth and shrinking with distance are exact, and masks are hard: the label map
matches the image pixel for pixel.

**Label map (the converted real Objects Room's, exactly).** The real file stores K masks, "the first
four masks correspond to the sky, floor, and two halves of the wall respectively" (DeepMind's
``multi_object_datasets`` README), and :func:`scenedecomp.data.deepmind.multi_object.label_map` gives each pixel
the index of its mask slot. So here:

====== ===========================================================================================
label  region
====== ===========================================================================================
0      sky (every ray that meets nothing)
1      floor
2      left half of the wall (the wall plane ``x = 0``)
3      right half of the wall (the wall plane ``z = 0``)
4..    object slot ``j`` has label ``4 + j`` (4, 5, 6 for the default ``max_objects = 3``)
====== ===========================================================================================

``dataset.background_labels == (0, 1, 2, 3)``, so FG-ARI, MSC and SC ignore all four background
regions exactly as they do for a converted ``objects_room.h5`` (whose ``background_labels`` are the same);
``dataset.num_slots == 4 + max_objects`` (7) is the K of the real file. Like the real data, the four
background regions are not always all visible (a camera pitched down can hide the sky: 3 of the first
5,000 training scenes).

**Other keys (the multi_sprites layout).** ``num_objects`` counts the objects with at least one visible
pixel (as the converter counts non-empty object masks). ``visibility`` float32 ``[max_objects]`` and the
per-object ``factors`` ``[max_objects, ...]`` are indexed by object slot ``j`` (label ``4 + j``), zero
past the scene's objects. (A converted file instead indexes ``visibility`` by label, ``[K]``; the real
Objects Room has no factors.) A fully occluded object keeps its slot and factors with visibility 0, its
label is absent from the map and it is not counted in ``num_objects`` (so labels can skip a number).
Placement keeps objects apart on the floor, but a small far object can still hide behind a large near
one: 95 of the 10,111 objects in the first 5,000 training scenes at 64x64 (0.9%). Visibility is
measured at the rendered size (a sliver seen at 64x64 can vanish at 32x32), as the converter measures
it at the stored size.

Factors (categorical codes from 1; 0 = padding):

- ``shape`` int64: 1 = cube, 2 = cylinder, 3 = sphere (three of 3d-shapes' four shapes);
- ``size`` float32: 3d-shapes' scale, one of ``linspace(0.75, 1.25, 8)``; the object's half-extent
  is ``OBJECT_HALF_SIZE * size`` world units (cube half-side, cylinder and sphere radius; a cylinder is
  as tall as it is wide);
- ``hue`` float32: one of 3d-shapes' 10 hues ``0.0, 0.1, ..., 0.9``;
- ``orientation`` float32: rotation about the vertical axis in degrees, one of 3d-shapes' 15 values in
  ``[-30, 30]`` (only a cube shows it);
- ``x``, ``y`` float32: where the object's 3-D centre projects, in canvas units (x = column, y = row
  downwards; the centroid of an unoccluded object's mask lies within about a pixel of it);
- ``depth`` float32: distance of the object's centre along the camera's viewing axis (world units);
  nearer objects occlude farther ones.

Scene-level values are kept in ``dataset.arrays`` (not in items): ``floor_hue``, ``wall_hue`` (float32
``[N]``) and ``horizon`` (float32 ``[N]``, the row of the eye-level line in canvas units; negative when
it is above the image).

**Scene.** World units, y up. The floor is the plane ``y = 0`` and the two walls are the planes ``x = 0``
and ``z = 0`` (height :data:`WALL_HEIGHT`), meeting in a corner at the origin; the sky is everything
else. The camera stands 7-9 units from the corner, its bearing within 12 degrees of the room's
diagonal, at eye height 1.3-1.7, and looks towards the corner with a yaw jitter of up to 18 degrees
(the corner moves left and right) and a pitch of 3-21 degrees down (the horizon moves up and down);
the field of view is 60 degrees. Objects stand on the floor inside the view, 2.5-6 units in front of the
camera, at least 0.15 units apart and from the walls (their bounding circles do not touch), with the
projected centre inside the image (rejection sampling). Shading is Lambertian under one fixed
directional light (ambient 0.35 for objects, so cubes show faces of different brightness, spheres a
gradient), with a gentle darkening with distance on the floor and walls; the sky is a pale-blue
gradient with elevation.

**Colours** follow 3d-shapes, of which Objects Room is the multi-object extension: floor, wall and
object hues are drawn from the 10 hues ``0.0 ... 0.9`` (HSV); the wall hue differs from the floor's,
and an object never takes the floor's hue (so it stays visible where it stands); objects may share
hues with each other and with the wall. Saturation / value: floor 0.55 / 0.8, walls 0.5 / 0.95,
objects 0.85 / 1.0, before shading.

Options (``open_dataset("objects_room_like", split, **options)``): ``image_size`` (default 64; the
scene is rendered directly at this size, so a 32x32 split shows the same scenes), ``num_images``
(defaults in :data:`DEFAULT_NUM_IMAGES`), ``seed`` (default 0), ``min_objects`` / ``max_objects``
(default 1 / 3, count drawn uniformly), ``cache_dir``. Determinism as for ``multi_sprites``
(:mod:`scenedecomp.data.synthetic.sprites`): scene parameters come in blocks of 1,000 scenes, each from
``SeedSequence(seed, spawn_key=(crc32(name), crc32(split), block))``, and rendering is a pure function
of them, so (seed, split, index) fixes a scene bit for bit, and a larger split extends a smaller one.

Out-of-distribution test splits (:data:`OOD_SPLITS`; ``evaluate --split <name>``), modelled on the real
Objects Room test files and named like ``multi_sprites``' OOD splits, 1,000 scenes by default, each
from its own stream (other options as in the call, i.e. the training config):
``ood_more_objects``: exactly ``max_objects + 3`` objects (6 at the default, labels 4-9, K = 10, as
``objects_room_test_six_objects``; ``num_objects`` counts those visible, mostly 6);
``ood_identical_color``: ``max_objects + 1`` to ``max_objects + 3`` objects (4-6, K = 10) sharing one
hue, as ``objects_room_test_identical_color``.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..cache import FACTOR_PREFIX, SceneArrayDataset, open_generated
from ..registry import DatasetError, register_dataset
from .procedural import PARAM_BLOCK, Params, check_options, pixel_centres, render_all, sample_params

NAME = "objects_room_like"
VERSION = 1
RENDER_CHUNK = 128  # images per vectorised render step (does not change the output)

DEFAULT_NUM_IMAGES = {"train": 50_000, "val": 1_000, "test": 1_000}
OOD_SPLITS = {
    "ood_more_objects": "exactly max_objects+3 objects (6 for the default 1-3, K = 10; Objects Room six_objects)",
    "ood_identical_color": "max_objects+1 .. max_objects+3 objects sharing one hue (4-6; Objects Room "
                           "identical_color)",
}
OOD_NUM_IMAGES = 1000

# --- label layout (the converted real Objects Room) ---------------------------------------------------
SKY, FLOOR, LEFT_WALL, RIGHT_WALL = 0, 1, 2, 3
BACKGROUND_LABELS = (SKY, FLOOR, LEFT_WALL, RIGHT_WALL)
FIRST_OBJECT_LABEL = len(BACKGROUND_LABELS)  # object slot j has label FIRST_OBJECT_LABEL + j

# --- factor grid (3d-shapes) -------------------------------------------------------------------------
OBJECT_SHAPES = ("cube", "cylinder", "sphere")  # codes 1, 2, 3
HUES = np.round(np.arange(10) / 10, 1)
SIZES = np.linspace(0.75, 1.25, 8)
ORIENTATIONS = np.linspace(-30.0, 30.0, 15)  # degrees
CUBE, CYLINDER, SPHERE = 1, 2, 3

# --- scene geometry (world units, y up) ---------------------------------------------------------------
WALL_HEIGHT = 2.4
OBJECT_HALF_SIZE = 0.4  # half-extent at size 1
FIELD_OF_VIEW = 60.0  # degrees, horizontal = vertical
FOCAL = 0.5 / math.tan(math.radians(FIELD_OF_VIEW / 2))  # canvas units
CAMERA_DISTANCE = (7.0, 9.0)  # from the corner, horizontally
CAMERA_BEARING = 12.0  # degrees either side of the room's diagonal
CAMERA_HEIGHT = (1.3, 1.7)
CAMERA_YAW = 18.0  # degrees either side of looking at the corner
CAMERA_PITCH = (-21.0, -3.0)  # degrees, negative = looking down
OBJECT_DEPTH = (2.5, 6.0)  # in front of the camera, horizontally
OBJECT_GAP = 0.15  # between bounding circles, and from the walls
IMAGE_MARGIN = 0.06  # projected centres stay inside [margin, 1 - margin]
_MAX_PLACEMENT_ROUNDS = 1000  # scene restarts
_PLACEMENT_TRIES = 200  # draws per object before its scene starts over

# --- colours and light ----------------------------------------------------------------------------------
FLOOR_SV, WALL_SV, OBJECT_SV = (0.55, 0.8), (0.5, 0.95), (0.85, 1.0)
LIGHT = np.array([0.45, 1.0, 0.7]) / np.linalg.norm([0.45, 1.0, 0.7])  # towards the light
OBJECT_AMBIENT = 0.35
BACKGROUND_AMBIENT = 0.55
SKY_HORIZON = np.array([0.84, 0.9, 0.96])
SKY_ZENITH = np.array([0.45, 0.62, 0.9])


# --- parameters -----------------------------------------------------------------------------------------
def _camera(rng: np.random.Generator, n: int) -> Params:
    distance = rng.uniform(*CAMERA_DISTANCE, size=n)
    bearing = np.radians(45.0 + rng.uniform(-CAMERA_BEARING, CAMERA_BEARING, size=n))
    cam_x, cam_z = distance * np.cos(bearing), distance * np.sin(bearing)
    yaw = np.arctan2(-cam_z, -cam_x) + np.radians(rng.uniform(-CAMERA_YAW, CAMERA_YAW, size=n))
    pitch = np.radians(rng.uniform(*CAMERA_PITCH, size=n))
    height = rng.uniform(*CAMERA_HEIGHT, size=n)
    return {"cam_x": cam_x, "cam_y": height, "cam_z": cam_z, "yaw": yaw, "pitch": pitch}


def _basis(cam: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward, right and up unit vectors ``[N, 3]`` of each camera (no roll)."""
    yaw, pitch = np.asarray(cam["yaw"], np.float64), np.asarray(cam["pitch"], np.float64)
    forward = np.stack([np.cos(pitch) * np.cos(yaw), np.sin(pitch), np.cos(pitch) * np.sin(yaw)], axis=-1)
    right = np.stack([-np.sin(yaw), np.zeros_like(yaw), np.cos(yaw)], axis=-1)
    up = np.cross(right, forward)
    return forward, right, up


def project(cam: Params, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canvas position (column, row downwards) and depth along the viewing axis of world ``points``
    ``[N, O, 3]`` seen by the cameras ``cam`` (arrays ``[N]``)."""
    forward, right, up = _basis(cam)
    origin = np.stack([cam["cam_x"], cam["cam_y"], cam["cam_z"]], axis=-1).astype(np.float64)
    rel = points - origin[:, None, :]
    depth = np.einsum("noc,nc->no", rel, forward)
    safe = np.where(np.abs(depth) > 1e-9, depth, 1e-9)
    col = 0.5 + FOCAL * np.einsum("noc,nc->no", rel, right) / safe
    row = 0.5 - FOCAL * np.einsum("noc,nc->no", rel, up) / safe
    return col, row, depth


def _place(rng: np.random.Generator, cam: Params, present: np.ndarray, half: np.ndarray,
           reach: np.ndarray) -> np.ndarray:
    """Floor positions ``[N, O, 2]`` (x, z) by rejection sampling, one object slot at a time: in view,
    :data:`OBJECT_DEPTH` ahead, clear of the walls and of the objects placed before it, projected centre
    inside the image. A scene whose next object finds no room in :data:`_PLACEMENT_TRIES` draws starts
    over."""
    n, o = present.shape
    heading = np.stack([np.cos(cam["yaw"]), np.sin(cam["yaw"])], axis=-1)  # [n, 2] (x, z)
    side = np.stack([-heading[:, 1], heading[:, 0]], axis=-1)
    origin = np.stack([cam["cam_x"], cam["cam_z"]], axis=-1)
    tan_half = math.tan(math.radians(FIELD_OF_VIEW / 2))
    pos = np.zeros((n, o, 2))
    todo = present.any(axis=1)  # scenes still to place
    for _ in range(_MAX_PLACEMENT_ROUNDS):
        if not todo.any():
            return pos
        failed = np.zeros(n, dtype=bool)
        for k in range(o):
            need = todo & present[:, k] & ~failed
            for _ in range(_PLACEMENT_TRIES):
                idx = np.nonzero(need)[0]
                if not len(idx):
                    break
                ahead = rng.uniform(*OBJECT_DEPTH, size=len(idx))
                across = rng.uniform(-1.0, 1.0, size=len(idx)) * ahead * tan_half
                p = origin[idx] + ahead[:, None] * heading[idx] + across[:, None] * side[idx]
                ok = p.min(axis=1) >= reach[idx, k] + OBJECT_GAP  # clear of both walls
                if k:
                    gap = np.linalg.norm(pos[idx, :k] - p[:, None], axis=-1) - reach[idx, :k] - reach[idx, k, None]
                    ok &= ((gap >= OBJECT_GAP) | ~present[idx, :k]).all(axis=1)
                centre = np.stack([p[:, 0], half[idx, k], p[:, 1]], axis=-1)[:, None]
                col, row, _ = project({key: value[idx] for key, value in cam.items()}, centre)
                ok &= ((col >= IMAGE_MARGIN) & (col <= 1 - IMAGE_MARGIN) & (row >= IMAGE_MARGIN)
                       & (row <= 1 - IMAGE_MARGIN))[:, 0]
                pos[idx[ok], k] = p[ok]
                need[idx[ok]] = False
            failed |= need  # no room for object k: the scene starts over
        todo = failed
    raise DatasetError(f"{NAME}: cannot place {o} objects in the room; lower max_objects")


def _sample_block(rng: np.random.Generator, min_objects: int, max_objects: int,
                  same_hue: bool = False) -> Params:
    n, o = PARAM_BLOCK, max_objects
    cam = _camera(rng, n)
    count = rng.integers(min_objects, max_objects + 1, size=n)
    present = np.arange(o)[None, :] < count[:, None]
    shape = rng.integers(1, len(OBJECT_SHAPES) + 1, size=(n, o))
    size = SIZES[rng.integers(0, len(SIZES), size=(n, o))]
    orientation = ORIENTATIONS[rng.integers(0, len(ORIENTATIONS), size=(n, o))]
    floor_hue = rng.integers(0, len(HUES), size=n)
    wall_hue = (floor_hue + rng.integers(1, len(HUES), size=n)) % len(HUES)  # never the floor's
    hue = (floor_hue[:, None] + rng.integers(1, len(HUES), size=(n, o))) % len(HUES)  # never the floor's
    if same_hue:
        hue[:] = hue[:, :1]
    half = OBJECT_HALF_SIZE * size
    reach = np.where(shape == CUBE, half * math.sqrt(2.0), half)  # bounding-circle radius on the floor
    pos = _place(rng, cam, present, half, reach)
    centre = np.stack([pos[..., 0], half, pos[..., 1]], axis=-1)
    col, row, depth = project(cam, centre)
    horizon = 0.5 + FOCAL * np.tan(cam["pitch"])  # row of the eye-level line (zero roll)

    def keep(values: np.ndarray) -> np.ndarray:
        return np.where(present, values, 0).astype(np.float32)

    params = {key: value.astype(np.float32) for key, value in cam.items()}
    params.update({
        "shape": np.where(present, shape, 0).astype(np.int64), "size": keep(size), "hue": keep(HUES[hue]),
        "orientation": keep(orientation), "x": keep(col), "y": keep(row), "depth": keep(depth),
        "pos_x": keep(pos[..., 0]), "pos_z": keep(pos[..., 1]),
        "floor_hue": HUES[floor_hue].astype(np.float32), "wall_hue": HUES[wall_hue].astype(np.float32),
        "horizon": horizon.astype(np.float32),
    })
    return params


# --- rendering ------------------------------------------------------------------------------------------
def hsv_to_rgb(h: np.ndarray, s: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
    """Vectorised HSV -> RGB (all in [0, 1]); output ``[..., 3]``."""
    h, s, v = np.broadcast_arrays(np.asarray(h, np.float64), np.asarray(s, np.float64), np.asarray(v, np.float64))
    k = (np.array([5.0, 3.0, 1.0]) + 6.0 * h[..., None]) % 6.0
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _lambert(nx: np.ndarray, ny: np.ndarray, nz: np.ndarray, ambient: float) -> np.ndarray:
    cosine = nx * np.float32(LIGHT[0]) + ny * np.float32(LIGHT[1]) + nz * np.float32(LIGHT[2])
    return np.float32(ambient) + np.float32(1.0 - ambient) * np.maximum(cosine, 0.0)


def _hit_object(code: int, ox, oy, oz, dx, dy, dz, half, angle):
    """Ray distance (inf where missed) and unit normal of objects of one shape, standing on the floor.

    ``ox.. dz`` are ray origins relative to the object's foot point and unit directions, broadcastable
    to ``[M, S, S]``; ``half`` and ``angle`` (radians) are ``[M, 1, 1]``."""
    inf = np.float32(np.inf)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if code == SPHERE:
            ey = oy - half
            b = ox * dx + ey * dy + oz * dz
            disc = b * b - (ox * ox + ey * ey + oz * oz - half * half)
            t = -b - np.sqrt(np.maximum(disc, 0.0))
            hit = (disc >= 0) & (t > 0)
            t = np.where(hit, t, inf)
            tt = np.where(hit, t, 0)
            return t, ((ox + tt * dx) / half, (ey + tt * dy) / half, (oz + tt * dz) / half)
        if code == CYLINDER:
            a = dx * dx + dz * dz
            b = ox * dx + oz * dz
            disc = b * b - a * (ox * ox + oz * oz - half * half)
            t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
            y_side = oy + t_side * dy
            side = (disc >= 0) & (a > 0) & (t_side > 0) & (y_side >= 0) & (y_side <= 2 * half)
            t_top = (2 * half - oy) / dy
            tx, tz = ox + t_top * dx, oz + t_top * dz
            top = (dy < 0) & (t_top > 0) & (tx * tx + tz * tz <= half * half)
            t_side = np.where(side, t_side, inf)
            t_top = np.where(top, t_top, inf)
            use_top = t_top < t_side
            t = np.minimum(t_side, t_top)
            ts = np.where(side, t_side, 0)
            nx = np.where(use_top, 0, (ox + ts * dx) / half)
            nz = np.where(use_top, 0, (oz + ts * dz) / half)
            return t, (nx, np.where(use_top, 1, 0).astype(np.float32), nz)
        # cube: rotate the ray into the cube's frame and intersect the slab [-half, half]^3
        cos, sin = np.cos(angle), np.sin(angle)
        lx, lz = cos * ox + sin * oz, -sin * ox + cos * oz
        ly = oy - half
        ux, uz = cos * dx + sin * dz, -sin * dx + cos * dz
        near, far, axis_near = None, None, None
        for axis, (o, u) in enumerate(((lx, ux), (ly, dy), (lz, uz))):
            u = np.where(np.abs(u) < 1e-12, np.float32(1e-12), u)
            t1, t2 = (-half - o) / u, (half - o) / u
            lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
            if near is None:
                near, far, axis_near, sign = lo, hi, np.zeros(lo.shape, np.int8), -np.sign(u)
            else:
                better = lo > near
                axis_near = np.where(better, np.int8(axis), axis_near)
                sign = np.where(better, -np.sign(u), sign)
                near, far = np.maximum(near, lo), np.minimum(far, hi)
        hit = (near <= far) & (near > 0)
        t = np.where(hit, near, inf)
        lnx = np.where(axis_near == 0, sign, 0)
        lnz = np.where(axis_near == 2, sign, 0)
        ny = np.where(axis_near == 1, sign, 0)
        return t, (cos * lnx - sin * lnz, ny, sin * lnx + cos * lnz)


def _windows(p: Params, sel: np.ndarray, j: int, code: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rows and columns ``[M, w]`` of a window that holds the whole projection of object slot ``j``
    of scenes ``sel``: the exact image-plane extent of its bounding sphere, plus one pixel each side. All
    windows of the group have the largest size needed (at most the image), shifted to stay inside it."""
    half = OBJECT_HALF_SIZE * p["size"][sel, j].astype(np.float64)
    radius = half * {CUBE: math.sqrt(3.0), CYLINDER: math.sqrt(2.0), SPHERE: 1.0}[code]
    cam = {key: p[key][sel] for key in ("cam_x", "cam_y", "cam_z", "yaw", "pitch")}
    forward, right, up = _basis(cam)
    centre = np.stack([p["pos_x"][sel, j], half, p["pos_z"][sel, j]], axis=-1)
    rel = centre - np.stack([cam["cam_x"], cam["cam_y"], cam["cam_z"]], axis=-1).astype(np.float64)
    z = np.maximum(np.einsum("mc,mc->m", rel, forward), radius * 1.01 + 1e-3)  # in front (placement)
    z2r2 = z * z - radius * radius
    spans = []
    for along, sign in ((right, 1.0), (up, -1.0)):  # columns: u = +x / z; rows: 0.5 - v = 0.5 - y / z
        a = np.einsum("mc,mc->m", rel, along)
        reach = radius * np.sqrt(np.maximum(a * a + z2r2, 0.0))
        ends = 0.5 + sign * FOCAL * np.stack([a * z - reach, a * z + reach], axis=-1) / z2r2[:, None]
        lo = np.floor(ends.min(axis=1) * s - 0.5).astype(np.int64) - 1  # last pixel centre before the span
        hi = np.ceil(ends.max(axis=1) * s - 0.5).astype(np.int64) + 1
        spans.append((lo, hi))
    width = int(min(s, max(int((hi - lo).max()) + 1 for lo, hi in spans)))
    out = []
    for lo, _ in spans:
        start = np.clip(lo, 0, s - width)
        out.append(start[:, None] + np.arange(width)[None, :])
    return out[1], out[0]


def _camera_rays(image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit ray directions in the camera frame (right, up, forward), one per pixel centre: ``[S, S]`` each."""
    centres = pixel_centres(image_size).astype(np.float64)
    right = np.broadcast_to(centres[None, :] - 0.5, (image_size, image_size))
    up = np.broadcast_to(0.5 - centres[:, None], (image_size, image_size))
    norm = np.sqrt(right * right + up * up + FOCAL * FOCAL)
    return (right / norm).astype(np.float32), (up / norm).astype(np.float32), (FOCAL / norm).astype(np.float32)


def render_rooms(p: Params, image_size: int, return_depth: bool = False, windowed: bool = True):
    """Render scenes from their parameters: ``(image uint8 [B,S,S,3], labels uint8 [B,S,S])`` (plus the
    ray distance ``float32 [B,S,S]`` of the visible surface, inf for sky, with ``return_depth``).
    ``windowed=False`` tests every ray against every object (the same output, slower; for tests)."""
    b, s = len(p["cam_x"]), image_size
    o = p["shape"].shape[1]
    ru, rv, rf = (a[None] for a in _camera_rays(s))
    forward, right, up = (a.astype(np.float32)[:, :, None, None] for a in _basis(p))
    # world ray directions [B, S, S] (no roll: the right vector is horizontal)
    dx = forward[:, 0] * rf + right[:, 0] * ru + up[:, 0] * rv
    dy = forward[:, 1] * rf + up[:, 1] * rv
    dz = forward[:, 2] * rf + right[:, 2] * ru + up[:, 2] * rv
    cx, cy, cz = (p[key].astype(np.float32)[:, None, None] for key in ("cam_x", "cam_y", "cam_z"))

    # background: floor y = 0 (inside the room: x, z >= 0), walls x = 0 and z = 0 up to WALL_HEIGHT
    inf = np.float32(np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -cy / dy
        depth = np.where((dy < 0) & (cx + t * dx >= 0) & (cz + t * dz >= 0), t, inf)
        label = np.where(depth < inf, np.uint8(FLOOR), np.uint8(SKY))
        for lab, o_axis, d_axis, o_other, d_other in ((LEFT_WALL, cx, dx, cz, dz), (RIGHT_WALL, cz, dz, cx, dx)):
            t = -o_axis / d_axis
            y = cy + t * dy
            closer = (d_axis < 0) & (y >= 0) & (y <= WALL_HEIGHT) & (o_other + t * d_other >= 0) & (t < depth)
            depth = np.where(closer, t, depth)
            label = np.where(closer, np.uint8(lab), label)
    # a gentle fade with distance on the floor and walls (none on the sky)
    shade = np.where(label == SKY, np.float32(1.0), np.float32(1.0) - np.float32(0.25 / 14.0) * np.minimum(depth, 14.0))
    flat_depth, flat_label, flat_shade = depth.reshape(-1), label.reshape(-1), shade.reshape(-1)
    flat_dx, flat_dy, flat_dz = dx.reshape(-1), dy.reshape(-1), dz.reshape(-1)
    full = np.arange(s)[None]
    for j in range(o):
        for code in (CUBE, CYLINDER, SPHERE):
            sel = np.nonzero(p["shape"][:, j] == code)[0]
            if not len(sel):
                continue
            # test only the rays of a window around the object's projection (the whole image: windowed=False)
            rows, cols = _windows(p, sel, j, code, s) if windowed else (full, full)
            at = (sel[:, None, None] * s + rows[:, :, None]) * s + cols[:, None, :]  # flat pixel indices
            ox = cx[sel] - p["pos_x"][sel, j, None, None].astype(np.float32)
            oz = cz[sel] - p["pos_z"][sel, j, None, None].astype(np.float32)
            half = (np.float32(OBJECT_HALF_SIZE) * p["size"][sel, j]).astype(np.float32)[:, None, None]
            angle = np.radians(p["orientation"][sel, j]).astype(np.float32)[:, None, None]
            t, normal = _hit_object(code, ox, cy[sel], oz, flat_dx.take(at), flat_dy.take(at), flat_dz.take(at),
                                    half, angle)
            closer = t < flat_depth.take(at)
            at = at[closer]
            flat_depth[at] = t[closer]
            flat_label[at] = FIRST_OBJECT_LABEL + j
            flat_shade[at] = _lambert(*(np.broadcast_to(n, t.shape)[closer] for n in normal), OBJECT_AMBIENT)

    # colours: (base colour by label, Lambert-shaded for the flat background planes) x per-pixel shade;
    # the sky is a gradient with elevation
    palette = np.zeros((b, FIRST_OBJECT_LABEL + o, 3), dtype=np.float64)
    palette[:, SKY] = SKY_HORIZON
    palette[:, FLOOR] = hsv_to_rgb(p["floor_hue"], *FLOOR_SV) * _lambert(0.0, 1.0, 0.0, BACKGROUND_AMBIENT)
    wall = hsv_to_rgb(p["wall_hue"], *WALL_SV)
    palette[:, LEFT_WALL] = wall * _lambert(1.0, 0.0, 0.0, BACKGROUND_AMBIENT)
    palette[:, RIGHT_WALL] = wall * _lambert(0.0, 0.0, 1.0, BACKGROUND_AMBIENT)
    palette[:, FIRST_OBJECT_LABEL:] = hsv_to_rgb(p["hue"], *OBJECT_SV)
    palette = (palette * 255.0).astype(np.float32).reshape(-1, 3)
    index = label + (np.arange(b, dtype=np.int64) * (FIRST_OBJECT_LABEL + o))[:, None, None]
    rgb = palette.take(index, axis=0)  # [B, S, S, 3], 0..255
    rgb *= shade[..., None]
    elevation = np.where(label == SKY, np.clip(dy * np.float32(2.5), 0.0, 1.0), np.float32(0.0))
    rgb += elevation[..., None] * ((SKY_ZENITH - SKY_HORIZON) * 255.0).astype(np.float32)
    rgb += np.float32(0.5)
    image = np.clip(rgb, 0.0, 255.0, out=rgb).astype(np.uint8)  # round half up
    return (image, label, depth) if return_depth else (image, label)


def _render_all(params: Params, image_size: int, max_objects: int, chunk: int = RENDER_CHUNK,
                workers: int | None = None) -> Params:
    """Render every room with the sprites' chunked, threaded loop; objects start at label 4."""
    return render_all(params, image_size, max_objects, render_rooms, chunk=chunk, workers=workers,
                      first_label=FIRST_OBJECT_LABEL)


FACTOR_KEYS = ("shape", "size", "hue", "orientation", "x", "y", "depth")
SCENE_KEYS = ("floor_hue", "wall_hue", "horizon")


def generate_objects_room_like(num_images: int, image_size: int = 64, seed: int = 0, split: str = "train",
                               min_objects: int = 1, max_objects: int = 3, same_hue: bool = False,
                               workers: int | None = None) -> dict[str, np.ndarray]:
    """Arrays of an ``objects_room_like`` split (layout of :mod:`scenedecomp.data.cache`), in memory.

    ``same_hue`` (all objects of a scene share one hue) serves ``ood_identical_color``; ``workers`` render
    threads (default: the available CPUs, at most 8) do not change the output."""
    image_size, num_images, seed, min_objects, max_objects = check_options(
        NAME, split, image_size, num_images, seed, min_objects, max_objects, lowest=0)
    if max_objects > 255 - FIRST_OBJECT_LABEL:
        raise DatasetError(f"{NAME} {split}: max_objects must be <= {255 - FIRST_OBJECT_LABEL}, got {max_objects}")
    params = sample_params(NAME, seed, split, num_images,
                            lambda rng: _sample_block(rng, min_objects, max_objects, same_hue))
    arrays = _render_all(params, image_size, max_objects, workers=workers)
    for key in FACTOR_KEYS:
        arrays[FACTOR_PREFIX + key] = params[key]
    for key in SCENE_KEYS:
        arrays[key] = params[key]
    return arrays


@register_dataset(NAME, extra_splits=tuple(OOD_SPLITS))
def objects_room_like(split: str = "train", *, image_size: int = 64, num_images: int | None = None, seed: int = 0,
                      min_objects: int = 1, max_objects: int = 3, cache_dir: str | os.PathLike | None = None
                      ) -> SceneArrayDataset:
    """``objects_room_like``: procedural rooms with Objects Room's labels (module docstring); ``split`` may
    also name an out-of-distribution test split (:data:`OOD_SPLITS`)."""
    if num_images is None:
        num_images = OOD_NUM_IMAGES if split in OOD_SPLITS else DEFAULT_NUM_IMAGES.get(split)
        if num_images is None:
            raise DatasetError(f"{NAME}: no default size for split {split!r}; pass num_images")
    image_size, num_images, seed, min_objects, max_objects = check_options(
        NAME, split, image_size, num_images, seed, min_objects, max_objects, lowest=0)
    if split == "ood_more_objects":
        min_objects = max_objects = max_objects + 3
    elif split == "ood_identical_color":
        min_objects, max_objects = max_objects + 1, max_objects + 3
    options = {"image_size": image_size, "num_images": num_images, "seed": seed, "min_objects": min_objects,
               "max_objects": max_objects}
    if split == "ood_identical_color":  # enters the cache key only where it is used
        options["same_hue"] = True
    dataset = open_generated(
        NAME, split, VERSION, options, lambda: generate_objects_room_like(split=split, **options),
        cache_dir=cache_dir, describe=f"{num_images} images at {image_size}x{image_size}",
        max_objects=max_objects)
    dataset.background_labels = BACKGROUND_LABELS
    dataset.factor_first_label = FIRST_OBJECT_LABEL  # factor row j describes label 4 + j
    dataset.num_slots = FIRST_OBJECT_LABEL + max_objects
    return dataset


__all__ = ["BACKGROUND_LABELS", "DEFAULT_NUM_IMAGES", "FIRST_OBJECT_LABEL", "OOD_SPLITS",
           "generate_objects_room_like", "objects_room_like", "project", "render_rooms"]
