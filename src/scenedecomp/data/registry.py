"""The dataset registry: :func:`register_dataset` records a factory under a name; the split names and the
one exception every dataset raises. Dataset modules import this module, never the package."""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset

from ..errors import BadInput

SPLITS = ("train", "val", "test")

FACTORIES: dict[str, Callable[..., Dataset]] = {}
EXTRA_SPLITS: dict[str, tuple[str, ...]] = {}  # dataset-specific splits beyond SPLITS (e.g. OOD tests)


class DatasetError(BadInput, ValueError):
    """A dataset cannot be opened or read (message names the file or dataset and the problem)."""


def register_dataset(name: str, extra_splits: tuple[str, ...] = ()
                     ) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator: register ``factory(split=..., **options) -> Dataset`` under ``name``; ``extra_splits``
    are split names the factory accepts beyond :data:`SPLITS` (e.g. out-of-distribution test splits)."""

    def wrap(factory: Callable[..., Dataset]) -> Callable[..., Dataset]:
        FACTORIES[name] = factory
        EXTRA_SPLITS[name] = tuple(extra_splits)
        return factory

    return wrap
