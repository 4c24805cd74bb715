"""Reading checkpoints: a run's checkpoint file and config, checked against each other, and the module
they describe. Checkpoints are read as data only (``weights_only=True``); writing is Lightning's, through
:class:`~.safety.AtomicCheckpointIO`."""

from __future__ import annotations

import os
import pickle
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config import ConfigError, RunConfig, load_config, to_dict, validate
from .module import SceneDecompModule
from .pretrained import WEIGHTS, geometry, model_folder, read_weights
from .run_dir import RunError


def find_run(path: str | os.PathLike) -> tuple[Path, Path, RunConfig]:
    """Resolve a run directory, checkpoint file, model folder (``scenedecomp export``) or ``pretrained:NAME``
    to ``(run_dir, checkpoint, config)``; for a model folder ``checkpoint`` is its ``model.safetensors``."""
    folder = model_folder(path)
    if folder is not None:
        return folder, folder / WEIGHTS, _folder_config(folder)
    path = Path(path).expanduser()
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise RunError(f"{path}: no checkpoints/last.ckpt in this run directory")
        run_dir = path
    elif path.is_file():
        ckpt = path
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    elif path.exists():
        raise RunError(f"{path}: not a regular file; give a run directory or a .ckpt file")
    else:
        raise RunError(f"{path}: no such run directory or checkpoint")
    state = read_checkpoint(ckpt)
    stored = (state.get("hyper_parameters") or {}).get("config") if isinstance(state, dict) else None
    if stored is None:
        raise RunError(f"{ckpt}: not a scenedecomp checkpoint (no stored config)")
    cfg_file = run_dir / "config.yaml"
    try:
        cfg = load_config(cfg_file) if cfg_file.is_file() else _config_from_dict(stored)
        trained = _config_from_dict(stored)
    except (ConfigError, OmegaConfBaseException) as err:
        raise RunError(f"{ckpt}: {str(err).splitlines()[0]}") from None
    if asdict(cfg.model) != asdict(trained.model):
        raise RunError(f"{ckpt}: checkpoint does not match {cfg_file} (model settings differ)")
    size = (state.get("hyper_parameters") or {}).get("image_size", trained.data.image_size)
    if cfg.data.image_size != size:
        raise RunError(f"{ckpt}: checkpoint was trained on {size}x{size} images but {cfg_file} says "
                       f"data.image_size: {cfg.data.image_size}")
    return run_dir, ckpt, cfg


def _folder_config(folder: Path) -> RunConfig:
    cfg_file = folder / "config.yaml"
    if not cfg_file.is_file():
        raise RunError(f"{folder}: model folder without config.yaml")
    try:
        return load_config(cfg_file)
    except (ConfigError, OmegaConfBaseException) as err:
        raise RunError(f"{cfg_file}: {str(err).splitlines()[0]}") from None


def read_checkpoint(ckpt: Path) -> dict:
    """Load a checkpoint file as plain data (``weights_only=True``: a pickle can never run code).

    Anything that is not a readable dict of tensors and plain values is refused with one line.
    """
    try:
        with open(ckpt, "rb") as fh:
            magic = fh.read(4)
    except OSError as err:
        raise RunError(f"{ckpt}: cannot read the checkpoint ({err.strerror or err})") from None
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        what = "an empty file" if not magic else "not a PyTorch checkpoint (no zip archive)"
        raise RunError(f"{ckpt}: not a readable checkpoint ({what})")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # UnpicklingError for crafted pickles, RuntimeError for other bytes
        first = (str(err).strip().splitlines() or [""])[0]
        if isinstance(err, pickle.UnpicklingError) or "Weights only load failed" in first:
            first = "it holds objects other than tensors and plain values, refused without running them"
        raise RunError(f"{ckpt}: not a readable checkpoint ({first[:200]})") from None
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise RunError(f"{ckpt}: not a scenedecomp checkpoint (no state_dict)")
    return state


def _config_from_dict(stored: dict) -> RunConfig:
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), stored))
    validate(cfg)
    return cfg


def load_module(ckpt: Path, cfg: RunConfig) -> SceneDecompModule:
    """Load weights from ``ckpt`` (a checkpoint, or a model folder's ``model.safetensors``) into a module
    built from ``cfg``; refuse a mismatch in one line."""
    if Path(ckpt).name == WEIGHTS:  # a model folder: tensors only, no pickle on this path
        weights, metadata = read_weights(Path(ckpt))
        channels, size, background = geometry(metadata, Path(ckpt))
        if size != cfg.data.image_size:
            raise RunError(f"{ckpt}: weights are for {size}x{size} images but config.yaml says "
                           f"data.image_size: {cfg.data.image_size}")
        state = {"state_dict": {f"model.{k}": v for k, v in weights.items()}}
        hp = {"in_channels": channels, "image_size": size, "background_labels": background}
    else:
        state = read_checkpoint(ckpt)
        hp = state.get("hyper_parameters", {})
    module = SceneDecompModule(to_dict(cfg), hp.get("in_channels", 3), hp.get("image_size", cfg.data.image_size),
                               tuple(hp.get("background_labels", (0,))))
    try:
        result = module.load_state_dict(state["state_dict"], strict=False)
    except RuntimeError as err:  # same keys, other shapes: "size mismatch for model.x: ..."
        detail = next((line.strip() for line in str(err).splitlines() if "mismatch" in line), "shapes differ")
        raise RunError(f"{ckpt}: checkpoint does not match the config ({detail[:200]})") from None
    missing = result.missing_keys
    if Path(ckpt).name == WEIGHTS:  # a model folder leaves out what only training uses (AIR's baseline)
        optional = tuple(f"model.{p}" for p in getattr(module.model, "training_only_prefixes", ()))
        missing = [k for k in missing if not k.startswith(optional)]
    problems = [f"missing {k}" for k in missing] + [f"unexpected {k}" for k in result.unexpected_keys]
    if problems:
        raise RunError(f"{ckpt}: checkpoint does not match the config ({'; '.join(problems[:3])})")
    module.eval()
    return module


def inference_slots(module: SceneDecompModule, num_slots: int | None) -> int | None:
    """The one rule for K at inference: ``None`` keeps the run's own K; otherwise ``2 <= K <= MAX_SLOTS`` and,
    for a one-pass attention network (RN50/RN50*), the K it was trained with. Returns ``num_slots`` or raises
    :class:`~scenedecomp.errors.BadInput` / :class:`~scenedecomp.errors.ResourceLimit` with one line."""
    from ..errors import BadInput
    from ..safeio import MAX_SLOTS, check_bound

    if num_slots is None:
        return None
    from ..models import fixed_num_slots

    check_bound("K at inference (num_slots)", int(num_slots), 2, MAX_SLOTS)
    fixed = fixed_num_slots(module.model)  # MONet's recurrent attention, AIR and Slot Attention: any K
    if fixed is not None and num_slots != fixed:
        raise BadInput(f"K at inference (num_slots) {num_slots}: this attention network was trained with a "
                       f"fixed K={fixed}")
    return int(num_slots)
