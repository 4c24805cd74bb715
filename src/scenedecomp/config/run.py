"""Run configuration: typed dataclasses, YAML presets and dotted ``key=value`` overrides.

:class:`RunConfig` assembles the sections of a run: ``data`` and ``optim`` / ``trainer`` (defined here)
and ``model`` (:class:`scenedecomp.models.ModelConfig`, which assembles each model's own settings).
A preset is a YAML file in the package's ``configs/`` folder (``src/scenedecomp/configs``, shipped in the
wheel) or any path. It is merged onto the typed schema, so an unknown key, a value of the wrong type or
an unknown choice is refused with one line naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import BadConfig
from ..models import ModelConfig
from .presets import CONFIG_DIR, PresetError, list_presets, preset_layers, preset_path

__all__ = ["CONFIG_DIR", "ConfigError", "DataConfig", "OptimConfig", "RunConfig", "TrainerConfig", "config_from_dict",
           "list_presets", "load_config", "preset_path", "to_dict", "to_yaml", "validate"]


class ConfigError(BadConfig, ValueError):
    """A preset or override is invalid (one-line message)."""


@dataclass
class DataConfig:
    name: str = "multi_sprites"  # registered dataset name or a path (.h5 file, image directory)
    image_size: int = 64
    num_train: int | None = None  # None: the dataset's default size
    num_val: int | None = None
    num_test: int | None = None
    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # extra dataset-specific options


@dataclass
class OptimConfig:
    name: str = "rmsprop"  # rmsprop | adam | adamw
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip_norm: float | None = None
    schedule: str = "constant"  # constant | cosine | exponential
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine: final lr = lr * min_lr_ratio
    decay_rate: float = 0.5  # exponential: lr multiplied by this every decay_steps
    decay_steps: int = 100_000


@dataclass
class TrainerConfig:
    max_steps: int = 1_000_000
    max_minutes: float | None = None  # wall-clock budget; training stops cleanly when it runs out
    val_every_n_steps: int = 1000
    val_batches: int | None = None  # limit validation to this many batches
    checkpoint_every_n_steps: int = 5000
    log_every_n_steps: int = 50
    image_log_every_n_steps: int = 1000
    # auto: bf16-mixed on CPUs with AMX/AVX512-BF16 and bf16-capable GPUs (MONet), else 32-true;
    # or any Lightning precision string (see hardware.py)
    precision: str = "auto"
    accelerator: str = "auto"
    devices: str = "auto"  # "auto", a count ("2") or a list ("0,1"); per node (see docs/scale-out.md)
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ddp_spawn | fsdp | ... (any Lightning strategy name)
    skip_nonfinite_steps: bool = False  # a NaN/inf loss or gradient skips the step instead of stopping
    # exponential moving average of the weights (Lightning's EMAWeightAveraging), e.g. 0.999: validation,
    # checkpoints' ``state_dict`` and the final model use the averaged weights. None: off
    ema_decay: float | None = None
    # EMA warm-up: the n-th update uses decay min(ema_decay, (1 + n) / (10 + n)), so early averages are not
    # dominated by the first steps' weights (without it they still make up 0.999**n of a 0.999 average)
    ema_warmup: bool = False
    compile: bool = False
    num_threads: int | None = None  # torch intra-op threads (None: torch's default)
    progress_bar: bool = True


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    out_dir: str = "runs"  # the run directory is <out_dir>/<name>
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    notes: str = ""  # free text: deviations from the paper, provenance


def _merge(base: DictConfig, other: Any, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{origin}: {_describe(err)}") from None


def _describe(err: OmegaConfBaseException) -> str:
    msg = str(err).splitlines()[0]
    key = getattr(err, "full_key", None)
    if "not in struct" in msg or "Key '" in msg and "not" in msg:
        return f"unknown config key {key!r}" if key else msg
    return f"{key}: {msg}" if key else msg


def load_config(preset: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Build a typed :class:`RunConfig` from a preset plus ``dotted.key=value`` overrides."""
    cfg = OmegaConf.structured(RunConfig)
    if preset is not None:
        try:
            layers = preset_layers(preset_path(preset))
        except PresetError as err:
            raise ConfigError(str(err)) from None
        for path, settings in layers:
            cfg = _merge(cfg, settings, str(path))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like dotted.key=value")
        try:
            dotted = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as err:
            raise ConfigError(f"override {item!r}: {_describe(err)}") from None
        cfg = _merge(cfg, dotted, f"override {item!r}")
    run: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate(run)
    return run


