"""Training a run: check everything that can be refused, create the run directory, fit with Lightning,
then evaluate on the test split and draw the figures."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import time
import warnings
from datetime import timedelta
from pathlib import Path

import torch
from lightning.pytorch import Callback as L_Callback

from ..config import ConfigError, RunConfig, to_yaml
from ..errors import Interrupted, RunError, UserError
from ..evaluation.evaluate import evaluate, visualize
from ..hardware import environment
from ..inference.loaders import image_shape, make_loader, open_split
from ..inference.run import read_checkpoint
from ..safeio import atomic_write_text, remove_stale_temp_files, unwritable_reason, write_json
from .divergence import DivergenceError, DivergenceGuard
from .module import SceneDecompModule
from .resume import RUN_MARKER, AtomicCheckpointIO, ResumeState, ShardSamplers


def train(cfg: RunConfig, overwrite: bool = False, resume: bool = False, quiet: bool = False) -> dict:
    """Train ``cfg`` to its step or time budget, then evaluate on the test split and draw figures.

    Everything that can be refused (config, data, Lightning's trainer settings) is checked before the run
    directory is written. A divergence (:class:`~.divergence.DivergenceError`) or a failing DataLoader worker
    becomes a one-line :class:`RunError`. ``quiet`` also silences Lightning's info lines and warnings.
    Returns the test metrics (also written to ``metrics.json``).
    """
    lock = RunLock(Path(cfg.out_dir).expanduser() / f".{cfg.name}.lock")
    with _quiet_lightning(quiet):
        try:
            return _train(cfg, overwrite, resume, quiet, lock)
        except DivergenceError as err:
            raise RunError(str(err)) from None
        except UserError as err:  # one re-raised from a DataLoader worker carries the worker's traceback
            line = _worker_failure(err)
            if line is None:
                raise
            raise RunError(line) from None
        except Exception as err:  # noqa: BLE001 - only DataLoader worker failures are translated
            line = _worker_failure(err)
            if line is None:
                raise
            raise RunError(line) from None
        finally:
            lock.release()


class RunLock:
    """An exclusive ``flock`` on ``<out_dir>/.<name>.lock`` while a process writes the run directory, so that
    a second ``train`` of the same run (``--overwrite`` or ``--resume``) is refused instead of deleting or
    mixing the first one's files. The lock file is removed on release."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self, run_dir: Path) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # the file may be removed by the previous holder between open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunError(f"{run_dir}: another scenedecomp process is training this run; wait for it to "
                               f"end or choose another name=") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                os.write(fd, f"{os.getpid()}\n".encode())
                return
            os.close(fd)
        raise RunError(f"{run_dir}: could not lock the run directory")

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(self.fd)
            self.fd = None


