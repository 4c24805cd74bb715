"""Models. :class:`ModelConfig` is the ``model.*`` section of a run's config; :func:`build_model` turns it
into a module.

Each model owns its settings: :class:`~scenedecomp.models.monet.MONetConfig` (with
:class:`~scenedecomp.models.attention.AttentionConfig`, :class:`~scenedecomp.models.component_vae.ComponentConfig`
and :class:`~scenedecomp.models.monet.LossConfig`), :class:`~scenedecomp.models.air.AIRConfig` and
:class:`~scenedecomp.models.slot_attention.SlotAttentionConfig`.
:class:`ModelConfig` assembles them under the dotted keys a config file uses (``model.attention.channels``,
``model.air.max_steps``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..choices import Choice
from .air import AIR, AIRConfig
from .attention import AttentionConfig
from .component_vae import ComponentConfig
from .init import InitScheme, initialize
from .monet import LossConfig, MONet, MONetConfig
from .output import ModelOutput
from .scene_model import SceneModel, SceneModelBase, fixed_num_slots
from .slot_attention import SlotAttention, SlotAttentionConfig


class ModelName(Choice):
    monet = "monet"  # MONet, MONet-RN50 / RN50* (by model.attention.type)
    air = "air"
    slot_attention = "slot_attention"


@dataclass
class ModelConfig:
    """``model.*``: which model, K, and every model's own section (MONet reads num_slots, latent_dim,
    attention, component and loss; AIR reads air, where ``K = air.max_steps + 1``; Slot Attention reads
    num_slots, latent_dim (the slot size) and slot_attention)."""

    name: ModelName = ModelName.monet
    num_slots: int = 5
    eval_num_slots: int | None = None  # K at evaluation (None: same as training)
    latent_dim: int = 16
    init: InitScheme = InitScheme.torch_default  # weight initialisation (models/init.py)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    component: ComponentConfig = field(default_factory=ComponentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    air: AIRConfig = field(default_factory=AIRConfig)
    slot_attention: SlotAttentionConfig = field(default_factory=SlotAttentionConfig)

    def monet(self) -> MONetConfig:
        """The settings MONet reads."""
        return MONetConfig(num_slots=self.num_slots, latent_dim=self.latent_dim, attention=self.attention,
                           component=self.component, loss=self.loss)


def build_model(cfg: ModelConfig, in_channels: int = 3, image_size: int = 64) -> nn.Module:
    """Build the model named by ``cfg.name`` (``monet``, ``air`` or ``slot_attention``) and apply ``cfg.init``."""
    if cfg.name == ModelName.monet:
        model: nn.Module = MONet(cfg.monet(), in_channels, image_size)
    elif cfg.name == ModelName.air:
        model = AIR(cfg.air, in_channels, image_size)
    elif cfg.name == ModelName.slot_attention:
        model = SlotAttention(cfg.slot_attention, cfg.num_slots, cfg.latent_dim, in_channels, image_size)
    else:
        raise ValueError(f"unknown model {cfg.name!r}")
    if cfg.init != InitScheme.torch_default:
        initialize(model, cfg.init)
    return model


__all__ = ["AIRConfig", "AttentionConfig", "ComponentConfig", "LossConfig", "MONetConfig", "ModelConfig",
           "ModelName", "ModelOutput", "SceneModel", "SceneModelBase", "SlotAttentionConfig",
           "build_model", "fixed_num_slots"]
