"""Models. :func:`build_model` turns a :class:`~scenedecomp.training.config.ModelConfig` into a module."""

from __future__ import annotations

from torch import nn

from ..training.config import ModelConfig
from .output import ModelOutput


def build_model(cfg: ModelConfig, in_channels: int = 3, image_size: int = 64) -> nn.Module:
    """Build the model named by ``cfg.name`` (``monet`` or ``air``) and apply ``cfg.init``."""
    if cfg.name == "monet":
        from .monet import MONet

        model = MONet(cfg, in_channels, image_size)
    elif cfg.name == "air":
        from .air import AIR

        model = AIR(cfg, in_channels, image_size)
    else:
        raise ValueError(f"unknown model {cfg.name!r}")
    if cfg.init != "torch_default":
        from .init import initialize

        initialize(model, cfg.init)
    return model


__all__ = ["ModelOutput", "build_model"]
