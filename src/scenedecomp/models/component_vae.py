"""MONet's component VAE: one encoder/decoder shared by all slots, run once on ``B*K`` inputs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..choices import Choice


class OutputActivation(Choice):  # applied to the decoded image means
    sigmoid = "sigmoid"  # means in [0, 1]
    none = "none"  # unbounded means


@dataclass
class ComponentConfig:
    """``model.component``: the component VAE's widths (see :class:`ComponentVAE`)."""

    encoder_channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64])
    encoder_hidden: int = 256
    decoder_channels: int = 32
    decoder_layers: int = 4
    output_activation: OutputActivation = OutputActivation.sigmoid
    channels_last: bool = True  # broadcast decoder memory layout (speed only: the same computation)
    # the encoder reads the log mask without passing gradient back to the attention (not in the paper):
    # the attention then learns from the mixture likelihood and the mask KL only, not from what makes a
    # mask easier for the encoder to read
    detach_mask_input: bool = False
    # the encoder reads max(log mask, floor) (not in the paper; None: unbounded): one-pass attentions can drive
    # log masks to -600 within 20 steps, and the encoder's outputs with them until exp(logvar) overflows
    log_mask_floor: float | None = None
    # the encoder also reads two coordinate channels (x and y in [-1, 1]; CoordConv, not in the paper), so
    # its strided convs need not infer where in the image an object lies from the padding alone; measured on
    # the demo's recipe (docs/results.md, "Where the decoded masks lose"): it changes when the decoded masks
    # learn, not how well, so no preset turns it on
    encoder_coordinates: bool = False


def _coordinate_grid(height: int, width: int) -> Tensor:
    """``[1,2,H,W]`` x and y coordinates in ``[-1, 1]``."""
    ys = torch.linspace(-1.0, 1.0, height)
    xs = torch.linspace(-1.0, 1.0, width)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y])[None]


class SpatialBroadcastDecoder(nn.Module):
    """Spatial broadcast decoder (Watters et al. 2019).

    ``z [N,D] -> [N,out_channels,H,W]``: ``z`` is tiled over ``(H+2L)x(W+2L)`` for ``L`` unpadded 3x3
    convs, two coordinate channels are appended, and a final 1x1 conv gives the outputs.

    The first conv is applied in closed form: ``z`` is spatially constant and the conv is unpadded, so
    its response is ``W_z z`` (a per-channel constant) plus the response to the coordinate channels,
    which is the same for every sample and is computed once per call. This equals running the conv on
    the tiled tensor (tested) but skips its cost and the ``[N, D+2, H+2L, W+2L]`` tensor.
    """

    def __init__(self, latent_dim: int, out_channels: int, image_size: int, hidden: int = 32,
                 num_layers: int = 4, channels_last: bool = True):
        super().__init__()
        self.channels_last = channels_last
        if num_layers < 1:
            raise ValueError("the spatial broadcast decoder needs at least one conv layer")
        self.image_size = image_size
        self.num_layers = num_layers
        size = image_size + 2 * num_layers
        self.register_buffer("grid", _coordinate_grid(size, size), persistent=False)
        self.first = nn.Conv2d(latent_dim + 2, hidden, 3)
        layers: list[nn.Module] = [nn.ReLU(inplace=True)]
        for _ in range(num_layers - 1):
            layers += [nn.Conv2d(hidden, hidden, 3), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(hidden, out_channels, 1))
        self.rest = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        weight = self.first.weight  # [hidden, D+2, 3, 3]
        latent_dim = weight.shape[1] - 2
        # response to the constant latent channels: sum over the 3x3 taps of W_z, times z
        z_term = z @ weight[:, :latent_dim].sum(dim=(2, 3)).t()  # [N, hidden]
        coord_term = nn.functional.conv2d(self.grid.to(z.dtype), weight[:, latent_dim:], self.first.bias)
        hidden = coord_term + z_term[:, :, None, None]  # [N, hidden, H+2L-2, W+2L-2]
        if self.channels_last:  # oneDNN's convolutions, above all their backward, run faster channels-last
            hidden = hidden.contiguous(memory_format=torch.channels_last)
        return self.rest(hidden)

    def forward_tiled(self, z: Tensor) -> Tensor:
        """Reference implementation that tiles ``z`` explicitly (used by tests)."""
        n = z.shape[0]
        size = self.grid.shape[-1]
        tiled = z[:, :, None, None].expand(n, z.shape[1], size, size)
        x = torch.cat([tiled, self.grid.expand(n, -1, -1, -1)], dim=1)
        return self.rest(self.first(x))


