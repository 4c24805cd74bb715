"""A run directory and the files written into it::

    <out_dir>/<name>/
      config.yaml        resolved configuration
      env.json           package versions, git commit, command line, seed, machine
      checkpoints/       last.ckpt and periodic step*.ckpt (:mod:`.checkpoint` reads them)
      tensorboard/       scalars (loss terms, metrics) and decomposition images
      history.jsonl      validation metrics vs step and wall-clock
      metrics.json       held-out metrics (``scenedecomp evaluate``; written at the end of training)
      figures/           decomposition figures, the metric curve

:mod:`.train` creates it, :mod:`.evaluate` adds metrics and figures; this module holds what they share.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..errors import BadRun
from .config import RunConfig
from .safety import atomic_write_text


class RunError(BadRun, ValueError):
    """A run cannot be started, found or loaded (one-line message)."""


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically (temp file in the same folder, then rename; mode from the umask).

    A target that cannot be written (a directory, a read-only place) raises :class:`RunError`, leaving
    no temp file behind."""
    path = Path(path)
    if path.is_dir():
        raise RunError(f"{path}: is a directory; give a .json file path")
    text = json.dumps(_nan_to_none(payload), indent=2, sort_keys=True, allow_nan=False) + "\n"
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise RunError(f"{path}: cannot write ({err.strerror or err})") from None


def _nan_to_none(value):
    """Strict JSON: NaN (a metric with no valid image) becomes null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


def _git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def environment(cfg: RunConfig) -> dict:
    import lightning
    import numpy
    import torchvision

    from ..version import __version__

    return {
        "scenedecomp": __version__,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "command": " ".join(sys.argv),
        "seed": cfg.seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
