"""MONet's attention network and the ``model.attention`` settings of every attention network.

An attention network maps an image to K log masks that sum to one per pixel:
``attention(image [B,C,H,W], num_slots K) -> log_masks [B,K,1,H,W]`` with ``log_masks.exp().sum(1) == 1``.

- :class:`RecurrentUNetAttention` is MONet's: a U-Net called K-1 times on the image and the current
  log scope; stick-breaking is done entirely in log space (no clamps, no epsilons).
- One-pass segmentation networks (MONet-RN50/RN50*) live in :mod:`scenedecomp.models.resnet_attention`;
  :func:`scenedecomp.models.monet.build_attention` picks one by :attr:`AttentionConfig.type`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..choices import Choice


class AttentionType(Choice):
    unet_recurrent = "unet_recurrent"  # MONet: recurrent U-Net (this module)
    resnet = "resnet"  # MONet-RN50: one-pass ResNet segmentation (resnet_attention.py)
    resnet_skip = "resnet_skip"  # MONet-RN50*: the same with U-Net skips


class MaskNormalization(Choice):  # one-pass attention: from the head's logits to K masks
    stick_breaking = "stick_breaking"
    softmax = "softmax"


class Padding(Choice):  # U-Net 3x3 conv padding
    zeros = "zeros"  # the paper's
    replicate = "replicate"  # no border signature


class Downsample(Choice):  # U-Net x0.5 resize
    nearest = "nearest"  # the paper's: keeps the even rows and columns
    area = "area"  # 2x2 mean


class Backbone(Choice):  # one-pass attention's torchvision ResNet
    resnet18 = "resnet18"
    resnet34 = "resnet34"
    resnet50 = "resnet50"


@dataclass
class AttentionConfig:
    """``model.attention``: which attention network and its settings (each field says who reads it)."""

    type: AttentionType = AttentionType.unet_recurrent
    channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64, 64])  # U-Net block widths
    mlp_hidden: list[int] = field(default_factory=lambda: [128, 128])  # U-Net bottleneck MLP
    backbone: Backbone = Backbone.resnet50  # one-pass attention
    pretrained: str | None = None  # one-pass attention: local state-dict file or torchvision weights name
    mask_normalization: MaskNormalization = MaskNormalization.stick_breaking  # one-pass attention
    # one-pass attention: the ResNet trunk learns at optim.lr * trunk_lr_scale (1: one learning rate, as in
    # the thesis; below 1 slows a large or pretrained trunk against the decoder, head and component VAE)
    trunk_lr_scale: float = 1.0
    padding: Padding = Padding.zeros  # U-Net
    downsample: Downsample = Downsample.nearest  # U-Net


class _ConvBlock(nn.Sequential):
    """3x3 conv (no bias; ``padding``: zeros or replicate) -> InstanceNorm (learned affine) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, padding: str = "zeros"):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False, padding_mode=str(padding)),
            nn.InstanceNorm2d(out_channels, affine=True),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """MONet's U-Net (paper appendix B.2).

    ``n`` blocks down and ``n`` up with widths ``channels``; nearest-neighbour resize by 0.5 / 2 after
    every block but the last of each path; skips after each down block's ReLU are concatenated before
    the matching up block's conv; an MLP bottleneck (``mlp_hidden``, ReLU after every layer) maps the
    flattened last skip to a tensor of the same shape. A final 1x1 conv gives ``out_channels`` logits.
    ``padding="replicate"`` (not in the paper) pads the 3x3 convs by repeating edge pixels instead of zeros,
    so border pixels carry no padding signature. ``downsample="area"`` (not in the paper) halves by 2x2
    means instead of keeping the even rows and columns: the nearest resize sees the top and left border
    pixels at every level but never the bottom and right ones, an asymmetry that idle slots exploit to claim
    stripes along the top and left edges (docs/results.md); the mean treats the four edges alike.

    Shapes: ``x [B,in_channels,H,W] -> [B,out_channels,H,W]``; ``H`` and ``W`` divisible by
    ``2**(n-1)``.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: list[int], mlp_hidden: list[int],
                 image_size: int, padding: str = "zeros", downsample: str = "nearest"):
        super().__init__()
        self.downsample = downsample
        n = len(channels)
        if image_size % 2 ** (n - 1):
            raise ValueError(f"image size {image_size} is not divisible by 2**{n - 1} for a {n}-block U-Net")
        self.down = nn.ModuleList()
        prev = in_channels
        for width in channels:
            self.down.append(_ConvBlock(prev, width, padding))
            prev = width
        bottom = image_size // 2 ** (n - 1)
        self.bottom_shape = (channels[-1], bottom, bottom)
        flat = channels[-1] * bottom * bottom
        dims = [flat, *mlp_hidden, flat]
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), nn.ReLU(inplace=True)]
        self.mlp = nn.Sequential(*layers)
        self.up = nn.ModuleList()
        prev = channels[-1]
        for i in reversed(range(n)):
            out = channels[i - 1] if i > 0 else channels[0]
            self.up.append(_ConvBlock(prev + channels[i], out, padding))
            prev = out
        self.head = nn.Conv2d(prev, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        last = len(self.down) - 1
        for i, block in enumerate(self.down):
            x = block(x)
            skips.append(x)
            if i < last:
                x = F.interpolate(x, scale_factor=0.5, mode="nearest") if self.downsample == "nearest" \
                    else F.avg_pool2d(x, 2)
        x = self.mlp(x.flatten(1)).view(x.shape[0], *self.bottom_shape)
        for i, block in enumerate(self.up):
            x = block(torch.cat([x, skips[last - i]], dim=1))
            if i < last:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.head(x)


class RecurrentUNetAttention(nn.Module):
    """MONet's recurrent attention: K-1 U-Net calls on ``[image, log scope]``.

    Step k: ``a_k = UNet([x, log s_{k-1}])``, ``log m_k = log s_{k-1} + logsigmoid(a_k)``,
    ``log s_k = log s_{k-1} + logsigmoid(-a_k)``; the last mask is the remaining scope. K can differ
    between training and inference. Under autocast the U-Net runs in low precision but its logits are
    cast to fp32 before the stick-breaking, so the log scope is accumulated in fp32.
    """

    recurrent = True

    def __init__(self, cfg: AttentionConfig, in_channels: int, image_size: int):
        super().__init__()
        self.unet = UNet(in_channels + 1, 1, list(cfg.channels), list(cfg.mlp_hidden), image_size, cfg.padding,
                         cfg.downsample)

    def forward(self, image: Tensor, num_slots: int, return_logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``image [B,C,H,W] -> log_masks [B,K,1,H,W]`` (and the logits ``[B,K-1,1,H,W]`` if asked)."""
        b, _, h, w = image.shape
        log_scope = image.new_zeros(b, 1, h, w)
        log_masks, all_logits = [], []
        for _ in range(num_slots - 1):
            logits = self.unet(torch.cat([image, log_scope], dim=1)).float()  # scope stays fp32 under autocast
            all_logits.append(logits)
            log_masks.append(log_scope + F.logsigmoid(logits))
            log_scope = log_scope + F.logsigmoid(-logits)
        log_masks.append(log_scope)
        log_masks = torch.stack(log_masks, dim=1)
        return (log_masks, torch.stack(all_logits, dim=1)) if return_logits else log_masks
