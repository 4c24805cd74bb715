"""Train, evaluate and visualise runs. A run directory holds everything about one run::

    <out_dir>/<name>/
      config.yaml        resolved configuration
      env.json           package versions, git commit, command line, seed, machine
      checkpoints/       last.ckpt and periodic step*.ckpt
      tensorboard/       scalars (loss terms, metrics) and decomposition images
      history.jsonl      validation metrics vs step and wall-clock
      metrics.json       held-out metrics (``scenedecomp evaluate``; written at the end of training)
      figures/           decomposition figures, the metric curve
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import platform
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.utils.data import DataLoader, Dataset

from ..data import DatasetError, open_dataset
from .config import ConfigError, RunConfig, to_yaml, validate
from .module import SceneDecompModule, batch_metrics
from .safety import (
    RUN_MARKER,
    AtomicCheckpointIO,
    DivergenceError,
    DivergenceGuard,
    ResumableSampler,
    ResumeState,
    ShardSampler,
    ShardSamplers,
    atomic_write_text,
    remove_stale_temp_files,
    unwritable_reason,
)


class RunError(ValueError):
    """A run cannot be started, found or loaded (one-line message)."""


# ----------------------------------------------------------------------------------------------- data
def open_split(cfg: RunConfig, split: str) -> Dataset:
    """Open ``split`` of the configured dataset (``data.options`` are passed through)."""
    sizes = {"train": cfg.data.num_train, "val": cfg.data.num_val, "test": cfg.data.num_test}
    options = dict(cfg.data.options)
    options.setdefault("image_size", cfg.data.image_size)
    size = sizes.get(split, cfg.data.num_test)  # an extra split (e.g. multi_sprites OOD) takes the test size
    if size is not None:
        options["num_images"] = size
    try:
        return open_dataset(cfg.data.name, split=split, **options)
    except TypeError as err:  # an option the dataset does not take
        raise DatasetError(f"dataset {cfg.data.name!r}: {err}") from None


def make_loader(cfg: RunConfig, dataset: Dataset, train: bool) -> DataLoader:
    """Training: a :class:`~.safety.ResumableSampler` (order a function of seed and epoch, so ``--resume``
    continues mid-epoch). Both: their own generator for worker seeds, so no loader draws from the global
    RNG (a resumed run then continues the same random stream)."""
    batch = cfg.data.batch_size if train else (cfg.data.eval_batch_size or cfg.data.batch_size)
    generator = torch.Generator().manual_seed(cfg.seed)
    # our own samplers, sharded by rank under data parallelism (ShardSamplers; no DistributedSampler padding)
    sampler = ResumableSampler(len(dataset), cfg.seed, batch) if train else ShardSampler(len(dataset))
    workers = cfg.data.num_workers
    return DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=train and len(sampler) >= batch,
                      num_workers=workers, persistent_workers=workers > 0, generator=generator)


def _image_shape(dataset: Dataset, source: str) -> tuple[int, int]:
    if len(dataset) == 0:
        raise DatasetError(f"{source}: the dataset is empty")
    image = dataset[0]["image"]
    if image.shape[-1] != image.shape[-2]:
        raise DatasetError(f"{source}: images must be square, got {tuple(image.shape)}")
    return image.shape[0], image.shape[-1]


# ----------------------------------------------------------------------------------------------- files
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

    from .. import __version__

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


def prepare_run_dir(cfg: RunConfig, overwrite: bool, resume: bool) -> Path:
    """Check the run directory can be used, before anything is written."""
    out_dir = Path(cfg.out_dir).expanduser()
    run_dir = out_dir / cfg.name
    if Path(cfg.name).is_absolute() or ".." in Path(cfg.name).parts or not \
            os.path.abspath(run_dir).startswith(os.path.join(os.path.abspath(out_dir), "")):
        raise RunError(f"name={cfg.name}: a run name must stay inside out_dir ({out_dir})")
    exists = run_dir.exists() and any(run_dir.iterdir()) if run_dir.is_dir() else run_dir.exists()
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir}: exists and is not a directory")
    if exists and not (overwrite or resume):
        raise RunError(f"{run_dir}: run directory already exists; pass --overwrite, --resume, or another name=")
    if resume and not (run_dir / "checkpoints" / "last.ckpt").is_file():
        raise RunError(f"{run_dir}: nothing to resume (no checkpoints/last.ckpt)")
    if resume:  # refuse a crafted or foreign checkpoint before Lightning unpickles it
        read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    if exists and overwrite and not resume and not (run_dir / RUN_MARKER).is_file():
        raise RunError(f"{run_dir}: refusing to overwrite a directory that is not a scenedecomp run "
                       f"(no {RUN_MARKER} marker file)")
    problem = unwritable_reason(run_dir)
    if problem:
        raise RunError(f"{run_dir}: run directory {problem}")
    return run_dir


# ----------------------------------------------------------------------------------------------- loading
def find_run(path: str | os.PathLike) -> tuple[Path, Path, RunConfig]:
    """Resolve a run directory or checkpoint file to ``(run_dir, checkpoint, config)``."""
    path = Path(path).expanduser()
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise RunError(f"{path}: no checkpoints/last.ckpt in this run directory")
        run_dir = path
    elif path.is_file():
        ckpt = path
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    else:
        raise RunError(f"{path}: no such run directory or checkpoint")
    state = read_checkpoint(ckpt)
    stored = (state.get("hyper_parameters") or {}).get("config") if isinstance(state, dict) else None
    if stored is None:
        raise RunError(f"{ckpt}: not a scenedecomp checkpoint (no stored config)")
    cfg_file = run_dir / "config.yaml"
    from .config import load_config

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


def read_checkpoint(ckpt: Path) -> dict:
    """Load a checkpoint file as plain data (``weights_only=True``: a pickle can never run code).

    Anything that is not a readable dict of tensors and plain values is refused with one line.
    """
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
    """Load weights from ``ckpt`` into a module built from ``cfg``; refuse a mismatch in one line."""
    state = read_checkpoint(ckpt)
    hp = state.get("hyper_parameters", {})
    module = SceneDecompModule(asdict(cfg), hp.get("in_channels", 3), hp.get("image_size", cfg.data.image_size),
                               tuple(hp.get("background_labels", (0,))))
    try:
        result = module.load_state_dict(state["state_dict"], strict=False)
    except RuntimeError as err:  # same keys, other shapes: "size mismatch for model.x: ..."
        detail = next((line.strip() for line in str(err).splitlines() if "mismatch" in line), "shapes differ")
        raise RunError(f"{ckpt}: checkpoint does not match the config ({detail[:200]})") from None
    problems = [f"missing {k}" for k in result.missing_keys] + [f"unexpected {k}" for k in result.unexpected_keys]
    if problems:
        raise RunError(f"{ckpt}: checkpoint does not match the config ({'; '.join(problems[:3])})")
    module.eval()
    return module


# ----------------------------------------------------------------------------------------------- evaluate
@torch.no_grad()
def evaluate_module(module: SceneDecompModule, loader: DataLoader, background_labels=(0,),
                    num_slots: int | None = None, max_batches: int | None = None,
                    progress: bool = False) -> dict:
    """Per-image metrics over ``loader`` summarised to ``{name: mean, name_std, name_count, num_images}``."""
    from .. import metrics as M

    module.eval()
    device = module.device
    collected: dict[str, list[torch.Tensor]] = {}
    iterator = loader
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(loader, desc="evaluate", leave=False, total=max_batches or len(loader))
    for i, batch in enumerate(iterator):
        if max_batches is not None and i >= max_batches:
            break
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        out = module.model(batch["image"], num_slots or module.eval_num_slots)
        for name, values in batch_metrics(batch, out, background_labels).items():
            collected.setdefault(name, []).append(values.cpu())
        if "num_objects" in batch and "num_objects" in out.extras:
            collected.setdefault("_true_count", []).append(batch["num_objects"].cpu())
            collected.setdefault("_pred_count", []).append(out.extras["num_objects"].cpu())
    true_count = collected.pop("_true_count", None)
    pred_count = collected.pop("_pred_count", None)
    summary = M.summarize({k: torch.cat(v) for k, v in collected.items()})
    if true_count is not None:
        by_count = M.count_accuracy_by_count(torch.cat(true_count), torch.cat(pred_count))
        summary["count_accuracy_by_count"] = {str(k): v for k, v in by_count.items()}
    return summary


def evaluate(path: str | os.PathLike, split: str = "test", num_slots: int | None = None,
             batch_size: int | None = None, out: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Evaluate a run directory or checkpoint on ``split``; write and return the metrics."""
    from .hardware import tune_malloc

    tune_malloc()
    run_dir, ckpt, cfg = find_run(path)
    if num_slots is not None and num_slots < 2:
        raise RunError(f"--num-slots: K must be at least 2, got {num_slots}")
    if batch_size is not None:
        cfg.data.eval_batch_size = batch_size
    dataset = open_split(cfg, split)
    module = load_module(ckpt, cfg)
    if num_slots is not None and getattr(module.model.attention, "recurrent", True) is False \
            and num_slots != cfg.model.num_slots:
        raise RunError(f"--num-slots {num_slots}: this attention network was trained with a fixed "
                       f"K={cfg.model.num_slots}")
    start = time.perf_counter()
    metrics = evaluate_module(module, make_loader(cfg, dataset, train=False),
                              getattr(dataset, "background_labels", (0,)), num_slots, progress=progress)
    metrics.update({"split": split, "checkpoint": str(ckpt), "num_slots": num_slots or cfg.model.eval_num_slots
                    or cfg.model.num_slots, "eval_seconds": round(time.perf_counter() - start, 2)})
    target = Path(out) if out else run_dir / ("metrics.json" if split == "test" else f"metrics_{split}.json")
    previous = json.loads(target.read_text()) if target.is_file() else {}
    for key in ("train_seconds", "train_steps", "train_images_per_s", "precision"):  # keep what training recorded
        if key in previous:
            metrics[key] = previous[key]
    write_json(target, metrics)
    metrics["_path"] = str(target)
    return metrics


