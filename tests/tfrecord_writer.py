"""Test helper: write TFRecord files of ``tf.train.Example`` protos by hand (no TensorFlow, no protobuf).

The layouts below restate the feature descriptions of DeepMind's multi_object_datasets readers on their
own (they do not import the library's schemas), so the tests check the library against an independent
description.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

_POLY = 0x82F63B78
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


def slow_crc32c(data: bytes) -> int:
    reg = 0xFFFFFFFF
    for b in data:
        reg = _TABLE[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# --- protobuf wire format ------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def ld(field: int, payload: bytes) -> bytes:
    """Length-delimited field."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def bytes_feature(values: Iterable[bytes]) -> bytes:
    return ld(1, b"".join(ld(1, v) for v in values))


def one_byte_strings(arr: np.ndarray) -> bytes:
    """BytesList feature holding one one-byte string per element (the DeepMind layout)."""
    flat = np.ascontiguousarray(arr, dtype=np.uint8).reshape(-1)
    triples = np.empty((flat.size, 3), dtype=np.uint8)
    triples[:, 0], triples[:, 1], triples[:, 2] = 0x0A, 0x01, flat
    return ld(1, triples.tobytes())


def float_feature(values, packed: bool = True) -> bytes:
    arr = np.asarray(values, dtype="<f4").reshape(-1)
    if packed:
        return ld(2, ld(1, arr.tobytes()))
    return ld(2, b"".join(varint(1 << 3 | 5) + struct.pack("<f", v) for v in arr))


def int64_feature(values, packed: bool = True) -> bytes:
    vals = [int(v) for v in np.asarray(values).reshape(-1)]
    if packed:
        return ld(3, ld(1, b"".join(varint(v) for v in vals)))
    return ld(3, b"".join(varint(1 << 3 | 0) + varint(v) for v in vals))


def example(features: dict[str, bytes]) -> bytes:
    """Serialize ``{key: encoded Feature}`` as a ``tf.train.Example``."""
    entries = b"".join(ld(1, ld(1, key.encode()) + ld(2, feat)) for key, feat in features.items())
    return ld(1, entries)


# --- TFRecord framing -----------------------------------------------------------------------------------


def frame(record: bytes, crc: Callable[[bytes], int] = slow_crc32c) -> bytes:
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", masked(crc(length))) + record + struct.pack("<I", masked(crc(record)))


def write_tfrecord(path: Path, records: Iterable[bytes], compression: str = "gzip",
                   crc: Callable[[bytes], int] | None = None) -> Path:
    """Write framed ``records`` to ``path`` compressed as one ``gzip``/``zlib`` stream (or ``none``)."""
    if crc is None:
        from scenedecomp.data.deepmind.tfrecord_backends import crc32c as crc
    raw = b"".join(frame(r, crc) for r in records)
    if compression == "gzip":
        data = gzip.compress(raw, compresslevel=6)
    elif compression == "zlib":
        data = zlib.compress(raw, 6)
    else:
        data = raw
    Path(path).write_bytes(data)
    return Path(path)


# --- the DeepMind layouts -------------------------------------------------------------------------------

LAYOUTS = {
    # name: (image HWC, K, mask layout, floats {name: per-object shape}, byte codes, visibility, compression)
    "objects_room": ((64, 64, 3), 7, "khw", {}, (), False, "gzip"),
    "objects_room_six_objects": ((64, 64, 3), 10, "khw", {}, (), False, "gzip"),
    "objects_room_empty_room": ((64, 64, 3), 4, "khw", {}, (), False, "gzip"),
    "objects_room_identical_color": ((64, 64, 3), 10, "khw", {}, (), False, "gzip"),
    "clevr_with_masks": ((240, 320, 3), 11, "khw",
                         {"x": (), "y": (), "z": (), "pixel_coords": (3,), "rotation": ()},
                         ("size", "material", "shape", "color"), True, "gzip"),
    "multi_dsprites_binarized": ((64, 64, 1), 4, "hwk",
                                 {"x": (), "y": (), "shape": (), "color": (1,), "orientation": (),
                                  "scale": ()}, (), True, "gzip"),
    "multi_dsprites_colored_on_grayscale": ((64, 64, 3), 6, "hwk",
                                            {"x": (), "y": (), "shape": (), "color": (3,), "orientation": (),
                                             "scale": ()}, (), True, "gzip"),
    "multi_dsprites_colored_on_colored": ((64, 64, 3), 5, "hwk",
                                          {"x": (), "y": (), "shape": (), "color": (3,), "orientation": (),
                                           "scale": ()}, (), True, "gzip"),
    "tetrominoes": ((35, 35, 3), 4, "khw", {"x": (), "y": (), "shape": (), "color": (3,)}, (), True, "gzip"),
}
BACKGROUND = {name: ((0, 1, 2, 3) if name.startswith("objects_room") else (0,)) for name in LAYOUTS}
BACKGROUND["cater_with_masks"] = (0,)