def _worker_failure(err: BaseException) -> str | None:
    """One line for an exception re-raised from a DataLoader worker (its last traceback line), else None."""
    text = str(err)
    if "DataLoader worker" not in text:
        return None
    if "Original Traceback" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        last = lines[-1]
        last = re.sub(r"^scenedecomp(\.\w+)+: ", "", last)  # the exception's qualified class name
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
    if exists and not (overwrite or resume) and aborted_start(run_dir):
        overwrite = True  # a start that ended before its first checkpoint (Ctrl-C, a bad first step) is redone
    if exists and not (overwrite or resume):
        raise RunError(f"{run_dir}: run directory already exists; pass --overwrite, --resume, or another name=")
    if resume and not (run_dir / "checkpoints" / "last.ckpt").is_file():
        raise RunError(f"{run_dir}: nothing to resume (no checkpoints/last.ckpt)")
    if resume:  # refuse a crafted or foreign checkpoint before Lightning unpickles it, and another model
        _check_resume_config(cfg, run_dir, read_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    if exists and overwrite and not resume and not (run_dir / RUN_MARKER).is_file():
        raise RunError(f"{run_dir}: refusing to overwrite a directory that is not a scenedecomp run "
                       f"(no {RUN_MARKER} marker file)")
    problem = unwritable_reason(run_dir)
    if problem:
        raise RunError(f"{run_dir}: run directory {problem}")
    return run_dir


def aborted_start(run_dir: Path) -> bool:
    """True for a run directory of ours that ended before its first checkpoint (nothing to resume or keep)."""
    return (run_dir / RUN_MARKER).is_file() and not (run_dir / "checkpoints" / "last.ckpt").exists() \
        and not (run_dir / "metrics.json").exists()


def _train(cfg: RunConfig, overwrite: bool, resume: bool, quiet: bool, lock: RunLock) -> dict:
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from ..hardware import resolve_precision, tune_malloc
    from ..viz.figures import curve_figure, save_figure

    # a data-parallel worker process (started by Lightning's launcher, torchrun or SLURM) uses the run
    # directory that rank 0 prepares and writes; it only trains
    secondary = secondary_process()
    run_dir = Path(cfg.out_dir).expanduser() / cfg.name if secondary else prepare_run_dir(cfg, overwrite, resume)
    if not secondary and not resume and run_dir.is_dir() and aborted_start(run_dir):
        overwrite = True
    tune_malloc()
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator, cfg.model.name)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    # open everything that can fail before the run directory is touched
    train_set, val_set = open_split(cfg, "train"), open_split(cfg, "val")
    in_channels, image_size = image_shape(train_set, f"{cfg.data.name} train")
    background = tuple(getattr(train_set, "background_labels", (0,)))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        module = SceneDecompModule.from_config(cfg, in_channels, image_size, background)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None
    if resume:  # an edited config.yaml (another K, size or model) is refused before any file is rewritten
        _check_resume(run_dir, module)

    from .callbacks import DecompositionImageCallback, ExponentialWeightAverage, HistoryCallback

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
        interrupt_saver := InterruptCheckpoint(run_dir / "checkpoints" / "last.ckpt"),
    ]
    if t.ema_decay is not None:  # checkpoints then hold the averaged weights as ``state_dict``
        callbacks.append(ExponentialWeightAverage(t.ema_decay, warmup=t.ema_warmup))
    try:  # Lightning checks accelerator/devices/strategy/precision here, before anything is written
        trainer = _make_trainer(cfg, run_dir, precision, callbacks, quiet)
    except Exception as err:  # noqa: BLE001 - MisconfigurationException, ValueError, RuntimeError
        raise ConfigError(f"trainer: {(str(err).strip().splitlines() or [type(err).__name__])[0]}") from None

    start_step = int(read_checkpoint(run_dir / "checkpoints" / "last.ckpt").get("global_step", 0)) if resume else 0
    if not secondary:
        lock.acquire(run_dir)
        _start_run_dir(cfg, run_dir, overwrite, resume, precision, start_step)

    start = time.perf_counter()
    previous_sigint = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(module, train_loader, val_loader,
                    ckpt_path=str(run_dir / "checkpoints" / "last.ckpt") if resume else None, weights_only=True)
    except SystemExit:  # Lightning ends the process after Ctrl-C / SIGTERM (InterruptCheckpoint saved first)
        _restore_signal(previous_sigint)
        saved = run_dir / "checkpoints" / "last.ckpt"
        if interrupt_saver.saved:
            raise Interrupted(f"training interrupted at step {trainer.global_step}; checkpoint saved to {saved}; "
                              f"continue with: scenedecomp train --config {run_dir / 'config.yaml'} --resume") from None
        raise Interrupted(f"training interrupted at step {trainer.global_step}; no checkpoint was saved "
                          f"({interrupt_saver.problem or 'nothing to save'}); rerun to start again") from None
    _restore_signal(previous_sigint)
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


def _restore_signal(handler) -> None:
    """Lightning ignores SIGINT after an interrupt and never restores it; put back the handler from before."""
    with contextlib.suppress(ValueError, TypeError):
        signal.signal(signal.SIGINT, handler if handler is not None else signal.default_int_handler)


def _check_resume_config(cfg: RunConfig, run_dir: Path, state: dict) -> None:
    """``--resume`` continues the same model: its settings and image size must be the checkpoint's."""
    from dataclasses import asdict

    from ..config import config_from_dict

    stored = (state.get("hyper_parameters") or {}).get("config")
    if not isinstance(stored, dict):
        raise RunError(f"{run_dir}: cannot resume: the checkpoint holds no scenedecomp config")
    try:
        trained = config_from_dict(stored)
    except Exception as err:  # noqa: BLE001 - ConfigError, OmegaConf errors: a damaged stored config
        raise RunError(f"{run_dir}: cannot resume: the checkpoint's config is unreadable "
                       f"({str(err).splitlines()[0][:160]})") from None
    now, then = _flat(asdict(cfg.model), "model."), _flat(asdict(trained.model), "model.")
    changed = sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k))
    size = (state.get("hyper_parameters") or {}).get("image_size", trained.data.image_size)
    if cfg.data.image_size != size:
        changed.insert(0, "data.image_size")
        now["data.image_size"], then["data.image_size"] = cfg.data.image_size, size
    if changed:
        key = changed[0]
        raise RunError(f"{run_dir}: cannot resume: the config changes {key} ({then.get(key)} in the checkpoint, "
                       f"{now.get(key)} now)" + (f" and {len(changed) - 1} more setting(s)" if len(changed) > 1
                                                  else "") + "; resume with the run's own settings")