def validate(cfg: RunConfig) -> None:
    """Semantic checks beyond types; raise :class:`ConfigError` with one line."""
    m = cfg.model
    if m.num_slots < 2:  # AIR: K = N + 1 as well
        raise ConfigError(f"model.num_slots: K must be at least 2, got {m.num_slots}")
    if m.eval_num_slots is not None and m.eval_num_slots < 2:
        raise ConfigError(f"model.eval_num_slots: K must be at least 2, got {m.eval_num_slots}")
    if m.loss.geco_mse_target is not None and not (m.loss.geco_mse_target > 0 and m.loss.geco_rate > 0
                                                   and 0 <= m.loss.geco_ema < 1 and m.loss.geco_max_weight >= 1
                                                   and (m.loss.geco_min_weight is None
                                                        or 0 < m.loss.geco_min_weight <= m.loss.geco_max_weight)):
        raise ConfigError("model.loss.geco_*: need geco_mse_target > 0, geco_rate > 0, 0 <= geco_ema < 1 and "
                          "geco_max_weight >= 1, 0 < geco_min_weight <= geco_max_weight")
    floor = m.component.log_mask_floor
    if floor is not None and not (math.isfinite(floor) and floor < 0):
        raise ConfigError(f"model.component.log_mask_floor: a log mask floor must be finite and below 0, got {floor}")
    if m.loss.beta_warmup_steps < 0 or m.loss.beta_warmup_start < 0:
        raise ConfigError("model.loss.beta_warmup_steps and beta_warmup_start must be >= 0, got "
                          f"{m.loss.beta_warmup_steps} and {m.loss.beta_warmup_start}")
    if not m.loss.beta_initial >= 0:
        raise ConfigError(f"model.loss.beta_initial must be >= 0, got {m.loss.beta_initial}")
    if not m.attention.trunk_lr_scale > 0:
        raise ConfigError(f"model.attention.trunk_lr_scale must be positive, got {m.attention.trunk_lr_scale}")
    if m.attention.trunk_lr_scale != 1 and m.attention.type == "unet_recurrent":
        raise ConfigError("model.attention.trunk_lr_scale applies to the one-pass ResNet attention (type resnet "
                          "or resnet_skip); the recurrent U-Net has no trunk")
    if m.air.max_steps < 1:
        raise ConfigError(f"model.air.max_steps: N must be at least 1, got {m.air.max_steps}")
    if m.name == "slot_attention":
        _validate_slot_attention(cfg)
    if cfg.optim.name not in ("rmsprop", "adam", "adamw"):
        raise ConfigError(f"optim.name: unknown optimiser {cfg.optim.name!r}")
    if cfg.optim.schedule not in ("constant", "cosine", "exponential"):
        raise ConfigError(f"optim.schedule: unknown {cfg.optim.schedule!r}")
    _refuse_nan(cfg, "")
    if not 0 < cfg.optim.lr < float("inf"):
        raise ConfigError(f"optim.lr must be a positive number, got {cfg.optim.lr}")
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed must be in [0, 2**32), got {cfg.seed}")
    _check_bounds(cfg)
    from ..hardware import PRECISIONS

    if str(cfg.trainer.precision) not in PRECISIONS:
        raise ConfigError(f"trainer.precision: unknown {cfg.trainer.precision!r}; "
                          f"expected one of {', '.join(PRECISIONS)}")
    if cfg.trainer.ema_decay is not None and not 0 < cfg.trainer.ema_decay < 1:
        raise ConfigError(f"trainer.ema_decay must be in (0, 1), got {cfg.trainer.ema_decay}")
    if cfg.data.batch_size < 1:
        raise ConfigError("data.batch_size must be at least 1")
    if cfg.data.image_size < 8:
        raise ConfigError(f"data.image_size must be at least 8, got {cfg.data.image_size}")
    _validate_ranges(cfg)


def _refuse_nan(section, prefix: str) -> None:
    """No setting may be NaN (``optim.lr=nan`` would train nothing and fail late)."""
    import dataclasses

    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _refuse_nan(value, f"{prefix}{f.name}.")
        elif isinstance(value, float) and value != value:
            raise ConfigError(f"{prefix}{f.name} must be a number, got nan")


def _check_bounds(cfg: RunConfig) -> None:
    """Upper bounds that keep a typo (``model.num_slots=1000000``) from exhausting memory."""
    from ..safeio import MAX_BATCH_SIZE, MAX_IMAGE_SIZE, MAX_SLOTS

    bounds = {"model.num_slots": (cfg.model.num_slots, MAX_SLOTS),
              "model.eval_num_slots": (cfg.model.eval_num_slots, MAX_SLOTS),
              "model.air.max_steps": (cfg.model.air.max_steps, MAX_SLOTS - 1),
              "data.image_size": (cfg.data.image_size, MAX_IMAGE_SIZE),
              "data.batch_size": (cfg.data.batch_size, MAX_BATCH_SIZE),
              "data.eval_batch_size": (cfg.data.eval_batch_size, MAX_BATCH_SIZE)}
    for key, (value, high) in bounds.items():
        if value is not None and value > high:
            raise ConfigError(f"{key}: {value} is above the limit of {high}")


