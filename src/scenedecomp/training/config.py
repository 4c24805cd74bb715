"""Run configuration: typed dataclasses, YAML presets and dotted ``key=value`` overrides.

A preset is a YAML file in the package's ``configs/`` folder (``src/scenedecomp/configs``, shipped in the
wheel) or any path. It is merged onto the typed schema below, so an unknown key or a value of the wrong
type is refused with one line naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
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
class AttentionConfig:
    # unet_recurrent (MONet) | resnet (MONet-RN50) | resnet_skip (MONet-RN50*)
    type: str = "unet_recurrent"
    channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64, 64])  # U-Net block widths
    mlp_hidden: list[int] = field(default_factory=lambda: [128, 128])  # U-Net bottleneck MLP
    backbone: str = "resnet50"
    pretrained: str | None = None  # local state-dict file or torchvision weights name
    mask_normalization: str = "stick_breaking"  # stick_breaking | softmax (one-pass attention)
    padding: str = "zeros"  # U-Net 3x3 conv padding: zeros (paper) | replicate (no border signature)
    downsample: str = "nearest"  # U-Net x0.5 resize: nearest (paper; keeps even rows/columns) | area (2x2 mean)


@dataclass
class ComponentConfig:
    encoder_channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64])
    encoder_hidden: int = 256
    decoder_channels: int = 32
    decoder_layers: int = 4
    output_activation: str = "sigmoid"  # sigmoid | none
    channels_last: bool = True  # broadcast decoder memory layout (speed only: the same computation)


@dataclass
class LossConfig:
    sigma_bg: float = 0.09
    sigma_fg: float = 0.11
    beta: float = 0.5
    gamma: float = 0.5
    beta_warmup_steps: int = 0  # beta rises linearly from 0 over these training steps (0: constant beta)
    likelihood: str = "per_pixel"  # per_pixel | per_channel (see models/monet.py)
    # GECO (Rezende & Viola 2018, as in GENESIS): weight the NLL by an adaptive lambda that grows while the
    # training reconstruction MSE (moving average) is above this target and shrinks below it. None: off.
    geco_mse_target: float | None = None
    geco_rate: float = 0.01  # lambda *= exp(rate * (mse_ema / target - 1)) per step
    geco_ema: float = 0.99  # moving-average factor of the measured MSE
    geco_max_weight: float = 16.0  # lambda is kept in [geco_min_weight, geco_max_weight]
    # lower bound of lambda (None: 1 / geco_max_weight); 1.0 hands the loss back to the paper's balance once
    # the target is met instead of weighting the KL terms up
    geco_min_weight: float | None = None


@dataclass
class AirConfig:
    max_steps: int = 3
    lstm_hidden: int = 256
    patch_size: int = 28
    what_dim: int = 50
    what_hidden: int = 200
    decoder_bias: float = -2.0
    likelihood_sd: float = 0.3
    z_pres_prior: str = "bernoulli"  # bernoulli | geometric
    z_pres_prob: float = 0.01
    z_pres_prob_start: float | None = None  # annealing start (geometric/bernoulli)
    z_pres_anneal_steps: int = 0
    z_where_prior_scale_mean: float = 3.0
    z_where_prior_scale_sd: float = 0.2
    baseline_hidden: int = 256
    baseline_lr: float = 1e-3
    baseline_pool: int = 2  # the baseline reads the image average-pooled by this factor
    baseline_normalize: bool = True  # NVIL-style running centring/scaling of the baseline's target
    z_pres_init: float = 0.9  # initial p_pres of the first step
    z_pres_init_later: float | None = 0.2  # initial p_pres of later steps (None: same as z_pres_init)
    composition: str = "additive"  # additive (paper) | alpha (decoded alpha, step-ordered compositing)
    background: str = "none"  # none (black) | color (one predicted colour per image)
    mask_background: float = 0.1  # additive composition: background weight of the derived masks


@dataclass
class ModelConfig:
    name: str = "monet"  # monet | air
    num_slots: int = 5
    eval_num_slots: int | None = None  # K at evaluation (None: same as training)
    latent_dim: int = 16
    init: str = "torch_default"  # torch_default | trunc_normal_default | trunc_normal_kaiming
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    component: ComponentConfig = field(default_factory=ComponentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    air: AirConfig = field(default_factory=AirConfig)


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
    # or any Lightning precision string (see training/hardware.py)
    precision: str = "auto"
    accelerator: str = "auto"
    devices: str = "auto"  # "auto", a count ("2") or a list ("0,1"); per node (see docs/scale-out.md)
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ddp_spawn | fsdp | ... (any Lightning strategy name)
    skip_nonfinite_steps: bool = False  # a NaN/inf loss or gradient skips the step instead of stopping
    # exponential moving average of the weights (Lightning's EMAWeightAveraging), e.g. 0.999: validation,
    # checkpoints' ``state_dict`` and the final model use the averaged weights. None: off
    ema_decay: float | None = None
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


CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # packaged: src/scenedecomp/configs/*.yaml


def preset_path(name_or_path: str | Path) -> Path:
    """Resolve a preset name (``monet-demo``) or a YAML path to an existing file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(list_presets())
    raise ConfigError(f"unknown preset {str(name_or_path)!r}; known presets: {known}")


