"""Slot Attention (Locatello et al. 2020), the object-discovery model.

Pipeline (``forward(image [B,C,H,W] in [0,1], num_slots=None) -> ModelOutput``)::

    x = 2 * image - 1                                   (the published input range [-1, 1])
    features = CNN(x) + Linear([grid, 1 - grid])        (soft position embedding, 4 -> C, added)
    inputs = MLP(LayerNorm(flatten(features)))          ([B, N, C], N = feature pixels)
    slots = mu + exp(log_sigma) * N(0, 1)               ([B, K, D], learned mu / log_sigma shared by slots)
    repeat `iterations` times:
        attn = softmax over slots of  k(inputs) . q(LayerNorm(slots)) / sqrt(D)     ([B, N, K])
        updates = (attn + eps) normalised over the inputs, then weighted mean of v(inputs)
        slots = GRUCell(updates, slots); slots = slots + MLP(LayerNorm(slots))
    per slot: broadcast to r x r, add a position embedding, convs -> RGB + alpha logit
    masks = softmax over slots of the alpha logits;  recon = sum_k masks_k * rgb_k
    loss = mean squared error of recon against x (over B*H*W*C, in [-1, 1])

Returned as a :class:`ModelOutput`: ``log_masks`` = log_softmax of the alpha logits ``[B,K,1,H,W]``,
``slot_recons`` = per-slot RGB mapped back to [0, 1], ``recon`` in [0, 1], ``latents`` = the slots
``[B,K,D]``, the loss term ``mse`` (in the [-1, 1] range the loss uses: 4x the [0, 1] MSE).

K is a forward argument: the weights do not depend on it, so a model trained with K slots can be run
with any other K. The initial slots are sampled afresh while training; in eval mode the noise comes from a
generator seeded with 0 at every call, so evaluation is deterministic (as MONet's posterior means are).

Options:

- ``implicit_differentiation`` (Chang et al. 2022): the first ``iterations - 1`` updates run without
  recording gradients and the last update starts from the detached slots, so gradients flow through
  one iteration only (constant memory in the number of iterations). The object-centric-learning
  framework runs ``iterations`` updates and then one more from the detached slots: set ``iterations``
  one higher to match it.
- ``slot_init``: ``gaussian`` (the paper) samples the initial slots from one learned Gaussian shared by all
  slots, so K can change at inference. ``learned`` starts from K learned vectors instead (the learnable
  queries of BO-QSA, Jia et al. 2023): the slots differ from the first step, so they need not break their
  symmetry through the sampling noise; the model then runs with its trained K only. With
  ``implicit_differentiation`` the last iteration starts from ``slots.detach() + queries - queries.detach()``
  (BO-QSA's straight-through estimate), so the queries still receive a gradient.
- ``decoder_broadcast``: the broadcast resolution. ``None`` broadcasts at the image resolution and the
  decoder convs keep it (the object-centric library's decoder for 64x64 and smaller); a smaller ``r``
  (8 for the published 128x128 decoder) makes the first ``log2(H / r)`` decoder layers stride-2
  transposed convs.

Initialisation as in the published (Keras) code: Xavier-uniform weights, zero biases, orthogonal GRU
recurrent weights, LayerNorm eps 1e-3 (``layer_norm_eps``). Under bf16 autocast the CNNs run in bf16;
the slot-attention iterations, the masks and the loss are computed in fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .output import ModelOutput
from .scene_model import SceneModelBase


@dataclass
class SlotAttentionConfig:
    """``model.slot_attention``: Slot Attention's settings (the slot size is ``model.latent_dim``)."""

    iterations: int = 3
    mlp_hidden: int = 128  # the slot update MLP: D -> mlp_hidden -> D
    eps: float = 1e-8  # added to the attention before the weighted mean
    implicit_differentiation: bool = False  # gradients through the last iteration only (module docstring)
    slot_init: str = "gaussian"  # "gaussian" (the paper: any K) or "learned" (K learned queries, the trained K only)
    encoder_channels: list[int] = field(default_factory=lambda: [32, 32, 32, 32])
    encoder_strides: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    encoder_kernel: int = 5
    feature_mlp_hidden: int = 64  # the MLP after the encoder's LayerNorm: C -> hidden -> C
    decoder_channels: list[int] = field(default_factory=lambda: [32, 32, 32])
    decoder_kernel: int = 5
    decoder_out_kernel: int = 3  # the last conv, to RGB + alpha
    decoder_broadcast: int | None = None  # broadcast resolution (None: the image's)
    layer_norm_eps: float = 1e-3
    channels_last: bool = True  # decoder memory layout (speed only: the same computation)