def _validate_slot_attention(cfg: RunConfig) -> None:
    """Slot Attention's layer lists fit together and the decoder can reach the image size."""
    sa, size = cfg.model.slot_attention, cfg.data.image_size
    counts = {"model.slot_attention.iterations": sa.iterations, "model.slot_attention.mlp_hidden": sa.mlp_hidden,
              "model.slot_attention.feature_mlp_hidden": sa.feature_mlp_hidden,
              "model.slot_attention.encoder_kernel": sa.encoder_kernel,
              "model.slot_attention.decoder_kernel": sa.decoder_kernel,
              "model.slot_attention.decoder_out_kernel": sa.decoder_out_kernel,
              **{f"model.slot_attention.encoder_channels[{i}]": v for i, v in enumerate(sa.encoder_channels)},
              **{f"model.slot_attention.encoder_strides[{i}]": v for i, v in enumerate(sa.encoder_strides)},
              **{f"model.slot_attention.decoder_channels[{i}]": v for i, v in enumerate(sa.decoder_channels)}}
    for key, value in counts.items():
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")
    if not sa.encoder_channels or len(sa.encoder_strides) != len(sa.encoder_channels):
        raise ConfigError(f"model.slot_attention.encoder_strides: need one stride per encoder layer "
                          f"({len(sa.encoder_channels)}), got {len(sa.encoder_strides)}")
    if sa.decoder_kernel % 2 == 0 or sa.decoder_out_kernel % 2 == 0 or sa.encoder_kernel % 2 == 0:
        raise ConfigError("model.slot_attention: encoder_kernel, decoder_kernel and decoder_out_kernel must be odd")
    if not 0 <= sa.eps < 1:
        raise ConfigError(f"model.slot_attention.eps must be in [0, 1), got {sa.eps}")
    r = sa.decoder_broadcast or size
    ups = 0
    while r * 2**ups < size:
        ups += 1
    if r < 1 or r * 2**ups != size:
        raise ConfigError(f"model.slot_attention.decoder_broadcast: data.image_size {size} is not {r} times a "
                          f"power of 2")
    if len(sa.decoder_channels) < ups:
        raise ConfigError(f"model.slot_attention.decoder_channels: {len(sa.decoder_channels)} layers cannot "
                          f"upsample {r}x{r} to {size}x{size} (one stride-2 layer per doubling: {ups})")


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _validate_ranges(cfg: RunConfig) -> None:
    """Numbers that must be positive (or non-negative) and names Lightning accepts; one line each."""
    t, d, m = cfg.trainer, cfg.data, cfg.model
    if not cfg.name or cfg.name.strip() in (".", "..") or "\0" in cfg.name:
        raise ConfigError(f"name: {cfg.name!r} is not a usable run name")
    if t.accelerator not in ACCELERATORS:
        raise ConfigError(f"trainer.accelerator: unknown {t.accelerator!r}; expected one of "
                          f"{', '.join(ACCELERATORS)}")
    positive = {"trainer.max_steps": t.max_steps, "trainer.val_every_n_steps": t.val_every_n_steps,
                "trainer.checkpoint_every_n_steps": t.checkpoint_every_n_steps,
                "trainer.log_every_n_steps": t.log_every_n_steps, "trainer.num_nodes": t.num_nodes,
                "model.latent_dim": m.latent_dim, "model.air.patch_size": m.air.patch_size,
                "model.air.lstm_hidden": m.air.lstm_hidden, "model.air.what_dim": m.air.what_dim}
    optional_positive = {"trainer.max_minutes": t.max_minutes, "trainer.val_batches": t.val_batches,
                         "trainer.num_threads": t.num_threads, "data.eval_batch_size": d.eval_batch_size,
                         "data.num_train": d.num_train, "data.num_val": d.num_val, "data.num_test": d.num_test,
                         "optim.grad_clip_norm": cfg.optim.grad_clip_norm}
    positive.update({k: v for k, v in optional_positive.items() if v is not None})
    positive.update({"model.loss.sigma_bg": m.loss.sigma_bg, "model.loss.sigma_fg": m.loss.sigma_fg,
                     "model.air.likelihood_sd": m.air.likelihood_sd, "optim.decay_steps": cfg.optim.decay_steps})
    for key, value in positive.items():
        if not value > 0 or value != value or value == float("inf"):
            raise ConfigError(f"{key} must be a positive number, got {value}")
    non_negative = {"data.num_workers": d.num_workers, "trainer.image_log_every_n_steps": t.image_log_every_n_steps,
                    "model.loss.beta": m.loss.beta, "model.loss.gamma": m.loss.gamma,
                    "optim.weight_decay": cfg.optim.weight_decay, "optim.warmup_steps": cfg.optim.warmup_steps}
    for key, value in non_negative.items():
        if not value >= 0 or value == float("inf"):
            raise ConfigError(f"{key} must be >= 0, got {value}")


def to_yaml(cfg: RunConfig) -> str:
    """The YAML of ``config.yaml`` (choices written by name); :func:`load_config` reads it back."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """``cfg`` as plain data (choices as strings), as stored in a checkpoint's hyper-parameters."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)  # type: ignore[return-value]


def config_from_dict(stored: dict) -> RunConfig:
    """The :class:`RunConfig` a checkpoint stores (a plain dict), checked like a preset."""
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), stored))
    validate(cfg)
    return cfg
