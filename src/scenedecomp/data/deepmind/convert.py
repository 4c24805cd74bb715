"""Convert a DeepMind multi-object TFRecord file into a chunked, streamable HDF5 file.

Output ``<out>/<dataset>.h5`` (format ``scenedecomp.multi_object`` version 1), ``N`` scenes::

    images          uint8   [N, H, W, C]      one chunk per scene (gzip by default)
    masks           uint8   [N, H, W]         label maps (see multi_object.label_map), one chunk per scene
    visibility      float32 [N, K]            entry k describes label k (slot 0 = background)
    num_objects     int16   [N]               visible foreground objects
    source_index    int64   [N]               record index in the source file
    frame_index     int16   [N]               frame within the record (CATER only)
    factors/<name>  [N, K, ...]               every per-object feature of the file, file dtype
    scene_factors/<name> [N, ...]             per-scene features (CATER camera_matrix)
    splits/{train,val,test} int64 [n_split]   scene indices of each split

Attributes: ``format``, ``format_version``, ``dataset``, ``complete`` (True only once everything is
written), ``num_images``, ``image_size`` ``[H, W]``, ``channels``, ``num_slots`` (K),
``background_labels``, ``max_objects`` (K minus the background slots), ``factor_names``,
``preprocessing`` (JSON: crop, resize, interpolation, filters, limit), ``split_fractions``,
``source_file``, ``source_size``, ``records_read``, ``created_by``.

The source's compression (GZIP, ZLIB or none) is detected from its first bytes, and every record's CRCs
are checked; a damaged record stops the conversion with one line naming the file and the record index.

Splits are contiguous, in file order, over the *source records* kept after filtering: by default the
first 90% train, the next 5% validation and the last 5% test (object-centric-library's 90k/5k/5k for
CLEVR); the Objects Room test files go entirely to ``test``. ``--splits a,b,c`` changes the fractions.

Interruption safety: scenes are appended to ``<out>/<dataset>.h5.partial`` and committed every few
megabytes (``num_written``/``records_read`` attributes, then a flush). Running the same conversion again
resumes from the last commit when the partial file opens and was made from the same source file with
the same options; otherwise it starts clean. Only a finished conversion is renamed to ``<dataset>.h5``
(atomically), and readers refuse files whose ``complete`` attribute is not set.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from ...safeio import publish_file
from ..registry import DatasetError
from .example_proto import ExampleError
from .multi_object import Scene, Schema, decode_record, get_schema
from .tfrecord import TFRecordReader

__all__ = ["FORMAT", "FORMAT_VERSION", "Preprocessing", "convert", "describe", "resize_bilinear",
           "resize_nearest", "split_indices"]

FORMAT = "scenedecomp.multi_object"
FORMAT_VERSION = 1
COMPRESSIONS = ("gzip", "lzf", "none")
_COMMIT_BYTES = 16 << 20
_LIBVER = ("v110", "v110")  # HDF5 >= 1.10 structures (extensible-array chunk index); readable by h5py >= 2.8


@dataclass(frozen=True)
class Preprocessing:
    """What is done to every scene before it is stored (recorded in the file's attributes)."""

    crop: tuple[int, int, int, int] | None = None  # top, left, height, width of the stored frame
    image_size: int | None = None  # square side after resizing (None: no resize)
    antialias: bool = False  # bilinear image resize with antialiasing (torch's antialias=True)
    max_objects: int | None = None  # keep scenes with at most this many foreground objects (CLEVR6: 6)

    def describe(self) -> dict:
        d = asdict(self)
        d["crop"] = list(self.crop) if self.crop else None
        d["crop_convention"] = "rows top:top+height, cols left:left+width of the stored image"
        d["image_interpolation"] = (f"bilinear (torch.nn.functional.interpolate, align_corners=False, "
                                    f"antialias={self.antialias}), rounded to uint8")
        d["mask_interpolation"] = "nearest-exact (pixel centres) on the label map"
        d["label_map"] = "index of the first mask > 127 at each pixel; 0 where no mask covers it"
        d["filter"] = (f"foreground objects (file visibility) <= {self.max_objects}"
                       if self.max_objects is not None else None)
        return d


def resize_bilinear(image: np.ndarray, size: int, antialias: bool = False) -> np.ndarray:
    """uint8 ``[H, W, C]`` -> uint8 ``[size, size, C]``, bilinear (half-pixel centres), rounded."""
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
    return out[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def resize_nearest(labels: np.ndarray, size: int) -> np.ndarray:
    """Label map ``[H, W]`` -> ``[size, size]``, nearest pixel centre (torch's ``nearest-exact``)."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(size) + 0.5) * (h / size)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * (w / size)).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def _apply(scene: Scene, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    image, labels = scene.image, scene.labels
    if prep.crop is not None:
        top, left, h, w = prep.crop
        image, labels = image[top:top + h, left:left + w], labels[top:top + h, left:left + w]
    if prep.image_size is not None and image.shape[:2] != (prep.image_size, prep.image_size):
        image = resize_bilinear(image, prep.image_size, prep.antialias)
        labels = resize_nearest(labels, prep.image_size)
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def split_indices(groups: np.ndarray, fractions: Sequence[float]) -> dict[str, np.ndarray]:
    """Contiguous train/val/test scene indices: the distinct ``groups`` (source records, in file order) are
    cut at ``round(f_train * G)`` and ``round((f_train + f_val) * G)``."""
    unique = np.unique(groups)
    g = len(unique)
    a = int(round(fractions[0] * g))
    b = int(round((fractions[0] + fractions[1]) * g))
    cut_a = unique[a] if a < g else np.iinfo(np.int64).max
    cut_b = unique[b] if b < g else np.iinfo(np.int64).max
    idx = np.arange(len(groups), dtype=np.int64)
    return {"train": idx[groups < cut_a], "val": idx[(groups >= cut_a) & (groups < cut_b)],
            "test": idx[groups >= cut_b]}


class _Writer:
    """Appends scenes to the partial HDF5 file and commits progress."""

    def __init__(self, f: h5py.File):
        self.f = f

    @classmethod
    def create(cls, path: Path, schema: Schema, prep: Preprocessing, compression: str,
               attrs: dict) -> _Writer:
        h, w, c = schema.image_shape
        if prep.crop is not None:
            h, w = prep.crop[2], prep.crop[3]
        if prep.image_size is not None:
            h = w = prep.image_size
        k = schema.num_slots
        comp = {"gzip": {"compression": "gzip", "compression_opts": 4}, "lzf": {"compression": "lzf"},
                "none": {}}[compression]
        f = h5py.File(path, "w", libver=_LIBVER)
        try:
            f.create_dataset("images", (0, h, w, c), np.uint8, maxshape=(None, h, w, c), chunks=(1, h, w, c),
                             **comp)
            f.create_dataset("masks", (0, h, w), np.uint8, maxshape=(None, h, w), chunks=(1, h, w), **comp)

            def small(name: str, shape: tuple[int, ...], dtype) -> None:
                row = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                rows = max(1, min(4096, (16 << 10) // max(row, 1)))
                f.create_dataset(name, (0, *shape), dtype, maxshape=(None, *shape), chunks=(rows, *shape))

            small("visibility", (k,), np.float32)
            small("num_objects", (), np.int16)
            small("source_index", (), np.int64)
            if schema.sequence_length:
                small("frame_index", (), np.int16)
            for spec in schema.factors:
                small(f"factors/{spec.name}", (k, *spec.shape),
                      np.uint8 if spec.kind == "bytes" else np.float32)
            if schema.sequence_length:
                small("scene_factors/camera_matrix", (4, 4), np.float32)
            f.attrs.update(attrs)
            f.attrs["num_written"] = 0
            f.attrs["records_read"] = 0
            f.attrs["complete"] = False
            f.flush()
        except BaseException:
            f.close()
            raise
        return cls(f)

    @property
    def num_written(self) -> int:
        return int(self.f.attrs["num_written"])

    def truncate(self) -> None:
        """Drop rows past the last commit (written before an interruption, never committed)."""
        n = self.num_written
        for ds in self._datasets():
            if ds.shape[0] != n:
                ds.resize(n, axis=0)

    def _datasets(self) -> list[h5py.Dataset]:
        out: list[h5py.Dataset] = []
        def collect(name: str) -> None:
            if isinstance(self.f[name], h5py.Dataset) and not name.startswith("splits"):
                out.append(self.f[name])

        self.f.visit(collect)
        return out

    def append(self, rows: list[dict], records_read: int) -> None:
        n, b = self.num_written, len(rows)
        if b:
            for name in rows[0]:
                ds = self.f[name]
                ds.resize(n + b, axis=0)
                ds[n:n + b] = np.stack([r[name] for r in rows])
        self.f.attrs["num_written"] = n + b
        self.f.attrs["records_read"] = records_read
        self.f.flush()

    def finish(self, fractions: Sequence[float]) -> dict[str, int]:
        groups = self.f["source_index"][:]
        splits = split_indices(groups, fractions)
        for name, idx in splits.items():
            self.f.create_dataset(f"splits/{name}", data=idx)
        self.f.attrs["num_images"] = self.num_written
        self.f.attrs["split_sizes"] = json.dumps({k: int(len(v)) for k, v in splits.items()})
        self.f.attrs["complete"] = True
        self.f.flush()
        return {k: len(v) for k, v in splits.items()}


def _resolve_prep(schema: Schema, crop, center_crop: int | None, image_size: int | None,
                  antialias: bool, max_objects: int | None) -> Preprocessing:
    h, w, _ = schema.image_shape
    if center_crop is not None:
        if crop not in (None, "default"):
            raise DatasetError("give either a crop box or center_crop, not both")
        if not 0 < center_crop <= min(h, w):
            raise DatasetError(f"center_crop {center_crop} does not fit the {h}x{w} images of {schema.name}")
        crop = ((h - center_crop) // 2, (w - center_crop) // 2, center_crop, center_crop)
    elif crop == "default":
        crop = schema.default_crop
    if crop is not None:
        crop = tuple(int(v) for v in crop)
        if len(crop) != 4:
            raise DatasetError(f"crop must be top,left,height,width; got {crop}")
        top, left, ch, cw = crop
        if top < 0 or left < 0 or ch <= 0 or cw <= 0 or top + ch > h or left + cw > w:
            raise DatasetError(f"crop {crop} (top,left,height,width) does not fit the {h}x{w} images of "
                               f"{schema.name}")
    if image_size is None:
        image_size = schema.default_image_size
    if image_size is not None and image_size < 1:
        raise DatasetError(f"image_size must be positive, got {image_size}")
    return Preprocessing(crop=crop, image_size=image_size, antialias=antialias, max_objects=max_objects)


def _open_partial(partial: Path, signature: str) -> _Writer | None:
    """The partial file as a writer if it can be resumed with ``signature``; None to start clean."""
    try:
        f = h5py.File(partial, "r+")
    except Exception:  # noqa: BLE001 - damaged by the interruption: start clean
        print(f"{partial}: cannot be reopened; starting the conversion again", file=sys.stderr)
        return None
    try:
        ok = (f.attrs.get("format") == FORMAT and f.attrs.get("signature") == signature
              and not bool(f.attrs.get("complete", False)))
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        f.close()
        print(f"{partial}: made with other options or another source; starting the conversion again",
              file=sys.stderr)
        return None
    writer = _Writer(f)
    writer.truncate()
    return writer


def convert(dataset: str, src: str | os.PathLike, out_dir: str | os.PathLike, *, limit: int | None = None,
            image_size: int | None = None, crop="default", center_crop: int | None = None,
            antialias: bool = False, max_objects: int | None = None, clevr6: bool = False,
            splits: Sequence[float] | None = None, compression: str = "gzip", restart: bool = False,
            overwrite: bool = False, progress: bool = True, verify: bool = True) -> Path:
    """Convert ``src`` (a TFRecord file of ``dataset``) to ``<out_dir>/<dataset>.h5``; returns its path.

    Args:
        dataset: schema name (``objects_room``, ``clevr_with_masks``, ... see ``multi_object.SCHEMAS``).
        limit: stop after this many scenes (after filtering).
        image_size: resize to ``image_size x image_size`` (default: the schema's, CLEVR 128; else none).
        crop: ``"default"`` (CLEVR: rows 29:221, cols 64:256), ``None`` or ``(top, left, height, width)``.
        center_crop: centred square crop of this side instead (Tetrominoes: 32 -> offset 1).
        antialias: antialiased bilinear resizing (off in the thesis / IODINE setup).
        max_objects / clevr6: keep scenes with at most ``max_objects`` (CLEVR6: 6) foreground objects.
        splits: train/val/test fractions (default 0.9/0.05/0.05; Objects Room test files 0/0/1).
        compression: HDF5 compression of images and label maps: ``gzip`` (level 4), ``lzf`` or ``none``.
        restart: ignore a partial file from an interrupted run; overwrite: replace a finished file.
        progress: tqdm progress bar on stderr. verify: check record CRCs.
    """
    schema = get_schema(dataset)
    src = Path(src).expanduser()
    out_dir = Path(out_dir).expanduser()
    if not src.is_file():
        raise DatasetError(f"{src}: no such file")
    if compression not in COMPRESSIONS:
        raise DatasetError(f"unknown compression {compression!r}; expected one of {', '.join(COMPRESSIONS)}")
    if clevr6:
        if schema.name != "clevr_with_masks":
            raise DatasetError(f"the CLEVR6 filter applies to clevr_with_masks, not {schema.name}")
        if max_objects not in (None, 6):
            raise DatasetError("clevr6 means max_objects=6; give one of them")
        max_objects = 6
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be positive, got {limit}")
    fractions = tuple(float(v) for v in (splits if splits is not None else schema.default_splits))
    if len(fractions) != 3 or not all(0 <= v <= 1 for v in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DatasetError(f"splits must be three non-negative fractions summing to 1, got {fractions}")
    prep = _resolve_prep(schema, crop, center_crop, image_size, antialias, max_objects)

    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"{out_dir}: --out exists and is not a directory")
    try:  # create it and prove it is writable before reading anything
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".scenedecomp-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise DatasetError(f"{out_dir}: cannot write the output directory ({err.strerror or err})") from None
    final = out_dir / f"{schema.name}.h5"
    partial = out_dir / f"{schema.name}.h5.partial"
    if final.exists() and not overwrite:
        raise DatasetError(f"{final}: already exists (a finished conversion); pass --overwrite to replace it")
    stat = src.stat()
    preprocessing = {**prep.describe(), "limit": limit}
    signature = json.dumps({"dataset": schema.name, "source": str(src.resolve()), "size": stat.st_size,
                            "mtime_ns": stat.st_mtime_ns, "preprocessing": preprocessing,
                            "splits": fractions, "compression": compression,
                            "format_version": FORMAT_VERSION},
                           sort_keys=True)
    writer = None
    if partial.exists() and not restart:
        writer = _open_partial(partial, signature)
    if writer is None:
        partial.unlink(missing_ok=True)
        from ...version import __version__ as version

        attrs = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "dataset": schema.name,
            "description": schema.description, "signature": signature,
            "channels": schema.image_shape[2], "num_slots": schema.num_slots,
            "background_labels": np.array(schema.background_labels, dtype=np.int64),
            "max_objects": schema.max_objects,
            "factor_names": json.dumps([f.name for f in schema.factors]),
            "categorical_factors": json.dumps([f.name for f in schema.factors if f.kind == "bytes"]),
            "preprocessing": json.dumps(preprocessing), "split_fractions": np.array(fractions),
            "source_file": src.name, "source_size": stat.st_size,
            "visibility_source": "file" if schema.has_visibility else "non-empty masks",
            "created_by": f"scenedecomp {version}", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        writer = _Writer.create(partial, schema, prep, compression, attrs)
    try:
        f = writer.f
        image_shape = f["images"].shape[1:]
        f.attrs["image_size"] = np.array(image_shape[:2], dtype=np.int64)
        row_bytes = int(np.prod(image_shape)) + image_shape[0] * image_shape[1]
        commit_rows = max(1, min(1024, _COMMIT_BYTES // row_bytes))
        records_read = int(f.attrs["records_read"])
        written = writer.num_written
        total = limit if limit is not None else (
            schema.num_records * (schema.sequence_length or 1) if schema.num_records and max_objects is None
            else None)
        from tqdm import tqdm

        bar = tqdm(total=total, initial=written, unit="scene", desc=f"convert {schema.name}",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        with TFRecordReader(src, compression="auto", verify=verify) as reader, bar:
            if records_read and reader.skip(records_read) != records_read:
                raise DatasetError(f"{src}: has fewer records than the partial conversion already read "
                                   f"({records_read}); rerun with --restart")
            rows: list[dict] = []
            done = limit is not None and written >= limit
            while not done:
                payload = reader.read_record()
                if payload is None:
                    break
                index = reader.index - 1
                try:
                    scenes = decode_record(schema, payload)
                except ExampleError as err:
                    raise DatasetError(
                        f"{src}: record {index}: {err} (is this a {schema.name} file?)") from None
                for frame, scene in enumerate(scenes):
                    if max_objects is not None and scene.num_objects > max_objects:
                        continue
                    image, labels = _apply(scene, prep)
                    row = {"images": image, "masks": labels, "visibility": scene.visibility,
                           "num_objects": np.int16(scene.num_objects), "source_index": np.int64(index)}
                    if schema.sequence_length:
                        row["frame_index"] = np.int16(frame)
                    row.update({f"factors/{k}": v for k, v in scene.factors.items()})
                    row.update({f"scene_factors/{k}": v for k, v in scene.scene_factors.items()})
                    rows.append(row)
                    bar.update(1)
                    if limit is not None and written + len(rows) >= limit:
                        done = True
                        break
                if done or len(rows) >= commit_rows:
                    writer.append(rows, reader.index)
                    written += len(rows)
                    rows = []
            writer.append(rows, reader.index)
        if writer.num_written == 0:
            raise DatasetError(f"{src}: no scenes to write (empty file, or the filter removed every scene)")
        writer.finish(fractions)
        writer.f.close()
    except BaseException as err:
        nothing_kept = False
        try:  # a source that is not the dataset: do not leave an empty .partial behind
            nothing_kept = isinstance(err, DatasetError) and writer.num_written == 0
        except Exception:  # noqa: BLE001
            pass
        try:
            writer.f.close()
        except Exception:  # noqa: BLE001
            pass
        if nothing_kept:
            partial.unlink(missing_ok=True)
        raise
    return publish_file(partial, final)


def describe(path: str | os.PathLike) -> str:
    """Human-readable summary of a converted file (or of every ``.h5``/``.partial`` file in a directory)."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted([*path.glob("*.h5"), *path.glob("*.hdf5"), *path.glob("*.h5.partial")])
        if not files:
            raise DatasetError(f"{path}: no .h5 files here")
        return "\n\n".join(describe(f) for f in files)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file or directory")
    try:
        f = h5py.File(path, "r")
    except Exception:  # noqa: BLE001
        raise DatasetError(f"{path}: not a readable HDF5 file") from None
    with f:
        try:
            return _describe_open(path, f)
        except DatasetError:
            raise
        except Exception as err:  # noqa: BLE001 - h5py/numpy/json on damaged metadata or data
            detail = (str(err).splitlines() or [type(err).__name__])[0][:160]
            raise DatasetError(f"{path}: damaged or incomplete file ({detail})") from None


def _describe_open(path: Path, f) -> str:
    """The summary lines of the open file ``f`` (any damage raises; :func:`describe` words it)."""
    a = f.attrs
    if a.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a scenedecomp multi-object file (format {a.get('format')!r})")
    complete = bool(a.get("complete", False))
    lines = [f"{path}", f"  dataset:        {a['dataset']} ({a.get('description', '')})"]
    if not complete:
        lines.append(f"  status:         INCOMPLETE ({int(a['num_written'])} scenes written, "
                     f"{int(a['records_read'])} records read); run the same convert command to resume")
    n = int(a["num_written"])
    img = f["images"].shape[1:]
    lines += [
        f"  scenes:         {n}",
        f"  images:         uint8 {img[0]}x{img[1]}x{img[2]}",
        f"  label maps:     uint8 {img[0]}x{img[1]}, K={int(a['num_slots'])} slots, background labels "
        f"{list(map(int, a['background_labels']))}, at most {int(a['max_objects'])} objects",
    ]
    if n:
        counts = np.bincount(f["num_objects"][:n].astype(np.int64))
        lines.append("  objects/scene:  " + ", ".join(f"{i}: {c}" for i, c in enumerate(counts) if c))
    if "factors" in f:
        lines.append("  factors:        " + ", ".join(
            f"{k} {f['factors'][k].dtype} {list(f['factors'][k].shape[1:])}" for k in f["factors"]))
    if "scene_factors" in f:
        lines.append("  scene factors:  " + ", ".join(
            f"{k} {list(f['scene_factors'][k].shape[1:])}" for k in f["scene_factors"]))
    if "splits" in f:
        sizes = ", ".join(f"{k} {len(f['splits'][k])}" for k in ("train", "val", "test"))
        lines.append(f"  splits:         {sizes}")
    prep = json.loads(a["preprocessing"])
    lines.append(f"  source:         {a['source_file']} ({int(a['source_size']):,} bytes), "
                 f"{int(a['records_read'])} records read")
    shown = ("crop", "image_size", "antialias", "filter", "limit")
    lines.append("  preprocessing:  " + "; ".join(f"{k}={v}" for k, v in prep.items() if k in shown))
    lines.append(f"  interpolation:  images {prep['image_interpolation']}; "
                 f"masks {prep['mask_interpolation']}")
    lines.append(f"  created:        {a.get('created', '?')} by {a.get('created_by', '?')}")
    return "\n".join(lines)