# ----------------------------------------------------------------------------------------------- visualize
def visualize(path: str | os.PathLike, out_dir: str | os.PathLike, split: str = "test", num_images: int = 8,
              num_slots: int | None = None) -> list[Path]:
    """Write decomposition figures (and AIR box figures) for the first images of ``split``."""
    from ..viz.figures import boxes_figure, decomposition_figure, save_figure

    if num_images < 1:
        raise RunError(f"--num-images must be at least 1, got {num_images}")
    run_dir, ckpt, cfg = find_run(path)
    dataset = open_split(cfg, split)
    module = load_module(ckpt, cfg)
    out_dir = Path(out_dir)
    problem = unwritable_reason(out_dir)
    if problem:
        raise RunError(f"{out_dir}: output directory {problem}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"{out_dir}: output directory is not writable ({err.strerror or err})") from None
    n = min(num_images, len(dataset))
    images = torch.stack([dataset[i]["image"] for i in range(n)])
    with torch.no_grad():
        result = module.model(images, num_slots or module.eval_num_slots).detach()
    written = []
    for start in range(0, n, 4):
        sl = slice(start, start + 4)
        figure = decomposition_figure(images[sl], result.select(sl))
        written.append(save_figure(figure, out_dir / f"decomposition_{start // 4}.png"))
    if "boxes" in result.extras:
        written.append(save_figure(boxes_figure(images, result, result.extras["boxes"]), out_dir / "boxes.png"))
    return written


# ----------------------------------------------------------------------------------------------- train
def train(cfg: RunConfig, overwrite: bool = False, resume: bool = False, quiet: bool = False) -> dict:
    """Train ``cfg`` to its step or time budget, then evaluate on the test split and draw figures.

    Everything that can be refused (config, data, Lightning's trainer settings) is checked before the run
    directory is written. A divergence (:class:`~.safety.DivergenceError`) or a failing DataLoader worker
    becomes a one-line :class:`RunError`. ``quiet`` also silences Lightning's info lines and warnings.
    Returns the test metrics (also written to ``metrics.json``).
    """
    with _quiet_lightning(quiet):
        try:
            return _train(cfg, overwrite, resume, quiet)
        except DivergenceError as err:
            raise RunError(str(err)) from None
        except Exception as err:  # noqa: BLE001 - only DataLoader worker failures are translated
            line = _worker_failure(err)
            if line is None:
                raise
            raise RunError(line) from None


def _worker_failure(err: BaseException) -> str | None:
    """One line for an exception re-raised from a DataLoader worker (its last traceback line), else None."""
    text = str(err)
    if "DataLoader worker" not in text:
        return None
    if "Original Traceback" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        last = lines[-1]
        for prefix in ("scenedecomp.data.DatasetError: ", "scenedecomp.data.contract.BatchError: "):
            last = last.removeprefix(prefix)
        return f"data loader worker failed: {last}"
    return f"data loader worker failed: {text.splitlines()[0]}"


@contextlib.contextmanager
def _quiet_lightning(quiet: bool):
    """With ``quiet``: Lightning's loggers at ERROR and Python warnings ignored, restored afterwards."""
    if not quiet:
        yield
        return
    names = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")
    levels = {name: logging.getLogger(name).level for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _train(cfg: RunConfig, overwrite: bool, resume: bool, quiet: bool) -> dict:
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from ..viz.figures import curve_figure, save_figure
    from .hardware import resolve_precision, tune_malloc

    # a data-parallel worker process (started by Lightning's launcher, torchrun or SLURM) uses the run
    # directory that rank 0 prepares and writes; it only trains
    secondary = secondary_process()
    run_dir = Path(cfg.out_dir).expanduser() / cfg.name if secondary else prepare_run_dir(cfg, overwrite, resume)
    tune_malloc()
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator, cfg.model.name)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    # open everything that can fail before the run directory is touched
    train_set, val_set = open_split(cfg, "train"), open_split(cfg, "val")
    in_channels, image_size = _image_shape(train_set, f"{cfg.data.name} train")
    background = tuple(getattr(train_set, "background_labels", (0,)))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        module = SceneDecompModule.from_config(cfg, in_channels, image_size, background)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None

    from .callbacks import DecompositionImageCallback, HistoryCallback

    t = cfg.trainer
    fixed_images = torch.stack([val_set[i]["image"] for i in range(min(4, len(val_set)))])
    train_loader, val_loader = make_loader(cfg, train_set, True), make_loader(cfg, val_set, False)
    sampler = train_loader.sampler
    guard = DivergenceGuard(run_dir, sampler, skip=t.skip_nonfinite_steps)
    module.divergence_guard = guard
    callbacks = [
        ResumeState(sampler),
        ShardSamplers(sampler, val_loader.sampler),
        guard,
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="step{step:07d}", auto_insert_metric_name=False,
                        every_n_train_steps=t.checkpoint_every_n_steps, save_top_k=-1, save_last=True),
        HistoryCallback(run_dir / "history.jsonl", cfg.data.batch_size),
        DecompositionImageCallback(fixed_images, t.image_log_every_n_steps),
        LearningRateMonitor(logging_interval="step"),
    ]
    if t.ema_decay is not None:  # checkpoints then hold the averaged weights as ``state_dict``
        from lightning.pytorch.callbacks import EMAWeightAveraging

        callbacks.append(EMAWeightAveraging(decay=t.ema_decay))
    try:  # Lightning checks accelerator/devices/strategy/precision here, before anything is written
        trainer = _make_trainer(cfg, run_dir, precision, callbacks, quiet)
    except Exception as err:  # noqa: BLE001 - MisconfigurationException, ValueError, RuntimeError
        raise ConfigError(f"trainer: {(str(err).strip().splitlines() or [type(err).__name__])[0]}") from None

    start_step = int(read_checkpoint(run_dir / "checkpoints" / "last.ckpt").get("global_step", 0)) if resume else 0
    if not secondary:
        _start_run_dir(cfg, run_dir, overwrite, resume, precision, start_step)

    start = time.perf_counter()
    trainer.fit(module, train_loader, val_loader,
                ckpt_path=str(run_dir / "checkpoints" / "last.ckpt") if resume else None, weights_only=True)
    train_seconds = time.perf_counter() - start
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)  # full state, for --resume
    if not trainer.is_global_zero:
        return {}
    images = (trainer.global_step - start_step) * cfg.data.batch_size * trainer.world_size
    write_json(run_dir / "metrics.json", {"train_seconds": round(train_seconds, 1), "train_steps": trainer.global_step,
                                          "train_images_per_s": round(images / max(train_seconds, 1e-9), 1),
                                          "precision": precision})
    metrics = evaluate(run_dir, "test", progress=not quiet)
    visualize(run_dir, run_dir / "figures", split="test", num_images=8)
    history_file = run_dir / "history.jsonl"  # absent when the run ended before its first validation
    history = [json.loads(line) for line in history_file.read_text().splitlines() if line.strip()] \
        if history_file.is_file() else []
    if history:
        save_figure(curve_figure(history), run_dir / "figures" / "validation_curve.png")
    return metrics


