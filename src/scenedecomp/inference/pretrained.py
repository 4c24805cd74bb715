"""Model folders: a trained model as data only (no pickle), and ``pretrained:NAME``.

A model folder (written by ``scenedecomp export``, :mod:`scenedecomp.evaluation.export`) holds::

    model.safetensors   the model's weights (the EMA weights where the run averaged them, as evaluation uses);
                        safetensors holds tensors and a string header, never code. The header's metadata
                        records the format, in_channels, image_size and background_labels.
    config.yaml         the run's resolved configuration (local paths such as data.options.cache_dir removed)
    metrics.json        the run's held-out test metrics
    provenance.json     git commit, seed, training command, machine, dates, checkpoint step, weights' SHA-256
    check.json          metrics on the first images of the test split, recorded at export: the check that a
                        load reproduces the model (``scenedecomp pretrained --check``)

``pretrained:NAME`` names such a folder shipped inside the package (``scenedecomp/pretrained/NAME/``).
Every command that takes a run (``evaluate``, ``visualize``, ``decompose``, ``report``) also takes a model
folder or ``pretrained:NAME``: :func:`.run.find_run` resolves them with :func:`model_folder`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import RunError

PREFIX = "pretrained:"
WEIGHTS = "model.safetensors"
FORMAT = "scenedecomp-model-1"
FILES = (WEIGHTS, "config.yaml", "metrics.json", "provenance.json", "check.json")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# where the shipped models live (package data); a module attribute so that tests can point it elsewhere
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"


def shipped() -> dict[str, Path]:
    """``{name: folder}`` of the models shipped with the package (sorted by name)."""
    root = Path(PRETRAINED_DIR)
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and (p / WEIGHTS).is_file()}


def model_folder(spec: str | os.PathLike) -> Path | None:
    """``pretrained:NAME`` -> the shipped folder; a model folder (or its ``model.safetensors``) -> the folder;
    anything else -> None (a run directory or checkpoint, for the caller to resolve). An unknown or malformed
    ``pretrained:`` name raises :class:`RunError` listing the shipped names."""
    text = os.fspath(spec)
    if text.startswith(PREFIX):
        name = text[len(PREFIX):]
        available = shipped()
        if not _NAME.fullmatch(name) or name not in available:
            listed = ", ".join(available) or "none are shipped with this installation"
            raise RunError(f"{text}: no such pretrained model (available: {listed}; `scenedecomp pretrained`)")
        return available[name]
    path = Path(text).expanduser()
    if path.is_file() and path.name == WEIGHTS:
        return path.parent
    if path.is_dir() and (path / WEIGHTS).is_file():
        return path
    return None


def is_model_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / WEIGHTS).is_file()


def default_output(folder: Path, kind: str, split: str | None = None, suffix: str = ".json") -> Path:
    """Where a command writes for a model folder when no ``--out`` is given: the current directory,
    ``<kind>_<NAME>[_<split>]<suffix>`` (never inside the folder, which may be the installed package)."""
    tail = f"_{split}" if split and split != "test" else ""
    return Path.cwd() / f"{kind}_{folder.name}{tail}{suffix}"


def read_weights(path: Path) -> tuple[dict, dict[str, str]]:
    """``(state_dict, metadata)`` from a ``model.safetensors`` file; anything unreadable is one-line RunError."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            state = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 - safe_open has no iterator
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise RunError(f"{path}: not a readable safetensors file ({first[:200]})") from None
    if metadata.get("format") != FORMAT:
        raise RunError(f"{path}: not a scenedecomp model (safetensors metadata format is "
                       f"{metadata.get('format')!r}, expected {FORMAT!r})")
    return state, metadata


def geometry(metadata: dict[str, str], path: Path) -> tuple[int, int, tuple[int, ...]]:
    """``(in_channels, image_size, background_labels)`` recorded in the weights' metadata."""
    try:
        channels = int(metadata["in_channels"])
        size = int(metadata["image_size"])
        background = tuple(int(v) for v in metadata.get("background_labels", "0").split(",") if v.strip())
    except (KeyError, ValueError) as err:
        raise RunError(f"{path}: safetensors metadata lacks a valid {err}") from None
    return channels, size, background
