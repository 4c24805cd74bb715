"""Run-time safety of training: atomic files, resumable data order and RNG, and the divergence guard.

- :func:`atomic_write_bytes` / :func:`atomic_write_text` and :class:`AtomicCheckpointIO`: every file is
  written to a temp file in the same folder, fsynced, given the umask's mode and renamed over the target,
  so a kill at any moment leaves either the old file or the new one (never half a checkpoint).
- :class:`ResumableSampler` + :class:`ResumeState`: the training order is a pure function of
  ``(seed, epoch)``; the checkpoint stores the epoch, the batches consumed in it and the RNG states, and a
  resumed run skips the consumed batches and restores the RNGs, so on CPU it continues exactly like an
  uninterrupted run (Lightning alone restarts a mid-epoch loader from the epoch's first batch).
- :class:`DivergenceGuard`: a non-finite loss term or gradient stops training with one line naming the
  step and the term (or parameter), writes the offending batch's dataset indices, and leaves the last good
  checkpoint in place; with ``trainer.skip_nonfinite_steps`` the step is skipped instead (no parameter
  update) and recorded in ``skipped_steps.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch.utils.data import Sampler

RUN_MARKER = ".scenedecomp-run"  # every run directory carries it; --overwrite deletes only such folders


# ----------------------------------------------------------------------------------------------- files
def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | None = None, writer=None) -> Path:
    """Write ``data`` (or whatever ``writer(fileobj)`` writes) to ``path`` atomically, umask mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if writer is not None:
                writer(fh)
            else:
                fh.write(data or b"")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` (which may not exist yet) could not be created and written to, or None if it can.

    Probes with a real write in ``folder`` or its first existing parent (permission bits say nothing for
    root or read-only file systems) and creates nothing that stays.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        return "exists and is not a directory"
    probe_dir = next((p for p in [folder, *folder.parents] if p.exists()), Path.cwd())
    if not probe_dir.is_dir():
        return f"cannot be created ({probe_dir} is not a directory)"
    try:
        fd, probe = tempfile.mkstemp(prefix=".scenedecomp-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return f"is not writable ({probe_dir}: {err.strerror or err})"
    return None


def remove_stale_temp_files(folder: Path) -> int:
    """Delete temp files left by a write that was killed midway (``.<name>.<random>.tmp``)."""
    removed = 0
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes ``torch.save`` output through :func:`atomic_write_bytes`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_write_bytes(path, writer=lambda fh: torch.save(checkpoint, fh))


# ----------------------------------------------------------------------------------------------- data order
class ResumableSampler(Sampler[int]):
    """Shuffles ``num_items`` indices in an order that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before each epoch. :meth:`resume_at` makes the next iteration start
    after ``consumed_batches`` batches of ``batch_size``; :meth:`batch_indices` returns the dataset
    indices of any batch, so a failing batch can be named after the fact.

    Under data parallelism (:meth:`set_shard`, called once the trainer knows its rank) rank ``r`` of ``W``
    takes every ``W``-th index of the epoch's order starting at ``r``, cut to ``num_items // W`` so that
    every rank runs the same number of steps; ``batch_size`` and the resume position are per rank.
    """

    def __init__(self, num_items: int, seed: int, batch_size: int):
        self.num_items, self.seed, self.batch_size = int(num_items), int(seed), int(batch_size)
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self._skip = 0

    def set_shard(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = int(rank), int(world_size)

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's indices for ``epoch`` (all of them when there is one rank)."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        full = torch.randperm(self.num_items, generator=g)
        return full[self.rank::self.world_size][:len(self)] if self.world_size > 1 else full

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, consumed_batches: int) -> None:
        self.epoch = int(epoch)
        self._skip = int(consumed_batches) * self.batch_size

    def batch_indices(self, epoch: int, batch_idx: int) -> list[int]:
        start = batch_idx * self.batch_size
        return self.order(epoch)[start:start + self.batch_size].tolist()

    def __iter__(self):
        skip, self._skip = self._skip, 0
        yield from self.order(self.epoch)[skip:].tolist()

    def __len__(self) -> int:
        return self.num_items // self.world_size


class ShardSampler(Sampler[int]):
    """Evaluation order ``0..num_items-1`` split across ranks without padding: rank ``r`` of ``W`` reads
    indices ``r, r+W, r+2W, ...``, so every image is evaluated exactly once (ranks may differ by one
    image), and sums of per-image metrics over the ranks equal the single-process sums."""

    def __init__(self, num_items: int):
        self.num_items = int(num_items)
        self.rank, self.world_size = 0, 1

    def set_shard(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = int(rank), int(world_size)

    def __iter__(self):
        yield from range(self.rank, self.num_items, self.world_size)

    def __len__(self) -> int:
        return len(range(self.rank, self.num_items, self.world_size))


class ShardSamplers(L.Callback):
    """Tells the samplers of a run (training and validation) this process' rank once the trainer knows it
    (the trainer is built with ``use_distributed_sampler=False``, so Lightning does not wrap them)."""

    def __init__(self, *samplers):
        self.samplers = samplers

    def setup(self, trainer, pl_module, stage: str) -> None:
        for sampler in self.samplers:
            sampler.set_shard(trainer.global_rank, trainer.world_size)


def capture_rng() -> dict:
    """torch (CPU and CUDA), numpy and Python RNG states as plain tensors and numbers (``weights_only``-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": version, "internal": list(internal), "gauss": py_gauss}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumeState(L.Callback):
    """Saves the data position (epoch, batches consumed) and the RNG states in every checkpoint, and
    restores them on ``--resume`` (RNGs just before the first resumed batch)."""

    def __init__(self, sampler: ResumableSampler):
        self.sampler = sampler
        self.epoch = 0
        self.consumed = 0
        self._pending_rng: dict | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch, self.consumed = trainer.current_epoch, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.epoch, self.consumed = trainer.current_epoch, batch_idx + 1

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed_batches": self.consumed, "rng": capture_rng()}

    def load_state_dict(self, state: dict) -> None:
        epoch, consumed = int(state["epoch"]), int(state["consumed_batches"])
        per_epoch = max(len(self.sampler) // self.sampler.batch_size, 1)  # this rank's batches (drop_last)
        if consumed >= per_epoch:  # saved after an epoch's last batch: the next epoch starts
            epoch, consumed = epoch + 1, 0
        self.epoch, self.consumed = epoch, consumed
        self.sampler.resume_at(epoch, consumed)
        self._pending_rng = state.get("rng")

    def on_train_start(self, trainer, pl_module) -> None:
        if self._pending_rng is not None:
            restore_rng(self._pending_rng)
            self._pending_rng = None


# ----------------------------------------------------------------------------------------------- divergence
class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or gradient (one-line message)."""


class DivergenceGuard(L.Callback):
    """Checks every training step's loss terms (:meth:`check_loss`, called from ``training_step``) and
    gradients (before the optimiser step). Stops with :class:`DivergenceError` after writing
    ``<run_dir>/nonfinite_batch.json``, or with ``skip=True`` skips the step and appends to
    ``<run_dir>/skipped_steps.jsonl``."""

    def __init__(self, run_dir: Path, sampler: ResumableSampler | None, skip: bool = False):
        self.run_dir = Path(run_dir)
        self.sampler = sampler
        self.skip = skip
        self.skipped = 0
        self._where: tuple[int, int] = (0, 0)  # epoch, batch_idx of the current batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._where = (trainer.current_epoch, batch_idx)

    def _report(self, step: int, what: str, value: float) -> bool:
        epoch, batch_idx = self._where
        indices = self.sampler.batch_indices(epoch, batch_idx) if self.sampler is not None else None
        row = {"step": step, "epoch": epoch, "batch_idx": batch_idx, "term": what,
               "value": None if math.isnan(value) else str(value), "dataset_indices": indices}
        if self.skip:
            self.skipped += 1
            with (self.run_dir / "skipped_steps.jsonl").open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"scenedecomp: warning: step {step}: non-finite {what} ({value}); step skipped "
                  f"(trainer.skip_nonfinite_steps)", file=sys.stderr)
            return True
        target = atomic_write_text(self.run_dir / "nonfinite_batch.json", json.dumps(row, indent=2) + "\n")
        raise DivergenceError(f"step {step}: non-finite {what} ({value}); training stopped, the last good "
                              f"checkpoint is kept, the batch's dataset indices are in {target} (set "
                              f"trainer.skip_nonfinite_steps=true to skip such steps)")

    def check_loss(self, pl_module, out) -> bool:
        """True if the step must be skipped; raises :class:`DivergenceError` in stop mode."""
        if torch.isfinite(out.loss):
            return False
        bad = [(name, v) for name, v in out.loss_terms.items() if not torch.isfinite(v).all()]
        name, value = bad[0] if bad else ("loss", out.loss)
        what = f"loss term {name!r}" if bad else "loss"
        return self._report(pl_module.global_step, what, float(value.detach().float().sum()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        for name, p in pl_module.named_parameters():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                self._report(trainer.global_step, f"gradient of {name} (loss finite)", float("nan"))
                for group in optimizer.param_groups:  # skip mode: no parameter update in this step
                    for q in group["params"]:
                        q.grad = None
                return
