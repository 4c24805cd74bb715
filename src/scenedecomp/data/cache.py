"""On-disk cache for generated datasets, and the dataset class that serves cached arrays.

A generated dataset (``shapes``, ``multi_sprites``, later multi-MNIST, ...) is a dict of numpy arrays
per split:

- ``image``: uint8 ``[N, H, W, C]``;
- ``mask``: uint8 label map ``[N, H, W]`` (optional; 0 = background, object ``k`` has label ``k``);
- ``num_objects``: int64 ``[N]`` (optional);
- ``visibility``: float32 ``[N, O_max]`` (optional);
- ``factors.<name>``: per-object factors ``[N, O_max, ...]`` (float32 or int64, optional);
- any other key (e.g. ``background_color``) is stored and exposed in ``dataset.arrays`` but not
  put in the items.

The arrays are generated on first use and saved as one uncompressed ``.npz`` file under the cache
directory (``cache_dir`` option, else ``$SCENEDECOMP_CACHE``, else ``~/.cache/scenedecomp``). The
file name encodes the dataset name, split, generator version and every option (readably, plus a hash
of the exact option values), so a change of any of them generates a new file. The file is written to
a hidden temporary name in the same directory and renamed into place
(:func:`scenedecomp.safeio.atomic_write_bytes`), so a file under the final name is always complete; an
interrupted generation leaves at most a ``.*.tmp`` file, which is never read (delete such leftovers at
will). Because the ``.npz`` members are stored uncompressed, later opens memory-map the file (one ``mmap``
for all arrays): opening is instant and
pages are read on demand.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import struct
import sys
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..safeio import atomic_write_bytes
from .registry import DatasetError

CACHE_ENV = "SCENEDECOMP_CACHE"
FACTOR_PREFIX = "factors."
_META_KEY = "__meta__"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header (30 bytes)


def default_cache_dir() -> Path:
    """``$SCENEDECOMP_CACHE`` if set, else ``~/.cache/scenedecomp``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scenedecomp"


