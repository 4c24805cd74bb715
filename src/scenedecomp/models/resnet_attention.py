"""One-pass segmentation attention for MONet-RN50 and MONet-RN50* (thesis, 2022).

Instead of MONet's K-1 recurrent U-Net calls, one network maps the image (only the image, no scope) to
K mask logits in a single pass; its cost is therefore almost independent of K.

Architecture (``model.attention``):

- **Encoder**: torchvision ``resnet18`` / ``resnet34`` / ``resnet50`` (``backbone``) without avgpool and
  fc, built with ``weights=None``; :func:`torchvision.models.feature_extraction.create_feature_extractor`
  returns the stage outputs ``stem`` (the ReLU after conv1, /2), ``layer1`` (/4), ``layer2`` (/8),
  ``layer3`` (/16) and ``layer4`` (/32). Channels: ResNet50 (64, 256, 512, 1024, 2048), ResNet18/34
  (64, 64, 128, 256, 512).
- **Decoder** ``type: resnet`` (RN50): four ``ConvTranspose2d(kernel 5, stride 2, padding 2,
  output_padding 1)`` with bias, each followed by a ReLU, with output channels (512, 256, 128, 64),
  starting from ``layer4``; every one exactly doubles the resolution, so the last is at /2.
- **Decoder** ``type: resnet_skip`` (RN50*): the same four transposed convs with channels
  (512, 128, 64, 16), and after each one (after its ReLU) the matching encoder stage is concatenated
  (U-Net skips from ``layer3``, ``layer2``, ``layer1`` and the stem, i.e. all four stages that sit below
  ``layer4``).
- **Head**: a 1x1 conv at /2 resolution to the mask logits, then bilinear upsampling of the logits to
  the input size (the four transposed convs recover /32 -> /2; the last x2 is the interpolation).

With ResNet50 these are 54.0M (RN50) and 55.8M (RN50*) attention parameters, the thesis' counts.

**From K channels to masks** (``mask_normalization``); both give ``log_masks [B,K,1,H,W]`` whose
``exp`` sums to one per pixel exactly, computed in log space (no clamps, no epsilons):

- ``stick_breaking`` (default, MONet's scheme made one-pass): the head outputs K-1 logits ``l_k``
  and ``log m_k = logsigmoid(l_k) + sum_{j<k} logsigmoid(-l_j)`` for k < K; the last mask is the
  remaining scope ``sum_{j<K} logsigmoid(-l_j)``. The thesis puts a sigmoid on K channels without saying
  how they are made to sum to one; a K-th logit would have no effect under stick-breaking (dead weights
  that never get a gradient), so the head has K-1 output channels.
- ``softmax``: the head outputs K logits and ``log m = log_softmax(l)`` over the K slots.

Either way the output layer is tied to the K the module was built with: calling it with another
``num_slots`` raises a ``ValueError`` (rebuild the model with ``model.num_slots`` set instead).

**Small images**: torchvision's strides are kept unchanged so pretrained weights apply as they are; the
input side must be a multiple of 32. At 64x64, ``layer4`` is 2x2 (4x4 at 128x128, 1x1 at 32x32): its
receptive field covers the whole image, so the bottleneck carries global context, and spatial detail
comes back through the decoder. RN50 has to rebuild masks from that 2x2 map alone (coarse masks; this
is the design the thesis evaluates); RN50* recovers detail from the skips. Dilated ``layer4`` would
keep more resolution but torchvision's BasicBlock (ResNet18/34) does not support it and it multiplies
the cost, so it is not offered. Note that BatchNorm in training mode needs more than one value per
channel: at 32x32 ``layer4`` is 1x1, so training there needs a batch of at least 2.

**Pretrained transfer** (``pretrained``): either a local file holding a torchvision ResNet state dict,
or a torchvision weights name (``IMAGENET1K_V1``, ``IMAGENET1K_V2``, ``DEFAULT`` or
``ResNet50_Weights.IMAGENET1K_V1``) that is looked up in the local torch hub cache
(``$TORCH_HOME/hub/checkpoints/`` under the file name of the weights' URL; the URL is only used to
derive that name: nothing is ever downloaded). Files are read with ``torch.load(...,
weights_only=True)`` and checked key by key and shape by shape against the backbone (``fc.*`` is
ignored). With pretrained weights the encoder input is normalised with the ImageNet mean and standard
deviation (images are expected in [0, 1]); grayscale images are repeated to three channels. Without
pretrained weights no normalisation is applied (the first BatchNorm adapts to the data) and ``conv1``
takes ``in_channels`` directly. A pretrained encoder is flagged ``keep_init`` so that
:func:`scenedecomp.models.init.initialize` leaves it untouched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor

from .attention import AttentionConfig
from .masks import stick_breaking_log_masks

BACKBONES: dict[str, tuple[int, ...]] = {
    # stage channels: stem, layer1, layer2, layer3, layer4
    "resnet18": (64, 64, 128, 256, 512),
    "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
}
DECODER_CHANNELS = {"resnet": (512, 256, 128, 64), "resnet_skip": (512, 128, 64, 16)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretrainedWeightsError(ValueError):
    """A pretrained weights file cannot be read or does not fit the backbone (one-line message)."""


class PretrainedWeightsNotFoundError(FileNotFoundError, ValueError):
    """The pretrained weights file is not on disk (one-line message saying where to put which file)."""

    def __str__(self) -> str:  # FileNotFoundError would otherwise format errno-style tuples
        return str(self.args[0]) if self.args else ""


def _short_list(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    more = f", ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"[{shown}{more}]"


def _looks_like_path(spec: str) -> bool:
    return (
        os.sep in spec
        or "/" in spec
        or spec.startswith("~")
        or spec.endswith((".pth", ".pt", ".bin", ".ckpt"))
    )


def resolve_pretrained(spec: str, backbone: str) -> Path:
    """Turn ``model.attention.pretrained`` into an existing local file; never downloads.

    ``spec`` is a file path, or a torchvision weights name for ``backbone`` resolved in the torch hub
    cache (``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``).

    Raises:
        PretrainedWeightsNotFoundError: the file is not there (message: where to put which file).
        ValueError: unknown weights name.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {', '.join(BACKBONES)}")
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if _looks_like_path(spec):
        raise PretrainedWeightsNotFoundError(
            f"pretrained weights file {str(path)!r} not found (model.attention.pretrained)"
        )
    weights_enum = torchvision.models.get_model_weights(backbone)
    name = spec
    if "." in name:
        prefix, name = name.split(".", 1)
        if prefix != weights_enum.__name__:
            raise ValueError(
                f"pretrained weights {spec!r} do not belong to backbone {backbone} (expected "
                f"{weights_enum.__name__}.<name>)"
            )
    known = {w.name: w for w in weights_enum}
    if name == "DEFAULT":
        weights = weights_enum.DEFAULT
    elif name in known:
        weights = known[name]
    else:
        raise ValueError(
            f"unknown pretrained weights {spec!r} for {backbone}; expected a file path or one of "
            f"{', '.join(['DEFAULT', *known])}"
        )
    filename = os.path.basename(urlparse(weights.url).path)  # the URL only names the file
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    target = folder / filename
    if not target.is_file():
        raise PretrainedWeightsNotFoundError(
            f"pretrained weights {weights.name!r} for {backbone} not found: put {filename} in {folder}/ "
            f"(it is published at {weights.url}; nothing is downloaded at run time) or pass a local file path"
        )
    return target