def secondary_process() -> bool:
    """True in a data-parallel process other than global rank 0 (``RANK``, ``LOCAL_RANK`` or ``NODE_RANK``
    set above 0 by Lightning's launcher, torchrun or SLURM)."""
    return any(int(os.environ.get(key) or 0) > 0 for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _start_run_dir(cfg: RunConfig, run_dir: Path, overwrite: bool, resume: bool, precision: str,
                   start_step: int) -> None:
    """Rank 0: (re)create the run directory and write the marker, ``config.yaml`` and ``env.json``."""
    from .hardware import cpu_has_fast_bf16, tune_malloc

    if overwrite and run_dir.is_dir() and not resume:
        shutil.rmtree(run_dir)  # prepare_run_dir checked that it carries our run marker
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RUN_MARKER, "a scenedecomp run directory; `train --overwrite` may delete it\n")
    atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
    write_json(run_dir / "env.json", {**environment(cfg), "precision": precision, "malloc_tuned": tune_malloc(),
                                      "cpu_fast_bf16": cpu_has_fast_bf16()})
    if not resume:
        (run_dir / "history.jsonl").unlink(missing_ok=True)
    else:  # validation rows written after the checkpoint we resume from are redone by this run
        _truncate_history(run_dir / "history.jsonl", start_step)
    remove_stale_temp_files(run_dir / "checkpoints")  # a save that was killed midway


