"""Callbacks: the validation history (metrics vs wall-clock) and decomposition images in TensorBoard."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging


class HistoryCallback(L.Callback):
    """Appends ``{step, seconds, images_per_s, <val metrics>}`` to ``<run_dir>/history.jsonl`` after each
    validation.

    ``seconds`` is training wall-clock since the start of the run (validation time included), so the
    file is the metric-vs-time curve of the run; a resumed run continues the clock from its checkpoint
    (the callback's state in the checkpoint). ``images_per_s`` is the training throughput since the
    previous row (training images over wall-clock, validation time excluded).
    """

    def __init__(self, path: Path, batch_size: int):
        self.path = Path(path)
        self.batch_size = batch_size
        self.start = None
        self._mark: tuple[int, float] | None = None  # (step, clock) at the end of the last validation
        self._val_seconds = 0.0
        self._val_start = 0.0
        self.offset = 0.0  # seconds of the run before this process (restored from a checkpoint)

    def on_fit_start(self, trainer, pl_module):
        self.start = time.perf_counter()
        self._mark = (trainer.global_step, self.start)
        # a resumed run continues the same file

    def seconds(self) -> float:
        """Training wall-clock of the run so far (0 before ``fit`` starts)."""
        return self.offset + (time.perf_counter() - self.start if self.start is not None else 0.0)

    def state_dict(self) -> dict:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.offset = float(state_dict.get("seconds", 0.0))

    def on_validation_start(self, trainer, pl_module):
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        now = time.perf_counter()
        row = {"step": trainer.global_step, "seconds": round(self.offset + now - self.start, 2)}
        step0, clock0 = self._mark
        train_seconds = (self._val_start or now) - clock0
        if trainer.global_step > step0 and train_seconds > 0:
            row["images_per_s"] = round((trainer.global_step - step0) * self.batch_size * trainer.world_size
                                        / train_seconds, 1)
        self._mark = (trainer.global_step, now)
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/"):
                row[key[4:]] = float(value)
        health = getattr(pl_module, "health", None)
        if health is not None:  # metrics/health.py: measured values and warnings of this validation
            row["health"] = health
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


class DecompositionImageCallback(L.Callback):
    """Every ``every_n_steps`` training steps, logs a decomposition figure of a fixed batch to TensorBoard
    (and, for models that report ``boxes``, the AIR box figure)."""

    def __init__(self, images: torch.Tensor, every_n_steps: int):
        self.images = images
        self.every = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if self.every <= 0 or step % self.every or not trainer.is_global_zero:
            return
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_figure"):
            return
        from ..viz.figures import boxes_figure, decomposition_figure

        was_training = pl_module.model.training
        pl_module.model.eval()
        with torch.no_grad():
            out = pl_module.model(self.images.to(pl_module.device), pl_module.eval_num_slots)
        pl_module.model.train(was_training)
        out = out.detach().cpu()
        experiment.add_figure("decomposition", decomposition_figure(self.images, out), step)
        if "boxes" in out.extras:  # AIR: one box per present object and the inferred count
            experiment.add_figure("boxes", boxes_figure(self.images, out, out.extras["boxes"]), step)


def ema_multi_avg_fn(decay: float, warmup: bool = False):
    """``multi_avg_fn`` for :class:`torch.optim.swa_utils.AveragedModel`: an exponential moving average of all
    floating-point tensors at once (one foreach lerp), with the decay ``decay`` or, with ``warmup``,
    ``min(decay, (1 + n) / (10 + n))`` at the ``n``-th update (``n`` = updates so far), which follows the early
    weights instead of holding the untrained ones. Integer buffers (BatchNorm's batch count) take the current
    value.

    ``(averaged list, current list, n) -> None``, updating the averaged tensors in place.
    """

    def multi_avg_fn(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n)) if warmup else decay
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return multi_avg_fn


class ExponentialWeightAverage(WeightAveraging):
    """The weights' exponential moving average (:func:`ema_multi_avg_fn`), updated after every optimiser step;
    what is validated, tested and checkpointed as ``state_dict``.

    Lightning's ``EMAWeightAveraging`` updates tensor by tensor: ~0.08 s a step for a 21M-parameter model on one
    thread, against ~0.01 s here (``benchmarks/update_step.py``). The state keys are those of the callbacks used
    before (``EMAWeightAveraging``, or ``WeightAveraging`` with the warm-up), so earlier checkpoints resume.
    """

    def __init__(self, decay: float, warmup: bool = False):
        super().__init__(use_buffers=True, multi_avg_fn=ema_multi_avg_fn(decay, warmup))
        self._state_key = "WeightAveraging" if warmup else "EMAWeightAveraging"

    @property
    def state_key(self) -> str:
        return self._state_key