def load_backbone_state_dict(path: str | Path, backbone: str, reference: nn.Module) -> dict[str, Tensor]:
    """Read a torchvision ResNet state dict with ``weights_only=True`` and check it fits ``reference``.

    ``fc.*`` entries are dropped (the classifier is not used). Raises :class:`PretrainedWeightsError`
    with one line naming the file and the first mismatching keys.
    """
    path = Path(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors, truncated files, non-weights pickles
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PretrainedWeightsError(f"{path}: cannot read a state dict ({first})") from None
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise PretrainedWeightsError(f"{path}: not a state dict of tensors (got {type(loaded).__name__})")
    state = {k: v for k, v in loaded.items() if not k.startswith("fc.")}
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)} vs model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_short_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short_list(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatch {_short_list(mismatched, 2)}")
        raise PretrainedWeightsError(f"{path} is not a torchvision {backbone} state dict: {'; '.join(parts)}")
    return state


class ResNetAttention(nn.Module):
    """One-pass ResNet segmentation attention (MONet-RN50 / RN50*), see the module docstring.

    ``forward(image [B,C,H,W], num_slots) -> log_masks [B,K,1,H,W]`` with ``logsumexp`` over K equal
    to 0; ``num_slots`` must equal the K the module was built with.
    """

    recurrent = False

    def __init__(self, cfg: AttentionConfig, in_channels: int, image_size: int, num_slots: int):
        super().__init__()
        if cfg.type not in DECODER_CHANNELS:
            raise ValueError(f"ResNetAttention: type must be resnet or resnet_skip, got {cfg.type!r}")
        if cfg.backbone not in BACKBONES:
            raise ValueError(f"model.attention.backbone: unknown {cfg.backbone!r}; expected one of "
                             f"{', '.join(BACKBONES)}")
        if cfg.mask_normalization not in ("stick_breaking", "softmax"):
            raise ValueError(f"model.attention.mask_normalization: unknown {cfg.mask_normalization!r}")
        if num_slots < 2:
            raise ValueError(f"ResNetAttention needs at least 2 slots, got {num_slots}")
        if image_size % 32:
            raise ValueError(f"ResNetAttention needs an image size divisible by 32 (ResNet stride), "
                             f"got {image_size}")
        self.num_slots = num_slots
        self.in_channels = in_channels
        self.skip = cfg.type == "resnet_skip"
        self.mask_normalization = cfg.mask_normalization
        self.backbone = backbone = str(cfg.backbone)
        self.pretrained_path: str | None = None

        resnet = getattr(torchvision.models, backbone)(weights=None)
        self.expand_gray = False
        if cfg.pretrained:
            path = resolve_pretrained(cfg.pretrained, backbone)
            state = load_backbone_state_dict(path, backbone, resnet)
            resnet.load_state_dict(state, strict=False)  # checked above: only fc.* can be missing
            self.pretrained_path = str(path)
            if in_channels == 1:
                self.expand_gray = True
            elif in_channels != 3:
                raise ValueError(f"pretrained ResNet weights need 1 or 3 input channels, got {in_channels}")
        elif in_channels != 3:
            resnet.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.normalize = self.pretrained_path is not None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        self.encoder = create_feature_extractor(
            resnet, return_nodes={"relu": "stem", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3",
                                  "layer4": "layer4"}
        )
        if self.pretrained_path is not None:
            self.encoder.keep_init = True  # initialize() must not overwrite the transferred weights

        stage_channels = BACKBONES[backbone]
        self.skip_stages = ("layer3", "layer2", "layer1", "stem") if self.skip else ()
        skip_channels = tuple(reversed(stage_channels[:4])) if self.skip else (0, 0, 0, 0)
        self.decoder = nn.ModuleList()
        prev = stage_channels[4]
        for width, extra in zip(DECODER_CHANNELS[cfg.type], skip_channels):
            self.decoder.append(nn.ConvTranspose2d(prev, width, kernel_size=5, stride=2, padding=2,
                                                   output_padding=1))
            prev = width + extra
        out = num_slots - 1 if self.mask_normalization == "stick_breaking" else num_slots
        self.head = nn.Conv2d(prev, out, kernel_size=1)

    def logits(self, image: Tensor) -> Tensor:
        """``image [B,C,H,W] -> [B,L,H,W]`` head logits (L = K-1 for stick-breaking, K for softmax)."""
        x = image
        if self.expand_gray:
            x = x.expand(-1, 3, -1, -1)
        if self.normalize:
            x = (x - self.mean) / self.std
        feats = self.encoder(x)
        h = feats["layer4"]
        for i, up in enumerate(self.decoder):
            h = F.relu(up(h), inplace=True)
            if self.skip:
                h = torch.cat([h, feats[self.skip_stages[i]]], dim=1)
        logits = self.head(h)  # at H/2 x W/2
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, image: Tensor, num_slots: int, return_logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``image [B,C,H,W] -> log_masks [B,K,1,H,W]`` (and the head logits ``[B,L,1,H,W]`` if asked)."""
        if num_slots != self.num_slots:
            raise ValueError(
                f"{self.backbone} {'resnet_skip' if self.skip else 'resnet'} attention was built for "
                f"K={self.num_slots} slots (its output layer is sized for that K) but was called with "
                f"K={num_slots}; set model.num_slots={num_slots} and rebuild (one-pass attention cannot "
                "change K after training)"
            )
        if image.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got shape {tuple(image.shape)}")
        logits = self.logits(image)[:, :, None].float()  # [B,L,1,H,W]; masks in fp32 under autocast
        if self.mask_normalization == "softmax":
            log_masks = F.log_softmax(logits, dim=1)
        else:
            log_masks = stick_breaking_log_masks(logits)
        return (log_masks, logits) if return_logits else log_masks
