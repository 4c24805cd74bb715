"""Resuming a run exactly: checkpoints written atomically, and the data order and RNG states they carry.

- :class:`AtomicCheckpointIO`: Lightning writes every checkpoint through
  :func:`scenedecomp.safeio.atomic_write_bytes`, so a kill at any moment leaves either the old checkpoint or
  the new one, never half of one.
- :class:`~scenedecomp.data.samplers.ResumableSampler` + :class:`ResumeState`: the training order is a pure
  function of ``(seed, epoch)``; the checkpoint stores the epoch, the batches consumed in it and the RNG
  states, and a resumed run skips the consumed batches and restores the RNGs, so on CPU it continues exactly
  like an uninterrupted run (Lightning alone restarts a mid-epoch loader from the epoch's first batch).
- :class:`ShardSamplers`: tells the samplers their rank under data parallelism.

The divergence guard is :mod:`.divergence`.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ..data.samplers import ResumableSampler
from ..safeio import atomic_write_bytes

RUN_MARKER = ".scenedecomp-run"  # every run directory carries it; --overwrite deletes only such folders


# ----------------------------------------------------------------------------------------------- files


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes ``torch.save`` output through :func:`atomic_write_bytes`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_write_bytes(path, writer=lambda fh: torch.save(checkpoint, fh))


# ----------------------------------------------------------------------------------------------- data order


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


