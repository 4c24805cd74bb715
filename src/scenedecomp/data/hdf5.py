"""The ``hdf5`` dataset: scenes streamed from a file written by ``scenedecomp data convert``.

``open_dataset("data/clevr_with_masks.h5", split="train")`` returns an :class:`HDF5Dataset`. Nothing but
the split's index array is held in memory; each ``__getitem__`` reads one scene from disk. The h5py file
handle is opened lazily in the process that reads (each DataLoader worker opens its own; a handle is
never shared across ``fork``), so memory stays bounded for files of any size: HDF5's metadata cache is
capped at 4 MB per process, and files are written with HDF5 1.10 structures (a compact chunk index).

Items follow the batch contract (:mod:`scenedecomp.data.contract`)::

    image        float32 [C, H, W] in [0, 1]
    mask         int64   [H, W]  label map; labels in ``background_labels`` are background
    num_objects  int64   []      visible foreground objects
    visibility   float32 [K]     entry k describes label k (index 0 = background slot)
    factors      {name: [K, ...]} float32, or int64 for categorical codes (CLEVR size/material/shape/color)
    scene_factors {name: [...]}  only in files that have them (CATER camera_matrix)

Attributes: ``background_labels`` (Objects Room: (0, 1, 2, 3); others (0,)), ``max_objects`` (K minus
the background slots), ``num_slots`` (K), ``image_size``, ``channels``, ``factor_names``,
``preprocessing`` (dict, as recorded at conversion).

``image_size`` must match the file (a different size raises :class:`DatasetError` naming both sizes:
convert again with ``--image-size`` or change ``data.image_size``); resizing label maps on the fly would
silently change the stored preprocessing. ``num_images`` keeps the first ``num_images`` scenes of the
split (fewer available: all of them, with a warning).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from .deepmind.convert import FORMAT
from .registry import SPLITS, DatasetError, register_dataset

__all__ = ["HDF5Dataset", "open_hdf5"]

_IGNORED_OPTIONS = {"seed", "cache_dir", "download", "num_workers"}


def _cap_metadata_cache(f: h5py.File, max_bytes: int = 4 << 20) -> None:
    """Keep HDF5's metadata cache (chunk-index nodes) at most ``max_bytes`` (its default grows to 32 MB)."""
    try:
        config = f.id.get_mdc_config()
        config.set_initial_size = True
        config.initial_size = min(config.initial_size, max_bytes)
        config.min_size = min(config.min_size, max_bytes)
        config.max_size = max_bytes
        f.id.set_mdc_config(config)
    except Exception:  # noqa: BLE001 - an h5py without this API: keep HDF5's defaults
        pass