def list_presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []


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
        path = preset_path(preset)
        try:
            loaded = OmegaConf.load(path)
        except Exception as err:  # yaml syntax errors
            raise ConfigError(f"{path}: cannot parse YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{path}: the top level must be a mapping of settings (key: value), "
                              f"not a {type(loaded).__name__.removesuffix('Config').lower()}")
        cfg = _merge(cfg, loaded, str(path))
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
    if m.name not in ("monet", "air"):
        raise ConfigError(f"model.name: unknown model {m.name!r}; expected monet or air")
    if m.num_slots < 2:  # AIR: K = N + 1 as well
        raise ConfigError(f"model.num_slots: K must be at least 2, got {m.num_slots}")
    if m.eval_num_slots is not None and m.eval_num_slots < 2:
        raise ConfigError(f"model.eval_num_slots: K must be at least 2, got {m.eval_num_slots}")
    if m.attention.type not in ("unet_recurrent", "resnet", "resnet_skip"):
        raise ConfigError(f"model.attention.type: unknown {m.attention.type!r}")
    if m.attention.mask_normalization not in ("stick_breaking", "softmax"):
        raise ConfigError(f"model.attention.mask_normalization: unknown {m.attention.mask_normalization!r}")
    if m.attention.downsample not in ("nearest", "area"):
        raise ConfigError(f"model.attention.downsample: expected nearest or area, got {m.attention.downsample!r}")
    if m.attention.padding not in ("zeros", "replicate"):
        raise ConfigError(f"model.attention.padding: expected zeros or replicate, got {m.attention.padding!r}")
    if m.loss.likelihood not in ("per_pixel", "per_channel"):
        raise ConfigError(f"model.loss.likelihood: expected per_pixel or per_channel, got {m.loss.likelihood!r}")
    if m.component.output_activation not in ("sigmoid", "none"):
        raise ConfigError(f"model.component.output_activation: unknown {m.component.output_activation!r}")
    if m.init not in ("torch_default", "trunc_normal_default", "trunc_normal_kaiming"):
        raise ConfigError(f"model.init: unknown {m.init!r}")
    if m.loss.geco_mse_target is not None and not (m.loss.geco_mse_target > 0 and m.loss.geco_rate > 0
                                                   and 0 <= m.loss.geco_ema < 1 and m.loss.geco_max_weight >= 1
                                                   and (m.loss.geco_min_weight is None
                                                        or 0 < m.loss.geco_min_weight <= m.loss.geco_max_weight)):
        raise ConfigError("model.loss.geco_*: need geco_mse_target > 0, geco_rate > 0, 0 <= geco_ema < 1 and "
                          "geco_max_weight >= 1, 0 < geco_min_weight <= geco_max_weight")
    if m.loss.beta_warmup_steps < 0:
        raise ConfigError(f"model.loss.beta_warmup_steps must be >= 0, got {m.loss.beta_warmup_steps}")
    if m.air.max_steps < 1:
        raise ConfigError(f"model.air.max_steps: N must be at least 1, got {m.air.max_steps}")
    if cfg.optim.name not in ("rmsprop", "adam", "adamw"):
        raise ConfigError(f"optim.name: unknown optimiser {cfg.optim.name!r}")
    if cfg.optim.schedule not in ("constant", "cosine", "exponential"):
        raise ConfigError(f"optim.schedule: unknown {cfg.optim.schedule!r}")
    for key in ("lr",):
        if getattr(cfg.optim, key) <= 0:
            raise ConfigError(f"optim.{key} must be positive")
    from .hardware import PRECISIONS

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
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