def _flat(tree: dict, prefix: str) -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def _check_resume(run_dir: Path, module) -> None:
    """The checkpoint to resume must fit the config's model exactly (same keys and shapes)."""
    state = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    stored = (state.get("hyper_parameters") or {}).get("config") or {}
    trained_size = (state.get("hyper_parameters") or {}).get("image_size")
    if trained_size is not None and trained_size != module.hparams.get("image_size"):
        raise RunError(f"{run_dir}: cannot resume: the checkpoint was trained on {trained_size}x{trained_size} images "
                       f"but the config says data.image_size: {module.hparams.get('image_size')}")
    if isinstance(stored, dict) and (stored.get("model") or {}).get("name") not in (None, module.cfg.model.name):
        raise RunError(f"{run_dir}: cannot resume: the checkpoint holds a {stored['model']['name']} model but the "
                       f"config says model.name: {module.cfg.model.name}")
    try:
        module.load_state_dict(state["state_dict"], strict=True)
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), "the weights differ")
        raise RunError(f"{run_dir}: cannot resume: the checkpoint does not fit the config's model "
                       f"({detail[:200]})") from None


class InterruptCheckpoint(L_Callback):
    """On Ctrl-C / SIGTERM (Lightning's ``on_exception`` with KeyboardInterrupt) rank 0 saves the full
    training state to ``last.ckpt``, so ``--resume`` continues from the step reached."""

    def __init__(self, path: Path):
        self.path = path
        self.saved = False
        self.problem: str | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt) or not trainer.is_global_zero:
            return
        try:
            trainer.save_checkpoint(self.path, weights_only=False)
            self.saved = True
        except Exception as err:  # noqa: BLE001 - report, do not mask the interrupt
            self.problem = str(err).splitlines()[0][:160] if str(err) else type(err).__name__


def secondary_process() -> bool:
    """True in a data-parallel process other than global rank 0 (``RANK``, ``LOCAL_RANK``, ``NODE_RANK`` or
    ``SLURM_PROCID`` set above 0 by Lightning's launcher, torchrun or SLURM)."""
    return any(int(os.environ.get(key) or 0) > 0 for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _start_run_dir(cfg: RunConfig, run_dir: Path, overwrite: bool, resume: bool, precision: str,
                   start_step: int) -> None:
    """Rank 0: (re)create the run directory and write the marker, ``config.yaml`` and ``env.json``."""
    from ..hardware import cpu_has_fast_bf16, tune_malloc

    if overwrite and run_dir.is_dir() and not resume:
        shutil.rmtree(run_dir)  # prepare_run_dir checked that it carries our run marker
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RUN_MARKER, "a scenedecomp run directory; `train --overwrite` may delete it\n")
    atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
    write_json(run_dir / "env.json", {**environment(cfg), "precision": precision, "malloc_tuned": tune_malloc(),
                                      "cpu_fast_bf16": cpu_has_fast_bf16()})
    if not resume:
        (run_dir / "history.jsonl").unlink(missing_ok=True)
    else:  # validation rows and step checkpoints written after the checkpoint we resume from are redone
        _truncate_history(run_dir / "history.jsonl", start_step)
        _remove_later_checkpoints(run_dir / "checkpoints", start_step)
    remove_stale_temp_files(run_dir / "checkpoints")  # a save that was killed midway


def _remove_later_checkpoints(folder: Path, step: int) -> None:
    """Delete ``step*.ckpt`` files of steps after ``step``: a run killed between writing a step checkpoint
    and ``last.ckpt`` left them, and the resumed run writes those steps again (Lightning would otherwise
    name the new files ``...-v1.ckpt``)."""
    for path in folder.glob("step*.ckpt"):
        digits = path.stem[4:].split("-")[0]
        if digits.isdigit() and int(digits) > step:
            path.unlink(missing_ok=True)


def _truncate_history(path: Path, step: int) -> None:
    """Keep the rows of ``history.jsonl`` up to ``step`` (atomically)."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in rows if _row_step(line) <= step]
        if len(kept) != len(rows):
            atomic_write_text(path, "".join(line + "\n" for line in kept))


def _row_step(line: str) -> float:
    """The step of a ``history.jsonl`` row; a damaged row counts as after every step (it is dropped)."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return float("inf")
    step = row.get("step", 0) if isinstance(row, dict) else None
    return step if isinstance(step, int | float) else float("inf")


def _make_trainer(cfg: RunConfig, run_dir: Path, precision: str, callbacks: list, quiet: bool):
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from ..hardware import resolve_devices

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
        devices=resolve_devices(t.devices, t.accelerator),
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