def position_grid(size: int) -> Tensor:
    """``[1,4,size,size]``: ``(y, x, 1 - y, 1 - x)`` with ``y, x = linspace(0, 1, size)``."""
    ramp = torch.linspace(0.0, 1.0, size)
    grid_y, grid_x = torch.meshgrid(ramp, ramp, indexing="ij")
    grid = torch.stack([grid_y, grid_x])
    return torch.cat([grid, 1.0 - grid])[None]


class SoftPositionEmbed(nn.Module):
    """Adds ``Linear(4 -> channels)`` of the position grid to a ``[N,channels,size,size]`` map."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.proj = nn.Linear(4, channels)
        self.register_buffer("grid", position_grid(size), persistent=False)

    def embedding(self) -> Tensor:
        """``[1,channels,size,size]``."""
        return torch.einsum("bcyx,oc->boyx", self.grid, self.proj.weight) + self.proj.bias[None, :, None, None]

    def forward(self, x: Tensor) -> Tensor:
        return x + self.embedding().to(x.dtype)


class SlotAttentionModule(nn.Module):
    """The iterative slot attention module: ``inputs [B,N,C] -> slots [B,K,D]``."""

    def __init__(self, input_dim: int, slot_dim: int, mlp_hidden: int, iterations: int, eps: float,
                 implicit_differentiation: bool, layer_norm_eps: float, learned_slots: int | None = None):
        super().__init__()
        self.slot_dim = slot_dim
        self.iterations = iterations
        self.eps = eps
        self.implicit_differentiation = implicit_differentiation
        self.norm_inputs = nn.LayerNorm(input_dim, eps=layer_norm_eps)
        self.norm_slots = nn.LayerNorm(slot_dim, eps=layer_norm_eps)
        self.norm_mlp = nn.LayerNorm(slot_dim, eps=layer_norm_eps)
        self.project_q = nn.Linear(slot_dim, slot_dim, bias=False)
        self.project_k = nn.Linear(input_dim, slot_dim, bias=False)
        self.project_v = nn.Linear(input_dim, slot_dim, bias=False)
        self.gru = nn.GRUCell(slot_dim, slot_dim)
        self.mlp = nn.Sequential(nn.Linear(slot_dim, mlp_hidden), nn.ReLU(inplace=True),
                                 nn.Linear(mlp_hidden, slot_dim))
        self.queries = None
        if learned_slots is None:  # one Gaussian shared by the slots
            self.slots_mu = nn.Parameter(torch.empty(1, 1, slot_dim))
            self.slots_log_sigma = nn.Parameter(torch.empty(1, 1, slot_dim))
            bound = math.sqrt(6.0 / (1 + slot_dim))  # Keras' glorot_uniform of a [1, 1, D] weight
            nn.init.uniform_(self.slots_mu, -bound, bound)
            nn.init.uniform_(self.slots_log_sigma, -bound, bound)
        else:  # BO-QSA's learnable queries, Xavier-uniform as a [K, D] weight
            self.queries = nn.Parameter(torch.empty(1, learned_slots, slot_dim))
            nn.init.xavier_uniform_(self.queries[0])

    def initial_slots(self, batch: int, num_slots: int, generator: torch.Generator | None = None) -> Tensor:
        """``[B,K,D]`` samples ``mu + exp(log_sigma) * N(0, 1)`` (the noise from ``generator`` if given), or
        the learned queries when the module has them."""
        if self.queries is not None:
            if num_slots != self.queries.shape[1]:
                raise ValueError(f"Slot Attention with learned initial slots runs with its trained K = "
                                 f"{self.queries.shape[1]} only, not {num_slots}")
            return self.queries.expand(batch, -1, -1)
        noise = torch.randn(batch, num_slots, self.slot_dim, device=self.slots_mu.device, dtype=self.slots_mu.dtype,
                            generator=generator)
        return self.slots_mu + self.slots_log_sigma.exp() * noise

    def step(self, slots: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """One update of ``slots [B,K,D]`` given ``k, v [B,N,D]``; returns ``(slots, attn [B,N,K])``."""
        b, num_slots, d = slots.shape
        q = self.project_q(self.norm_slots(slots)) * d**-0.5
        attn = torch.softmax(k @ q.transpose(1, 2), dim=-1)  # [B,N,K], softmax over the slots
        weights = attn + self.eps
        weights = weights / weights.sum(dim=1, keepdim=True)  # weighted mean over the inputs
        updates = weights.transpose(1, 2) @ v  # [B,K,D]
        slots = self.gru(updates.reshape(-1, d), slots.reshape(-1, d)).view(b, num_slots, d)
        return slots + self.mlp(self.norm_mlp(slots)), attn

    def forward(self, inputs: Tensor, num_slots: int, slots: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``inputs [B,N,C]`` -> ``(slots [B,K,D], attn [B,N,K])``; ``slots`` gives the initial slots
        (default: sampled by :meth:`initial_slots`; in eval mode from a generator seeded with 0 at every
        call, so evaluation is deterministic)."""
        inputs = self.norm_inputs(inputs)
        k, v = self.project_k(inputs), self.project_v(inputs)
        if slots is None:
            generator = None
            if not self.training:  # evaluation is deterministic: the same noise at every call
                generator = torch.Generator(inputs.device).manual_seed(0)
            slots = self.initial_slots(inputs.shape[0], num_slots, generator)
        init = slots
        attn = None
        for i in range(self.iterations):
            last = i == self.iterations - 1
            if self.implicit_differentiation and not last:
                with torch.no_grad():
                    slots, attn = self.step(slots, k, v)
            else:
                if self.implicit_differentiation:
                    slots = slots.detach()
                    if self.queries is not None:  # straight-through to the learned queries
                        slots = slots + init - init.detach()
                slots, attn = self.step(slots, k, v)
        return slots, attn