def cache_key(name: str, split: str, version: int, options: Mapping[str, Any]) -> str:
    """File stem naming one generated split: readable options plus a hash of the exact values."""
    payload = json.dumps({"name": name, "split": split, "version": version, "options": dict(options)},
                         sort_keys=True, default=str)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:12]
    readable = "_".join(f"{key}{value}" for key, value in sorted(options.items())
                        if isinstance(value, (bool, int, float, str)))
    readable = re.sub(r"[^A-Za-z0-9_.+-]+", "-", readable)[:120]
    return "_".join(part for part in (name, split, f"v{version}", readable, digest) if part)


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``arrays`` atomically as an uncompressed ``.npz`` at ``path``."""
    members = {key: np.ascontiguousarray(value) for key, value in arrays.items()}
    if _META_KEY in members:
        raise ValueError(f"array name {_META_KEY!r} is reserved")
    members[_META_KEY] = np.frombuffer(json.dumps(dict(meta or {}), default=str).encode(), dtype=np.uint8)
    return atomic_write_bytes(path, writer=lambda handle: np.savez(handle, **members))


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Memory-map the arrays of an uncompressed ``.npz`` written by :func:`save_arrays`.

    Returns ``(arrays, meta)``; the arrays are read-only views of one shared ``mmap``. Compressed
    members (not written by this module) are read into memory instead.
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        size = os.fstat(handle.fileno()).st_size
        buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        for info in archive.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type != zipfile.ZIP_STORED:
                with archive.open(info) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            handle.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
            if fields[0] != b"PK\x03\x04":
                raise zipfile.BadZipFile(f"{path}: bad local header for member {info.filename}")
            handle.seek(info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1])
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            if dtype.hasobject:
                raise ValueError(f"{path}: member {info.filename} holds Python objects")
            offset = handle.tell()
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if offset + nbytes > size:
                raise zipfile.BadZipFile(f"{path}: member {info.filename} is truncated")
            arrays[key] = np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offset,
                                     order="F" if fortran else "C")
    meta_bytes = arrays.pop(_META_KEY, None)
    meta = json.loads(bytes(meta_bytes).decode()) if meta_bytes is not None else {}
    return arrays, meta


def load_or_generate(name: str, split: str, version: int, options: Mapping[str, Any],
                     generate: Callable[[], Mapping[str, np.ndarray]],
                     cache_dir: str | os.PathLike | None = None, describe: str = ""
                     ) -> tuple[dict[str, np.ndarray], Path]:
    """Load a generated split from the cache, generating and saving it first if it is not there.

    ``options`` must hold every option that changes the arrays (JSON-serialisable values). Prints one
    line to stderr when generating. Returns ``(arrays, path)`` with memory-mapped arrays.
    """
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    blocker = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        where = "data.options.cache_dir" if cache_dir is not None else f"${CACHE_ENV}"
        raise DatasetError(f"{directory}: the data cache folder ({where}) is not a directory ({blocker} is a file)")
    path = directory / f"{cache_key(name, split, version, options)}.npz"
    if path.is_file():
        try:
            return load_arrays(path)[0], path
        except (OSError, ValueError, zipfile.BadZipFile) as err:  # damaged by something outside us
            print(f"cache file {path} is unreadable ({err}); regenerating", file=sys.stderr)
    what = f": {describe}" if describe else ""
    print(f"generating {name} {split}{what} → {path}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    arrays = generate()
    meta = {"name": name, "split": split, "version": version, "options": dict(options),
            "generation_seconds": round(time.perf_counter() - start, 3)}
    save_arrays(path, arrays, meta)
    del arrays
    return load_arrays(path)[0], path


def _copy(array: np.ndarray, dtype: Any = None) -> torch.Tensor:
    """A writable, contiguous tensor copy of a (possibly read-only, memory-mapped) array."""
    return torch.from_numpy(np.array(array, dtype=dtype, order="C", copy=True))


class SceneArrayDataset(Dataset):
    """Batch-contract dataset over arrays laid out as described in this module's docstring.

    Items: ``image`` float32 ``[C,H,W]`` in [0,1]; and, when the arrays hold them, ``mask`` int64
    ``[H,W]``, ``num_objects`` int64 scalar, ``visibility`` float32 ``[O_max]``, ``factors`` dict of
    ``[O_max, ...]`` tensors. ``get_batch(indices)`` returns an already collated batch;
    ``__getitems__`` (used by ``DataLoader``'s default fetcher) builds the items of a batch from one
    vectorised read. Pickling (``DataLoader`` workers under ``spawn``) sends only the file path when the
    arrays come from a cache file.
    """

    background_labels: tuple[int, ...] = (0,)

    def __init__(self, arrays: Mapping[str, np.ndarray], *, name: str, split: str,
                 max_objects: int | None = None, path: str | os.PathLike | None = None,
                 options: Mapping[str, Any] | None = None):
        self.name = name
        self.split = split
        self.path = Path(path) if path is not None else None
        self.options = dict(options or {})
        self._set_arrays(arrays)
        if max_objects is None:
            max_objects = self._visibility.shape[1] if self._visibility is not None else 0
        self.max_objects = int(max_objects)

    def _set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.arrays = dict(arrays)
        if "image" not in self.arrays or self.arrays["image"].ndim != 4:
            raise ValueError(f"{self.name} {self.split}: arrays need 'image' [N,H,W,C]")
        self._image = self.arrays["image"]
        self._mask = self.arrays.get("mask")
        self._num_objects = self.arrays.get("num_objects")
        self._visibility = self.arrays.get("visibility")
        self._factors = {key[len(FACTOR_PREFIX):]: value for key, value in self.arrays.items()
                         if key.startswith(FACTOR_PREFIX)}
        self._divisor = 255.0 if self._image.dtype == np.uint8 else 1.0  # uint8 -> [0, 1]

    def _to_float(self, image: np.ndarray) -> torch.Tensor:
        # numpy, not torch: a single-threaded loop avoids OpenMP start-up and contention on busy CPUs
        out = np.empty(image.shape, dtype=np.float32)
        np.divide(image, np.float32(self._divisor), out=out, dtype=np.float32)
        return torch.from_numpy(out)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self._image.shape[1]), int(self._image.shape[2])

    def __len__(self) -> int:
        return len(self._image)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.name} {self.split}: index {i} out of range for {len(self)} images")
        item: dict[str, Any] = {"image": self._to_float(self._image[i].transpose(2, 0, 1))}
        if self._mask is not None:
            item["mask"] = _copy(self._mask[i], np.int64)
        if self._num_objects is not None:
            item["num_objects"] = torch.tensor(int(self._num_objects[i]), dtype=torch.int64)
        if self._visibility is not None:
            item["visibility"] = _copy(self._visibility[i], np.float32)
        if self._factors:
            item["factors"] = {key: _copy(value[i]) for key, value in self._factors.items()}
        return item

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """The collated batch for ``indices`` (same layout as ``default_collate`` of the items)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"{self.name} {self.split}: index out of range for {len(self)} images")
        batch: dict[str, Any] = {"image": self._to_float(self._image[idx].transpose(0, 3, 1, 2))}
        if self._mask is not None:
            batch["mask"] = torch.from_numpy(self._mask[idx].astype(np.int64))
        if self._num_objects is not None:
            batch["num_objects"] = torch.from_numpy(self._num_objects[idx].astype(np.int64))
        if self._visibility is not None:
            batch["visibility"] = torch.from_numpy(self._visibility[idx].astype(np.float32))
        if self._factors:
            batch["factors"] = {key: torch.from_numpy(value[idx]) for key, value in self._factors.items()}
        return batch

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        batch = self.get_batch(indices)
        n = len(batch["image"])
        columns = {key: value.unbind(0) for key, value in batch.items() if key != "factors"}
        factors = {key: value.unbind(0) for key, value in batch.get("factors", {}).items()}
        items = [{key: column[j] for key, column in columns.items()} for j in range(n)]
        if "factors" in batch:
            for j, item in enumerate(items):
                item["factors"] = {key: column[j] for key, column in factors.items()}
        return items

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.path is not None:  # re-open the cache file instead of pickling the data
            for key in ("arrays", "_image", "_mask", "_num_objects", "_visibility", "_factors"):
                state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "arrays" not in state:
            self._set_arrays(load_arrays(self.path)[0])

    def __repr__(self) -> str:
        h, w = self.image_size
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"size={h}x{w}{where})")


def open_generated(name: str, split: str, version: int, options: Mapping[str, Any],
                   generate: Callable[[], Mapping[str, np.ndarray]], *,
                   cache_dir: str | os.PathLike | None = None, describe: str = "",
                   max_objects: int | None = None) -> SceneArrayDataset:
    """:func:`load_or_generate` then wrap the arrays in a :class:`SceneArrayDataset`."""
    arrays, path = load_or_generate(name, split, version, options, generate, cache_dir, describe)
    return SceneArrayDataset(arrays, name=name, split=split, max_objects=max_objects, path=path,
                             options=options)


__all__ = ["CACHE_ENV", "FACTOR_PREFIX", "SceneArrayDataset", "cache_key", "default_cache_dir", "load_arrays",
           "load_or_generate", "open_generated", "save_arrays"]
