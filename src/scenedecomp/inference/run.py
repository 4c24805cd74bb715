"""Loading a run: one way from a run directory, a checkpoint, a model folder or ``pretrained:NAME`` to a
:class:`LoadedRun` (the plain model in eval mode, its config and geometry, and the one rule for K at
inference). Checkpoints are read as data only (``weights_only=True``); writing them is training's
(:class:`~scenedecomp.training.resume.AtomicCheckpointIO`)."""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf.errors import OmegaConfBaseException

from ..config import ConfigError, RunConfig, config_from_dict, load_config
from ..errors import BadInput, RunError
from ..models import build_model, fixed_num_slots
from ..safeio import MAX_SLOTS, check_bound
from .pretrained import WEIGHTS, geometry, model_folder, read_weights


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
        cfg = load_config(cfg_file) if cfg_file.is_file() else config_from_dict(stored)
        trained = config_from_dict(stored)
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


@dataclass
class LoadedRun:
    """A trained model ready for inference: ``model`` is the plain model (a
    :class:`~scenedecomp.models.SceneModel`, in eval mode), ``config`` the run's config, ``weights`` the file
    it was read from (a checkpoint or a model folder's ``model.safetensors``), and the geometry it was
    trained on. ``run(images, num_slots)`` runs the model at the run's K for evaluation unless told otherwise."""

    model: torch.nn.Module
    config: RunConfig
    run_dir: Path
    weights: Path
    in_channels: int
    image_size: int
    background_labels: tuple[int, ...] = (0,)

    @property
    def geometry(self) -> tuple[int, tuple[int, int]]:
        """``(channels, (height, width))`` of the images the model takes."""
        return self.in_channels, (self.image_size, self.image_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> LoadedRun:
        self.model.to(device)
        return self

    def num_slots(self, requested: int | None) -> int | None:
        """The one rule for K at inference: ``None`` keeps the run's own K; otherwise ``2 <= K <= MAX_SLOTS``
        and, for a model whose K is fixed (MONet's one-pass RN50/RN50* attention), the K it was trained with.
        Returns ``requested`` or raises :class:`~scenedecomp.errors.BadInput` /
        :class:`~scenedecomp.errors.ResourceLimit` with one line."""
        if requested is None:
            return None
        check_bound("K at inference (num_slots)", int(requested), 2, MAX_SLOTS)
        fixed = fixed_num_slots(self.model)
        if fixed is not None and requested != fixed:
            raise BadInput(f"K at inference (num_slots) {requested}: this model was trained with a fixed K={fixed}")
        return int(requested)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, num_slots: int | None = None):
        """The model's :class:`~scenedecomp.models.output.ModelOutput` for ``images`` (on the model's device)
        at ``num_slots`` (checked by :meth:`num_slots` by the caller), else the run's K for evaluation."""
        return self.model(images, num_slots or self.config.model.eval_num_slots)


def load_run(path: str | os.PathLike) -> LoadedRun:
    """Load a run directory, ``.ckpt`` file, model folder or ``pretrained:NAME`` as a :class:`LoadedRun`;
    anything that does not fit (a config that differs from the checkpoint, other shapes, missing weights) is
    refused with one line (:class:`~scenedecomp.errors.RunError`)."""
    run_dir, weights_file, cfg = find_run(path)
    return load_weights(weights_file, cfg, run_dir)


def load_weights(weights_file: Path, cfg: RunConfig, run_dir: Path | None = None) -> LoadedRun:
    """Build the model ``cfg`` describes and load ``weights_file`` (a checkpoint, or a model folder's
    ``model.safetensors``) into it; refuse a mismatch in one line."""
    weights_file = Path(weights_file)
    folder = weights_file.name == WEIGHTS  # a model folder: tensors only, no pickle on this path
    if folder:
        weights, metadata = read_weights(weights_file)
        channels, size, background = geometry(metadata, weights_file)
        if size != cfg.data.image_size:
            raise RunError(f"{weights_file}: weights are for {size}x{size} images but config.yaml says "
                           f"data.image_size: {cfg.data.image_size}")
    else:
        state = read_checkpoint(weights_file)
        hp = state.get("hyper_parameters", {})
        channels, size = hp.get("in_channels", 3), hp.get("image_size", cfg.data.image_size)
        background = tuple(hp.get("background_labels", (0,)))
        # the training module holds the model as ``model``: its weights are the ``model.*`` entries
        weights = {k: v for k, v in state["state_dict"].items()}
        unexpected = [k for k in weights if not k.startswith("model.")]
        weights = {k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")}
    model = build_model(cfg.model, channels, size)
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # same keys, other shapes: "size mismatch for x: ..."
        detail = next((line.strip() for line in str(err).splitlines() if "mismatch" in line), "shapes differ")
        detail = re.sub(r"size mismatch for ", "size mismatch for model.", detail)
        raise RunError(f"{weights_file}: checkpoint does not match the config ({detail[:200]})") from None
    missing = result.missing_keys
    if folder:  # a model folder leaves out what only training uses (AIR's baseline)
        missing = [k for k in missing if not k.startswith(tuple(model.training_only_prefixes))]
        unexpected = []
    problems = ([f"missing model.{k}" for k in missing] + [f"unexpected model.{k}" for k in result.unexpected_keys]
                + [f"unexpected {k}" for k in unexpected])
    if problems:
        raise RunError(f"{weights_file}: checkpoint does not match the config ({'; '.join(problems[:3])})")
    model.eval()
    return LoadedRun(model, cfg, run_dir if run_dir is not None else weights_file.parent, weights_file,
                     int(channels), int(size), background)