class Encoder(nn.Module):
    """CNN (``same`` padding, ReLU) + soft position embedding + LayerNorm + MLP: ``[B,C,H,W] -> [B,N,C']``."""

    def __init__(self, cfg: SlotAttentionConfig, in_channels: int, image_size: int):
        super().__init__()
        if len(cfg.encoder_strides) != len(cfg.encoder_channels):
            raise ValueError("model.slot_attention.encoder_strides needs one stride per encoder channel entry")
        layers: list[nn.Module] = []
        prev, size, pad = in_channels, image_size, cfg.encoder_kernel // 2
        for width, stride in zip(cfg.encoder_channels, cfg.encoder_strides):
            layers += [nn.Conv2d(prev, width, cfg.encoder_kernel, stride=stride, padding=pad), nn.ReLU(inplace=True)]
            prev = width
            size = (size + 2 * pad - cfg.encoder_kernel) // stride + 1
        self.cnn = nn.Sequential(*layers)
        self.position = SoftPositionEmbed(prev, size)
        self.feature_size = size
        self.norm = nn.LayerNorm(prev, eps=cfg.layer_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(prev, cfg.feature_mlp_hidden), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.feature_mlp_hidden, prev))
        self.out_channels = prev

    def forward(self, x: Tensor) -> Tensor:
        features = self.position(self.cnn(x))
        return self.mlp(self.norm(features.flatten(2).transpose(1, 2)))


