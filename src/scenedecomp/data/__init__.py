"""Datasets: generators, readers and the one entry point :func:`open_dataset`.

Every dataset returned here is a ``torch.utils.data.Dataset`` whose items follow the batch contract
(:mod:`scenedecomp.data.contract`). It also carries ``background_labels`` (tuple of label values that
count as background for foreground metrics) and ``max_objects``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

from .contract import BatchError, check_item

SPLITS = ("train", "val", "test")

_REGISTRY: dict[str, Callable[..., Dataset]] = {}


class DatasetError(ValueError):
    """A dataset cannot be opened or read (message names the file or dataset and the problem)."""


def register_dataset(name: str) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator: register ``factory(split=..., **options) -> Dataset`` under ``name``."""

    def wrap(factory: Callable[..., Dataset]) -> Callable[..., Dataset]:
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_datasets() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    # Importing the modules registers their datasets.
    from . import hdf5, image_folder, multi_mnist, sprites  # noqa: F401


def open_dataset(name_or_path: str | os.PathLike, split: str = "train", **options) -> Dataset:
    """Open a dataset by registered name (``shapes``, ``multi_sprites``, ...) or by path.

    A path to an ``.h5``/``.hdf5`` file opens a converted dataset; a directory of images opens an
    ``image_folder`` dataset. ``options`` are passed to the dataset's factory (e.g. ``image_size``,
    ``num_images``, ``seed``, ``cache_dir``). Raises :class:`DatasetError` with a one-line message.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    _load_builtin()
    key = str(name_or_path)
    if key in _REGISTRY:
        return _REGISTRY[key](split=split, **options)
    path = Path(key).expanduser()
    if path.suffix in (".h5", ".hdf5"):
        return _REGISTRY["hdf5"](path=path, split=split, **options)
    if path.is_dir():
        return _REGISTRY["image_folder"](path=path, split=split, **options)
    if path.suffix or os.sep in key:
        raise DatasetError(f"{key}: no such dataset file or directory")
    raise DatasetError(f"unknown dataset {key!r}; known: {', '.join(sorted(_REGISTRY))}")


__all__ = ["BatchError", "DatasetError", "SPLITS", "available_datasets", "check_item", "open_dataset",
           "register_dataset"]