class ComponentVAE(nn.Module):
    """Encoder ``[x, log m_k] -> q(z_k)`` and spatial broadcast decoder ``z_k -> (x_k means, mask logit)``.

    Encoder: 3x3 stride-2 convs (``encoder_channels``) with ReLU, flatten, MLP ``encoder_hidden`` ->
    ``2*latent_dim`` (mean and log-variance). Decoder output: ``C`` image means passed through
    ``output_activation`` (sigmoid by default, keeping means in [0, 1] like genesis and the
    object-centric library; ``none`` leaves them unbounded) and one mask logit. Both are returned in
    fp32 even under autocast, so the mixture likelihood and the KLs are always computed in fp32.
    With ``detach_mask_input`` the encoder's log-mask input is detached: no gradient reaches the
    attention through the encoder; with ``log_mask_floor`` it is clamped below at that value; with
    ``encoder_coordinates`` two coordinate channels are appended to the encoder's input.
    """

    def __init__(self, cfg: ComponentConfig, in_channels: int, image_size: int, latent_dim: int):
        super().__init__()
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.output_activation = cfg.output_activation
        self.detach_mask_input = cfg.detach_mask_input
        self.log_mask_floor = cfg.log_mask_floor
        self.encoder_coordinates = cfg.encoder_coordinates
        if cfg.encoder_coordinates:
            self.register_buffer("encoder_grid", _coordinate_grid(image_size, image_size), persistent=False)
        convs: list[nn.Module] = []
        prev = in_channels + 1 + (2 if cfg.encoder_coordinates else 0)
        size = image_size
        for width in cfg.encoder_channels:
            convs += [nn.Conv2d(prev, width, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            prev = width
            size = (size + 1) // 2
        self.encoder = nn.Sequential(
            *convs,
            nn.Flatten(),
            nn.Linear(prev * size * size, cfg.encoder_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.encoder_hidden, 2 * latent_dim),
        )
        self.decoder = SpatialBroadcastDecoder(latent_dim, in_channels + 1, image_size, cfg.decoder_channels,
                                               cfg.decoder_layers, cfg.channels_last)

    def encode(self, image: Tensor, log_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``image [N,C,H,W]``, ``log_mask [N,1,H,W]`` -> ``(mean [N,D], logvar [N,D])``."""
        if self.detach_mask_input:
            log_mask = log_mask.detach()
        if self.log_mask_floor is not None:
            log_mask = log_mask.clamp(min=self.log_mask_floor)
        inputs = [image, log_mask]
        if self.encoder_coordinates:
            inputs.append(self.encoder_grid.to(image.dtype).expand(image.shape[0], -1, -1, -1))
        stats = self.encoder(torch.cat(inputs, dim=1)).float()  # fp32 under autocast
        return stats.chunk(2, dim=1)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``z [N,D]`` -> ``(image means [N,C,H,W], mask logits [N,1,H,W])``."""
        out = self.decoder(z).float().contiguous()  # fp32 (and the default layout) for the likelihood
        means, mask_logits = out[:, : self.in_channels], out[:, self.in_channels :]
        if self.output_activation == "sigmoid":
            means = torch.sigmoid(means)
        return means, mask_logits