class BroadcastDecoder(nn.Module):
    """Spatial broadcast decoder, shared by all slots: ``slots [N,D] -> [N, C + 1, H, W]``.

    Each slot is tiled to ``r x r`` and a soft position embedding is added; ``log2(H / r)`` stride-2
    transposed convs bring it to ``H x W``, the other layers are stride-1 ``same`` convs (ReLU after every
    layer but the last, which gives C channels of RGB and one alpha logit).

    When the first layer is a stride-1 conv it is applied in closed form: the tiled slot is spatially
    constant, so its response at each pixel is the slot times the sum of the kernel taps that fall inside
    the image there; the response to the position embedding is the same for every slot and is computed
    once. Equal to running the conv on the tiled tensor (tested), without its ``D x k x k`` cost per pixel.
    """

    def __init__(self, cfg: SlotAttentionConfig, slot_dim: int, out_channels: int, image_size: int):
        super().__init__()
        r = cfg.decoder_broadcast or image_size
        ups = round(math.log2(image_size / r))
        if r * 2**ups != image_size:
            raise ValueError(f"model.slot_attention.decoder_broadcast: {image_size} is not {r} times a power of 2")
        widths = list(cfg.decoder_channels)
        if len(widths) < ups:
            raise ValueError(f"model.slot_attention.decoder_channels: {len(widths)} layers cannot upsample "
                             f"{r}x{r} to {image_size}x{image_size} (need at least {ups})")
        self.broadcast = r
        self.channels_last = cfg.channels_last
        self.position = SoftPositionEmbed(slot_dim, r)
        layers: list[nn.Module] = []
        prev, kernel = slot_dim, cfg.decoder_kernel
        for i, width in enumerate([*widths, out_channels]):
            last = i == len(widths)
            k = cfg.decoder_out_kernel if last else kernel
            if i < ups:
                layers.append(nn.ConvTranspose2d(prev, width, k, stride=2, padding=k // 2, output_padding=1))
            else:
                layers.append(nn.Conv2d(prev, width, k, padding=k // 2))
            if not last:
                layers.append(nn.ReLU(inplace=True))
            prev = width
        self.first = layers[0]
        self.rest = nn.Sequential(*layers[1:])
        self.closed_form = ups == 0

    def first_layer(self, slots: Tensor) -> Tensor:
        """The first layer's output on the broadcast slots plus position embedding ``[N, width, r, r]``."""
        if not self.closed_form:
            return self.first(self.position(self.tiled(slots)))
        weight, pad = self.first.weight, self.first.padding[0]  # [O, D, k, k]
        o, d, k, _ = weight.shape
        r = self.broadcast
        ones = weight.new_ones(1, 1, r, r)
        # tap sums inside the image per output pixel: [O*D, r, r]
        tap_sums = F.conv2d(ones, weight.reshape(o * d, 1, k, k), padding=pad).view(o, d * r * r)
        slot_term = (slots @ tap_sums.view(o, d, r * r).transpose(0, 1).reshape(d, o * r * r)).view(-1, o, r, r)
        position_term = F.conv2d(self.position.embedding().to(slots.dtype), weight, self.first.bias, padding=pad)
        return slot_term + position_term

    def tiled(self, slots: Tensor) -> Tensor:
        r = self.broadcast
        return slots[:, :, None, None].expand(*slots.shape, r, r)

    def forward(self, slots: Tensor) -> Tensor:
        hidden = self.first_layer(slots)
        if self.channels_last:  # oneDNN's convolutions run faster channels-last
            hidden = hidden.contiguous(memory_format=torch.channels_last)
        return self.rest(hidden)

    def forward_tiled(self, slots: Tensor) -> Tensor:
        """Reference implementation that tiles the slots explicitly (used by tests)."""
        return self.rest(self.first(self.position(self.tiled(slots).contiguous())))


class SlotAttention(SceneModelBase):
    """Slot Attention autoencoder (see the module docstring).

    ``forward(image [B,C,H,W], num_slots=None, slots=None) -> ModelOutput``; ``slots [B,K,D]`` replaces
    the sampled initial slots (K is then ``slots.shape[1]``).
    """

    def __init__(self, cfg: SlotAttentionConfig, num_slots: int = 7, slot_dim: int = 64, in_channels: int = 3,
                 image_size: int = 64):
        super().__init__()
        if cfg.iterations < 1:
            raise ValueError("model.slot_attention.iterations must be at least 1")
        if cfg.slot_init not in ("gaussian", "learned"):
            raise ValueError(f"model.slot_attention.slot_init must be gaussian or learned, not {cfg.slot_init!r}")
        self.adjustable_num_slots = cfg.slot_init == "gaussian"
        self.cfg = cfg
        self.num_slots = num_slots
        self.in_channels = in_channels
        self.encoder = Encoder(cfg, in_channels, image_size)
        self.slot_attention = SlotAttentionModule(self.encoder.out_channels, slot_dim, cfg.mlp_hidden, cfg.iterations,
                                                  cfg.eps, cfg.implicit_differentiation, cfg.layer_norm_eps,
                                                  num_slots if cfg.slot_init == "learned" else None)
        self.decoder = BroadcastDecoder(cfg, slot_dim, in_channels + 1, image_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras' defaults, as in the published code: Xavier-uniform, zero biases, orthogonal GRU recurrence."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        gru = self.slot_attention.gru
        d = gru.hidden_size
        for gate in range(3):  # per gate, as Keras' kernels
            nn.init.xavier_uniform_(gru.weight_ih[gate * d:(gate + 1) * d])
            nn.init.orthogonal_(gru.weight_hh[gate * d:(gate + 1) * d])
        nn.init.zeros_(gru.bias_ih)
        nn.init.zeros_(gru.bias_hh)

    def forward(self, image: Tensor, num_slots: int | None = None, slots: Tensor | None = None) -> ModelOutput:
        k = slots.shape[1] if slots is not None else (num_slots or self.num_slots)
        b, c, h, w = image.shape
        x = image * 2 - 1
        inputs = self.encoder(x)
        with torch.autocast(image.device.type, enabled=False):  # the iterations in fp32
            slots, attn = self.slot_attention(inputs.float(), k, slots)
        decoded = self.decoder(slots.reshape(b * k, -1)).float().contiguous().view(b, k, c + 1, h, w)
        rgb, alpha = decoded[:, :, :c], decoded[:, :, c:]
        log_masks = F.log_softmax(alpha, dim=1)
        recon = (log_masks.exp() * rgb).sum(1)
        mse = (recon - x).pow(2).mean()
        fs = self.encoder.feature_size
        return ModelOutput(
            loss=mse,
            loss_terms={"mse": mse.detach()},
            log_masks=log_masks,
            slot_recons=((rgb + 1) / 2).clamp(0, 1),
            recon=(recon + 1) / 2,
            latents=slots,
            extras={"attention": attn.transpose(1, 2).reshape(b, k, 1, fs, fs)},
        )