class HDF5Dataset(Dataset):
    """One split of a converted multi-object file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, split: str = "train", image_size: int | None = None,
                 num_images: int | None = None, factors: bool = True):
        self.path = Path(path).expanduser()
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if not self.path.is_file():
            hint = " (an unfinished conversion: run the convert command again)" if Path(
                f"{self.path}.partial").exists() else ""
            raise DatasetError(f"{self.path}: no such file{hint}")
        try:
            f = h5py.File(self.path, "r")
        except Exception:  # noqa: BLE001 - h5py raises OSError with multi-line messages
            raise DatasetError(f"{self.path}: not a readable HDF5 file") from None
        with f:
            a = f.attrs
            if a.get("format") != FORMAT:
                raise DatasetError(f"{self.path}: not a file written by `scenedecomp data convert` "
                                   f"(format attribute {a.get('format')!r})")
            if not bool(a.get("complete", False)):
                raise DatasetError(f"{self.path}: incomplete conversion (complete=False); run the convert "
                                   f"command again to finish it")
            try:
                self._read_layout(f, a, split, factors)
            except (KeyError, ValueError, TypeError, OSError, IndexError) as err:
                what = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise DatasetError(f"{self.path}: damaged or incomplete file (missing or malformed field: "
                                   f"{what[:160]})") from None
        self._init_rest(split, image_size, num_images)

    def _read_layout(self, f: h5py.File, a, split: str, factors: bool) -> None:
        """Read shapes, attributes and the split's indices; KeyError/ValueError for a damaged file."""
        self.dataset_name = str(a["dataset"])
        self.split = split
        shape = f["images"].shape
        self.image_size = int(shape[1])
        self.image_shape = (int(shape[3]), int(shape[1]), int(shape[2]))  # C, H, W
        self.channels = int(shape[3])
        self.num_slots = int(a["num_slots"])
        self.background_labels = tuple(int(v) for v in a["background_labels"])
        self.factor_first_label = 0  # factor and visibility rows are indexed by label (row 0: background)
        self.max_objects = int(a["max_objects"])
        self.preprocessing = json.loads(a["preprocessing"])
        self.factor_names = list(f["factors"]) if (factors and "factors" in f) else []
        self.categorical = set(json.loads(a.get("categorical_factors", "[]")))
        self.scene_factor_names = list(f["scene_factors"]) if (factors and "scene_factors" in f) else []
        indices = np.asarray(f["splits"][split][:], dtype=np.int64)
        for name in ("masks", "num_objects", "visibility"):
            if f[name].shape[0] != shape[0]:
                raise ValueError(f"{name} holds {f[name].shape[0]} scenes, images {shape[0]}")
        if len(indices) and (indices.min() < 0 or indices.max() >= shape[0]):
            raise ValueError(f"split {split!r} has scene indices outside 0..{shape[0] - 1}")
        self._shape, self._indices = shape, indices

    def _init_rest(self, split: str, image_size, num_images) -> None:
        shape, indices = self._shape, self._indices
        if image_size is not None and (int(image_size) != shape[1] or int(image_size) != shape[2]):
            raise DatasetError(f"{self.path}: file holds {shape[1]}x{shape[2]} images but image_size="
                               f"{image_size} was requested; set data.image_size: {shape[1]} or convert "
                               f"again with --image-size {image_size}")
        if len(indices) == 0:
            raise DatasetError(f"{self.path}: split {split!r} is empty (split sizes are set at conversion)")
        if num_images is not None:
            if num_images < 1:
                raise DatasetError(f"num_images must be positive, got {num_images}")
            if num_images > len(indices):
                warnings.warn(f"{self.path}: split {split!r} has {len(indices)} scenes, fewer than "
                              f"num_images={num_images}; using all of them", stacklevel=2)
            indices = indices[:num_images]
        self.indices = indices
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._datasets: dict[str, h5py.Dataset] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def _handle(self) -> dict[str, h5py.Dataset]:
        """This process's datasets by name (opened on first use in each process)."""
        if self._file is None or self._pid != os.getpid():
            # a handle inherited through fork is dropped, not used: each process opens its own
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
            f = self._file
            _cap_metadata_cache(f)
            names = ["images", "masks", "num_objects", "visibility"]
            names += [f"factors/{n}" for n in self.factor_names]
            names += [f"scene_factors/{n}" for n in self.scene_factor_names]
            self._datasets = {name: f[name] for name in names}
        return self._datasets

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        state["_datasets"] = {}
        return state

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._datasets = {}

    def __getitem__(self, i: int) -> dict:
        if not -len(self.indices) <= i < len(self.indices):
            raise IndexError(f"index {i} out of range for {len(self.indices)} scenes")
        j = int(self.indices[i])
        d = self._handle()
        image = torch.from_numpy(d["images"][j]).permute(2, 0, 1).float().div_(255.0).contiguous()
        item = {
            "image": image,
            "mask": torch.from_numpy(d["masks"][j].astype(np.int64)),
            "num_objects": torch.tensor(int(d["num_objects"][j]), dtype=torch.int64),
            "visibility": torch.from_numpy(np.asarray(d["visibility"][j], dtype=np.float32)),
        }
        if self.factor_names:
            factors = {}
            for name in self.factor_names:
                dtype = np.int64 if name in self.categorical else np.float32
                factors[name] = torch.from_numpy(np.asarray(d[f"factors/{name}"][j], dtype=dtype))
            item["factors"] = factors
        if self.scene_factor_names:
            item["scene_factors"] = {name: torch.from_numpy(np.asarray(d[f"scene_factors/{name}"][j]))
                                     for name in self.scene_factor_names}
        return item

    def __repr__(self) -> str:
        return (f"HDF5Dataset({str(self.path)!r}, split={self.split!r}, n={len(self)}, "
                f"image={self.image_shape}, K={self.num_slots})")


@register_dataset("hdf5")
def open_hdf5(path: str | os.PathLike, split: str = "train", image_size: int | None = None,
              num_images: int | None = None, factors: bool = True, **options) -> HDF5Dataset:
    """Factory registered as ``hdf5``: :class:`HDF5Dataset` for ``path`` (options in the module docstring).

    ``seed``/``cache_dir`` are accepted and ignored (the file fixes the data); other unknown options raise
    :class:`DatasetError` naming them.
    """
    unknown = sorted(set(options) - _IGNORED_OPTIONS)
    if unknown:
        raise DatasetError(f"{path}: unknown hdf5 dataset option(s) {', '.join(unknown)}; known: image_size, "
                           f"num_images, factors")
    return HDF5Dataset(path, split=split, image_size=image_size, num_images=num_images, factors=factors)
