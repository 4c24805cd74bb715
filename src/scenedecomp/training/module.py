"""One LightningModule for every model: it only speaks the batch and model-output contracts."""

from __future__ import annotations

import logging
import math
from enum import Enum

import lightning as L
import torch
from omegaconf import OmegaConf

from ..config import RunConfig, to_dict
from ..metrics.batch import batch_metrics
from ..models import build_model
from ..models.output import ModelOutput

health_log = logging.getLogger("scenedecomp.health")  # one line per warning, on stderr unless configured


def _plain(value):
    """``value`` with every config choice (an enum, e.g. from ``dataclasses.asdict``) replaced by its name."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


class SceneDecompModule(L.LightningModule):
    """Trains and validates any model that returns a :class:`ModelOutput`.

    Logged scalars: ``train/loss`` and ``train/<term>`` for every loss term; ``val/<metric>`` and
    ``val/loss`` (means over the validation images, NaN images skipped, exact across ranks) every
    validation run.
    """

    def __init__(self, config: dict, in_channels: int = 3, image_size: int = 64,
                 background_labels: tuple[int, ...] = (0,)):
        super().__init__()
        config = _plain(config)  # stored in checkpoints, which must hold plain data only (weights_only reads)
        self.save_hyperparameters()
        self.cfg: RunConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), config))
        self.background_labels = tuple(background_labels)
        self.model = build_model(self.cfg.model, in_channels, image_size)
        self._compiled = False
        self._val_metrics: dict[str, list[torch.Tensor]] = {}
        self._val_health: dict[str, list[torch.Tensor]] = {}
        self.health: dict | None = None  # the last validation's health report (metrics/health.py)
        # the divergence guard (training/divergence.py) that train() runs with: it judges a non-finite loss
        self.divergence_guard = None

    @classmethod
    def from_config(cls, cfg: RunConfig, in_channels: int, image_size: int, background_labels=(0,)):
        return cls(to_dict(cfg), in_channels, image_size, tuple(background_labels))

    def configure_model(self) -> None:
        # nn.Module.compile compiles the model's __call__ in place: parameter names, and so checkpoints,
        # stay the same as in eager mode (a torch.compile wrapper would add an ``_orig_mod`` prefix)
        if self.cfg.trainer.compile and not self._compiled:
            self.model.compile()
            self._compiled = True

    @property
    def eval_num_slots(self) -> int | None:
        return self.cfg.model.eval_num_slots

    def forward(self, image: torch.Tensor, num_slots: int | None = None) -> ModelOutput:
        return self.model(image, num_slots)

    def training_step(self, batch, batch_idx):
        self.model.set_step(self.global_step)
        out = self(batch["image"])
        guard = self.divergence_guard
        if guard is not None and guard.check_loss(self, out):
            return None  # trainer.skip_nonfinite_steps: this step makes no update
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"non-finite loss at step {self.global_step}: {out.loss.item()}")
        b = batch["image"].shape[0]
        self.log("train/loss", out.loss.detach(), prog_bar=True, batch_size=b)
        for name, value in out.loss_terms.items():
            self.log(f"train/{name}", value.detach(), batch_size=b)
        return out.loss

    def on_validation_epoch_start(self) -> None:
        self._val_metrics = {}
        self._val_health = {}
        self.health = None

    def validation_step(self, batch, batch_idx):
        out = self.model(batch["image"], self.eval_num_slots)
        per_image = batch_metrics(batch, out, self.background_labels)
        per_image["loss"] = out.loss.detach().float().expand(batch["image"].shape[0])  # batch mean, per image
        for name, values in per_image.items():
            self._val_metrics.setdefault(name, []).append(values.detach().cpu())
        from ..metrics.health import image_statistics

        stats = image_statistics(out.log_masks, batch["image"], out.extras.get("recon_log_masks"), batch.get("mask"),
                                 self.background_labels)
        for name, values in stats.items():
            self._val_health.setdefault(name, []).append(values.cpu())

    def on_validation_epoch_end(self) -> None:
        """Logs ``val/<metric>``: the mean over every validation image with a defined value. Under data
        parallelism each rank holds a disjoint shard (``ShardSampler``), so per-image sums and counts are
        added across ranks (one all-reduce) before dividing: the same numbers as one process."""
        names = sorted(self._val_metrics)
        totals = torch.zeros(len(names), 2, dtype=torch.float64)
        for i, name in enumerate(names):
            values = torch.cat(self._val_metrics[name]).to(torch.float64)
            valid = values[~torch.isnan(values)]
            totals[i] = torch.stack([valid.sum(), torch.tensor(float(valid.numel()), dtype=torch.float64)])
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
        for name, (total, count) in zip(names, totals.tolist()):
            if count > 0:
                self.log(f"val/{name}", total / count, prog_bar=name in ("fg_ari", "count_accuracy"))
        self._check_health({n: t / c for n, (t, c) in zip(names, totals.tolist()) if c > 0})

    def _check_health(self, means: dict[str, float]) -> None:
        """The health checks on this validation's images (rank 0's shard under data parallelism): warnings go
        to the ``scenedecomp.health`` logger, one line each; :class:`~.callbacks.HistoryCallback` records
        the report in ``history.jsonl`` under ``health``."""
        from ..metrics.health import health_report

        if not self._val_health or getattr(self.trainer, "sanity_checking", False) or not self.trainer.is_global_zero:
            return
        try:
            self.health = health_report({k: torch.cat(v) for k, v in self._val_health.items()}, means)
        except RuntimeError:  # statistics of different shapes (K changed between batches): no report
            self.health = None
            return
        for warning in self.health["warnings"]:
            health_log.warning("step %d: %s", self.global_step, warning["message"])

    def _fused_ok(self) -> bool:
        """Fused Adam needs float parameters on a CPU or CUDA device."""
        return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in self.model.parameters())

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clips the gradients' total norm to ``optim.grad_clip_norm`` (the only clipping the config offers).

        Done here rather than by Lightning's precision plugin, which refuses any clipping beside a fused
        optimiser under mixed precision although bf16 has no gradient scaler to conflict with; fp16 keeps the
        unfused optimiser (:meth:`configure_optimizers`), whose gradients Lightning unscales before this hook.
        """
        if gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)

    def configure_optimizers(self):
        opt_cfg = self.cfg.optim
        groups = self.model.parameter_groups(opt_cfg.lr)
        kwargs = {"lr": opt_cfg.lr, "weight_decay": opt_cfg.weight_decay}
        if opt_cfg.name == "rmsprop":
            optimizer = torch.optim.RMSprop(groups, **kwargs)
        else:  # the fused Adam kernel (CPU and CUDA) is several times faster than the per-tensor loop
            adam = torch.optim.Adam if opt_cfg.name == "adam" else torch.optim.AdamW
            # a fused optimiser unscales fp16 gradients inside its step, after clipping would have seen them
            # scaled; bf16 has no gradient scaler (see configure_gradient_clipping)
            precision = str(getattr(self._trainer, "precision", "32-true")) if self._trainer else "32-true"
            clipping_fp16 = bool(opt_cfg.grad_clip_norm) and precision == "16-mixed"
            optimizer = adam(groups, fused=self._fused_ok() and not clipping_fp16, **kwargs)
        total = max(self.cfg.trainer.max_steps, 1)

        def factor(step: int) -> float:
            warm = min(1.0, (step + 1) / opt_cfg.warmup_steps) if opt_cfg.warmup_steps else 1.0
            if opt_cfg.schedule == "cosine":
                progress = min(1.0, step / total)
                floor = opt_cfg.min_lr_ratio
                return warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
            if opt_cfg.schedule == "exponential":
                return warm * opt_cfg.decay_rate ** (step / opt_cfg.decay_steps)
            return warm

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