def _truncate_history(path: Path, step: int) -> None:
    """Keep the rows of ``history.jsonl`` up to ``step`` (atomically)."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in rows if json.loads(line).get("step", 0) <= step]
        if len(kept) != len(rows):
            atomic_write_text(path, "".join(line + "\n" for line in kept))


def _make_trainer(cfg: RunConfig, run_dir: Path, precision: str, callbacks: list, quiet: bool):
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    t = cfg.trainer
    return L.Trainer(
        default_root_dir=run_dir,
        max_steps=t.max_steps,
        max_time=timedelta(minutes=t.max_minutes) if t.max_minutes else None,
        max_epochs=-1,
        val_check_interval=t.val_every_n_steps,
        check_val_every_n_epoch=None,
        limit_val_batches=t.val_batches if t.val_batches else 1.0,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every_n_steps,
        precision=precision,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        plugins=[AtomicCheckpointIO()],
        gradient_clip_val=cfg.optim.grad_clip_norm,
        logger=TensorBoardLogger(save_dir=run_dir, name="tensorboard", version=""),
        callbacks=callbacks,
        enable_progress_bar=t.progress_bar and not quiet,
        enable_model_summary=not quiet,
        deterministic=False,
        use_distributed_sampler=False,  # make_loader's samplers shard themselves (ShardSamplers)
    )