def make_scene(name: str, rng: np.random.Generator, max_objects: int | None = None) -> dict:
    """A random scene in the stored layout, plus the expected decoded values.

    Returns ``{"features": {key: encoded Feature}, "image": [H,W,C], "labels": [H,W], "visibility": [K],
    "factors": {name: [K, ...]}, "num_objects": int}``. A few pixels are covered by no mask (label 0).
    """
    (h, w, c), k, layout, floats, codes, has_vis, _ = LAYOUTS[name]
    bg = BACKGROUND[name]
    n_fg = k - len(bg)
    count = int(rng.integers(1 if n_fg else 0, (max_objects or n_fg) + 1)) if n_fg else 0
    present = np.zeros(k, dtype=bool)
    present[list(bg)] = True
    present[rng.choice(np.arange(len(bg), k), size=count, replace=False)] = True
    # blocky label map over the present slots (coarse grid upsampled), a few uncovered pixels
    slots = np.flatnonzero(present)
    coarse = rng.choice(slots, size=(h // 4 + 1, w // 4 + 1))
    labels = np.repeat(np.repeat(coarse, 4, 0), 4, 1)[:h, :w].astype(np.int64)
    present[:] = False
    present[np.unique(labels)] = True
    uncovered = rng.random((h, w)) < 0.01
    masks = np.zeros((k, h, w), dtype=np.uint8)
    for s in range(k):
        masks[s] = np.where((labels == s) & ~uncovered, 255, 0)
    labels[uncovered] = 0
    image = rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)
    stored_mask = masks[..., None] if layout == "khw" else masks.transpose(1, 2, 0)[..., None]
    feats = {"image": one_byte_strings(image), "mask": one_byte_strings(stored_mask)}
    factors = {}
    for fname, shape in floats.items():
        scale = present.reshape(k, *([1] * len(shape)))
        values = (rng.standard_normal((k, *shape)) * scale).astype(np.float32)
        factors[fname] = values
        feats[fname] = float_feature(values)
    for fname in codes:
        values = (rng.integers(1, 4, size=k) * present).astype(np.uint8)
        factors[fname] = values
        feats[fname] = one_byte_strings(values)
    visibility = present.astype(np.float32)
    if has_vis:
        feats["visibility"] = float_feature(visibility)
    fg = np.ones(k, dtype=bool)
    fg[list(bg)] = False
    return {"features": feats, "image": image, "labels": labels.astype(np.uint8), "visibility": visibility,
            "factors": factors, "num_objects": int(present[fg].sum())}


def make_cater_record(rng: np.random.Generator, frames: int = 33, k: int = 11) -> dict:
    """A CATER-layout record (image and mask as single raw strings; ZLIB files)."""
    video = rng.integers(0, 256, size=(frames, 64, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, size=(frames, 64, 64))
    masks = np.stack([np.where(labels == s, 255, 0) for s in range(k)], axis=1).astype(np.uint8)
    positions = rng.standard_normal((k, frames, 3)).astype(np.float32)
    camera = rng.standard_normal((frames, 4, 4)).astype(np.float32)
    feats = {"camera_matrix": float_feature(camera), "image": bytes_feature([video.tobytes()]),
             "mask": bytes_feature([masks.tobytes()]), "object_positions": float_feature(positions)}
    return {"features": feats, "image": video, "labels": labels.astype(np.uint8), "positions": positions,
            "camera": camera}
