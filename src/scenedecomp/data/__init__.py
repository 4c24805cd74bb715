"""Datasets: generators, readers and the one entry point :func:`open_dataset`.

Dataset modules register their factories in :mod:`scenedecomp.data.registry` (they never import this
package); :func:`open_dataset` imports the built-in ones on first use.

Every dataset returned here is a ``torch.utils.data.Dataset`` whose items follow the batch contract below.
It also carries ``background_labels`` (tuple of label values that count as background for foreground
metrics) and ``max_objects``.

The batch contract, which every dataset yields and every model consumes: a dataset item (one scene) is a
``dict`` with

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

import os
from pathlib import Path

from torch.utils.data import Dataset

from .registry import EXTRA_SPLITS, FACTORIES, SPLITS, DatasetError, register_dataset


def available_datasets() -> list[str]:
    _load_builtin()
    return sorted(FACTORIES)


def _load_builtin() -> None:
    # Importing the modules registers their datasets.
    from . import hdf5, image_folder  # noqa: F401
    from .synthetic import multi_mnist, rooms, sprites  # noqa: F401


def open_dataset(name_or_path: str | os.PathLike, split: str = "train", **options) -> Dataset:
    """Open a dataset by registered name (``shapes``, ``multi_sprites``, ...) or by path.

    A path to an ``.h5``/``.hdf5`` file opens a converted dataset, and so does a directory holding exactly
    one such file (what ``data convert --out DIR`` writes); any other directory opens an ``image_folder``
    dataset. ``options`` are passed to the dataset's factory (e.g. ``image_size``,
    ``num_images``, ``seed``, ``cache_dir``). Raises :class:`DatasetError` with a one-line message.
    """
    _load_builtin()
    key = str(name_or_path)
    if split not in SPLITS and split not in EXTRA_SPLITS.get(key, ()):
        known = (*SPLITS, *EXTRA_SPLITS.get(key, ()))
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(known)}")
    if key in FACTORIES:
        return FACTORIES[key](split=split, **options)
    path = Path(key).expanduser()
    if path.suffix in (".h5", ".hdf5"):
        return FACTORIES["hdf5"](path=path, split=split, **options)
    if path.suffix in (".tfrecords", ".tfrecord") or path.name.endswith((".tfrecords.gz", ".tfrecord.gz")):
        raise DatasetError(f"{key}: TFRecord files are not read directly; run `scenedecomp data convert <dataset> "
                           f"--src {key} --out DIR` first and use the .h5 file it writes")
    if path.is_dir():
        # a folder that `data convert --out DIR` wrote: exactly one converted file opens that file
        converted = sorted(p for p in path.iterdir() if p.suffix in (".h5", ".hdf5") and p.is_file())
        if len(converted) == 1:
            return FACTORIES["hdf5"](path=converted[0], split=split, **options)
        if len(converted) > 1:
            names = ", ".join(p.name for p in converted[:4]) + (", ..." if len(converted) > 4 else "")
            raise DatasetError(f"{path}: holds {len(converted)} converted files ({names}); pass one of them")
        return FACTORIES["image_folder"](path=path, split=split, **options)
    if path.suffix or os.sep in key:
        raise DatasetError(f"{key}: no such dataset file or directory")
    raise DatasetError(f"unknown dataset {key!r}; known: {', '.join(sorted(FACTORIES))}")


__all__ = ["DatasetError", "SPLITS", "available_datasets", "open_dataset",
           "register_dataset"]
