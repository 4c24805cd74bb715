"""Schemas of DeepMind's multi-object datasets and record -> numpy decoding.

Each schema mirrors the feature description of the dataset's reader in DeepMind's
``multi_object_datasets`` repository. :func:`decode_record` turns one serialized ``tf.train.Example``
into a :class:`Scene` (or, for the CATER videos, one scene per frame):

- ``image``: uint8 ``[H, W, C]`` as stored;
- ``labels``: uint8 ``[H, W]`` label map. The ``K`` stored masks hold 0/255; they are binarised
  (``> 127``) and every pixel gets the index of the first mask that covers it (``argmax`` over the
  binarised ``[K, H, W]`` stack); a pixel that no mask covers gets 0. Label ``k`` therefore is the
  entity of mask slot ``k``; slot 0 (Objects Room: slots 0-3, sky/floor/walls) is background;
- ``visibility``: float32 ``[K]``: the file's ``visibility`` feature where it has one (CLEVR,
  Multi-dSprites, Tetrominoes), otherwise 1 for every slot whose mask is not empty (Objects Room, CATER);
- ``factors``: ``{name: [K, ...]}`` every per-object feature of the file, in the file's dtype (float32;
  CLEVR's categorical ``size/material/shape/color`` as uint8 codes starting at 1, 0 = padding).
  Entry ``k`` describes label ``k``;
- ``scene_factors``: per-scene features that are not per object (CATER's ``camera_matrix [4, 4]``);
- ``num_objects``: number of visible foreground slots (``visibility`` summed over non-background slots).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..registry import DatasetError
from .example_proto import ExampleError, as_uint8, parse_example

__all__ = ["SCHEMAS", "FactorSpec", "Scene", "Schema", "decode_record", "get_schema", "label_map"]


@dataclass(frozen=True)
class FactorSpec:
    """A per-object feature: ``kind`` ``float`` (FloatList) or ``bytes`` (one-byte codes); ``shape`` per
    object (``()`` for a scalar)."""

    name: str
    kind: str
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class Schema:
    """Layout of one TFRecord file of the DeepMind multi-object datasets."""

    name: str
    filename: str  # file name as published
    compression: str  # gzip | zlib
    image_shape: tuple[int, int, int]  # H, W, C
    num_slots: int  # K masks per scene (background slots included)
    mask_layout: str = "khw"  # "khw": mask stored [K,H,W,1]; "hwk": stored [H,W,K,1] (Multi-dSprites)
    background_labels: tuple[int, ...] = (0,)
    factors: tuple[FactorSpec, ...] = ()
    has_visibility: bool = False
    num_records: int | None = None  # records in the published file (progress bars)
    default_splits: tuple[float, float, float] = (0.9, 0.05, 0.05)
    default_crop: tuple[int, int, int, int] | None = None  # top, left, height, width
    default_image_size: int | None = None
    sequence_length: int | None = None  # CATER: frames per record
    description: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def max_objects(self) -> int:
        """Largest number of foreground objects in one scene (``K`` minus the background slots)."""
        return self.num_slots - len(self.background_labels)

    def feature_keys(self) -> list[str]:
        keys = ["image", "mask"] + [f.name for f in self.factors]
        if self.has_visibility:
            keys.append("visibility")
        if self.sequence_length:
            keys.append("camera_matrix")
        return keys


def _f(name: str, *shape: int, kind: str = "float") -> FactorSpec:
    return FactorSpec(name, kind, tuple(shape))


_OR_DOC = "Objects Room, 64x64 rooms, masks 0-3 = sky/floor/walls"
_DSPRITES = (_f("x"), _f("y"), _f("shape"), _f("orientation"), _f("scale"))

SCHEMAS: dict[str, Schema] = {s.name: s for s in [
    Schema("objects_room", "objects_room_train.tfrecords", "gzip", (64, 64, 3), 7,
           background_labels=(0, 1, 2, 3), num_records=1_000_000,
           description=_OR_DOC + "; train split, up to 3 objects, K=7",
           aliases=("objects_room_train",)),
    Schema("objects_room_six_objects", "objects_room_test_six_objects.tfrecords", "gzip", (64, 64, 3), 10,
           background_labels=(0, 1, 2, 3), default_splits=(0.0, 0.0, 1.0),
           description=_OR_DOC + "; test split with 6 objects, K=10"),
    Schema("objects_room_empty_room", "objects_room_test_empty_room.tfrecords", "gzip", (64, 64, 3), 4,
           background_labels=(0, 1, 2, 3), default_splits=(0.0, 0.0, 1.0),
           description=_OR_DOC + "; test split of empty rooms, K=4"),
    Schema("objects_room_identical_color", "objects_room_test_identical_color.tfrecords", "gzip",
           (64, 64, 3), 10, background_labels=(0, 1, 2, 3),
           default_splits=(0.0, 0.0, 1.0), description=_OR_DOC + "; test split, identical colours, K=10"),
    Schema("clevr_with_masks", "clevr_with_masks_train.tfrecords", "gzip", (240, 320, 3), 11,
           factors=(_f("x"), _f("y"), _f("z"), _f("pixel_coords", 3), _f("rotation"),
                    _f("size", kind="bytes"), _f("material", kind="bytes"), _f("shape", kind="bytes"),
                    _f("color", kind="bytes")),
           has_visibility=True, num_records=100_000, default_crop=(29, 64, 192, 192), default_image_size=128,
           description="CLEVR with masks: 240x320 renders, 3-10 objects, K=11", aliases=("clevr",)),
    Schema("multi_dsprites_binarized", "multi_dsprites_binarized.tfrecords", "gzip", (64, 64, 1), 4,
           mask_layout="hwk", factors=(*_DSPRITES, _f("color", 1)), has_visibility=True,
           num_records=1_000_000, description="Multi-dSprites, binarized: 2-3 white sprites on black, K=4"),
    Schema("multi_dsprites_colored_on_grayscale", "multi_dsprites_colored_on_grayscale.tfrecords", "gzip",
           (64, 64, 3), 6, mask_layout="hwk", factors=(*_DSPRITES, _f("color", 3)), has_visibility=True,
           num_records=1_000_000,
           description="Multi-dSprites, colored on grayscale: 2-5 sprites, K=6"),
    Schema("multi_dsprites_colored_on_colored", "multi_dsprites_colored_on_colored.tfrecords", "gzip",
           (64, 64, 3), 5, mask_layout="hwk", factors=(*_DSPRITES, _f("color", 3)), has_visibility=True,
           num_records=1_000_000, description="Multi-dSprites, colored on colored: 1-4 sprites, K=5"),
    Schema("tetrominoes", "tetrominoes_train.tfrecords", "gzip", (35, 35, 3), 4,
           factors=(_f("x"), _f("y"), _f("shape"), _f("color", 3)), has_visibility=True,
           num_records=1_000_000, description="Tetrominoes: 35x35, 3 tetris pieces, K=4"),
    Schema("cater_with_masks", "cater_with_masks_train.tfrecords", "zlib", (64, 64, 3), 11,
           factors=(_f("object_positions", 3),), sequence_length=33, num_records=None,
           description="CATER with masks: 33-frame videos, 64x64; every frame becomes one scene",
           aliases=("cater",)),
]}


def get_schema(name: str) -> Schema:
    """The schema called ``name`` (or one of its aliases); :class:`DatasetError` if unknown."""
    if name in SCHEMAS:
        return SCHEMAS[name]
    for schema in SCHEMAS.values():
        if name in schema.aliases:
            return schema
    raise DatasetError(f"unknown multi-object dataset {name!r}; known: {', '.join(SCHEMAS)}")


@dataclass
class Scene:
    """One decoded scene (shapes in the module docstring)."""

    image: np.ndarray
    labels: np.ndarray
    visibility: np.ndarray
    factors: dict[str, np.ndarray]
    num_objects: int
    scene_factors: dict[str, np.ndarray] = field(default_factory=dict)


def label_map(masks: np.ndarray) -> np.ndarray:
    """uint8 label map ``[H, W]`` from stored masks ``[K, H, W]`` (values 0/255).

    Pixel value = index of the first mask that is ``> 127`` there, or 0 where no mask is.
    """
    binary = masks > 127
    labels = np.argmax(binary, axis=0).astype(np.uint8)  # first True; 0 where none (argmax of all-False)
    return labels


def _reshape(values: np.ndarray, shape: tuple[int, ...], key: str, what: str) -> np.ndarray:
    expected = int(np.prod(shape))
    if values.size != expected:
        raise ExampleError(f"feature {key!r} has {values.size} values, expected {expected} ({what} "
                           f"{'x'.join(map(str, shape))})")
    return values.reshape(shape)


def _require(features: dict, key: str):
    if key not in features or features[key] is None:
        raise ExampleError(f"missing feature {key!r}")
    return features[key]


def decode_record(schema: Schema, payload: bytes) -> list[Scene]:
    """Decode one record into scenes (one, or ``sequence_length`` frames for CATER).

    Raises :class:`~scenedecomp.data.deepmind.example_proto.ExampleError` (one line) when the record does not match
    the schema; callers add the file name and record index.
    """
    features = parse_example(payload, keys=set(schema.feature_keys()))
    h, w, c = schema.image_shape
    k = schema.num_slots
    t = schema.sequence_length
    image = as_uint8(_require(features, "image"), "image")
    mask = as_uint8(_require(features, "mask"), "mask")
    if t:
        images = _reshape(image, (t, h, w, c), "image", "frames x H x W x C")
        masks = _reshape(mask, (t, k, h, w), "mask", "frames x K x H x W")
    else:
        images = _reshape(image, (h, w, c), "image", "H x W x C")[None]
        if schema.mask_layout == "hwk":
            masks = _reshape(mask, (h, w, k), "mask", "H x W x K").transpose(2, 0, 1)[None]
        else:
            masks = _reshape(mask, (k, h, w), "mask", "K x H x W")[None]
    factors: dict[str, np.ndarray] = {}
    for spec in schema.factors:
        raw = _require(features, spec.name)
        if spec.kind == "bytes":
            values = as_uint8(raw, spec.name)
        elif isinstance(raw, np.ndarray) and raw.dtype == np.float32:
            values = raw
        else:
            raise ExampleError(f"feature {spec.name!r} is not a FloatList")
        if t:  # CATER stores [K, T, ...]; scenes are frames
            factors[spec.name] = np.moveaxis(_reshape(values, (k, t, *spec.shape), spec.name, "K x T"), 1, 0)
        else:
            factors[spec.name] = _reshape(values, (k, *spec.shape), spec.name, "K")[None]
    scene_factors: dict[str, np.ndarray] = {}
    if t:
        camera = _require(features, "camera_matrix")
        scene_factors["camera_matrix"] = _reshape(camera, (t, 4, 4), "camera_matrix", "T x 4 x 4")
    if schema.has_visibility:
        visibility = _reshape(_require(features, "visibility"), (k,), "visibility", "K")[None]
        visibility = visibility.astype(np.float32)
    else:
        visibility = (masks.reshape(masks.shape[0], k, -1) > 127).any(axis=2).astype(np.float32)
    foreground = np.ones(k, dtype=bool)
    foreground[list(schema.background_labels)] = False
    scenes = []
    for i in range(images.shape[0]):
        scenes.append(Scene(
            image=np.ascontiguousarray(images[i]),
            labels=label_map(masks[i]),
            visibility=visibility[i],
            factors={name: np.ascontiguousarray(v[i]) for name, v in factors.items()},
            num_objects=int(round(float(visibility[i][foreground].sum()))),
            scene_factors={name: np.ascontiguousarray(v[i]) for name, v in scene_factors.items()},
        ))
    return scenes
