"""MONet (Burgess et al. 2019) and its one-pass-attention variants MONet-RN50 / RN50*.

Loss per image (summed over pixels, averaged over the batch)::

    nll     = -sum_pixels log sum_k m_k N(x | mu_k, sigma_k)        (logsumexp over k)
    kl_z    = sum_k KL(q(z_k | x, m_k) || N(0, I))
    kl_mask = sum_pixels sum_k m_k (log m_k - log softmax(mask_logits)_k)
    loss    = nll + beta * kl_z + gamma * kl_mask

``sigma_k`` is ``sigma_bg`` for the first slot (the background) and ``sigma_fg`` for the others.
``loss.beta_warmup_steps > 0`` (not in the paper; off by default) raises ``beta`` linearly from 0 to its
value over that many training steps (KL annealing, Bowman et al. 2016), letting the component VAE use
its latents freely early on. ``loss.beta_initial`` (the weight before the ramp, default 0) and
``loss.beta_warmup_start`` (the step the ramp begins, default 0) move that ramp: ``beta_initial=8
beta=0.5 beta_warmup_start=4000 beta_warmup_steps=0`` trains at 8 until step 4,000 and at 0.5 from then on
(docs/results.md, "The KL weight β", measures such schedules). Evaluation always reports the loss at ``beta``.
The current weight is a buffer, so a compiled model is not recompiled as it changes.

``loss.geco_mse_target`` (not in the paper; off by default) turns the NLL into a constraint, GECO-style
(Rezende & Viola 2018; GENESIS trains MONet-like models this way): the training loss becomes
``lambda * nll + beta * kl_z + gamma * kl_mask``, where after every training step
``lambda *= exp(geco_rate * (mse_ema / geco_mse_target - 1))`` (clamped to
``[geco_min_weight, geco_max_weight]``, the floor 1/geco_max_weight unless set) and ``mse_ema`` is
a moving average of the batch reconstruction MSE. While reconstructions are worse than the target the
NLL weighs more (as if sigma were ``sigma / sqrt(lambda)``); once they meet it the KL terms weigh more.
``lambda`` and ``mse_ema`` are buffers, so they are checkpointed and resumed; evaluation reports the unweighted loss.

``loss.gamma_decoder`` (not in the paper; off by default) sets the weight of the mask KL for the component
VAE alone: the training loss gains ``(gamma_decoder - gamma) * KL(sg(m) || softmax(mask_logits))`` with the
attention masks detached (``sg``), so the attention's gradient is the paper's ``gamma`` while the encoder and
decoder learn to decode the masks at ``gamma_decoder``. The image likelihood weighs ~50 per squared unit of
error per pixel and channel (``1 / 2 sigma^2``), the mask KL at most a few nats per pixel, and the decoder and
the latent are shared by both: at ``gamma = 0.5`` the decoded masks stay near each slot's average area and
the latent carries colour only until the attention segments well (~13,500 steps with the paper's networks at
32x32).

``loss.geco_scope`` says what GECO's ``lambda`` multiplies: ``likelihood`` (default) the NLL only, as above;
``component`` also the component VAE's ``beta * KL(z)`` and its mask term (``gamma_decoder``), i.e. the training
loss is ``lambda * (nll + beta * kl_z) + gamma * kl_mask + (lambda * gamma_decoder - gamma) * kl_mask(sg(m))``.
The attention then learns from ``lambda * nll + gamma * kl_mask`` as with ``likelihood``, while the component
VAE keeps the paper's balance of likelihood, KL(z) and masks whatever ``lambda`` is: when ``lambda`` (up to
64) weighs the likelihood alone, KL(z) becomes negligible, every latent dimension fills with detail and the
decoded masks do not learn a layout. ``loss.geco_component_from_step`` turns the ``component`` scope on at a
training step (the attention segments sooner while the component VAE is a near-autoencoder); evaluation
always reports the paper's loss.

Likelihood choice (``loss.likelihood``):

- ``per_pixel`` (default): one mixture per pixel over the RGB vector; each component's channel
  log-densities are summed before the ``logsumexp``. This is the mixture model the paper writes down:
  a pixel belongs to one slot.
- ``per_channel``: every colour channel is its own mixture (``logsumexp`` per pixel and channel), as in
  baudm/MONet-pytorch, genesis and the object-centric library; use it to compare with their numbers.

Latents are sampled with the reparameterisation ``mu + sigma * eps`` while training and set to the mean
in eval mode, so evaluation is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..choices import Choice
from .attention import AttentionConfig, AttentionType, RecurrentUNetAttention
from .component_vae import ComponentConfig, ComponentVAE
from .output import ModelOutput
from .scene_model import SceneModelBase


class Likelihood(Choice):  # see the module docstring
    per_pixel = "per_pixel"
    per_channel = "per_channel"


class GecoScope(Choice):  # what GECO's lambda multiplies (see the module docstring)
    likelihood = "likelihood"
    component = "component"


@dataclass
class LossConfig:
    """``model.loss``: MONet's loss weights and options (see the module docstring)."""

    sigma_bg: float = 0.09
    sigma_fg: float = 0.11
    beta: float = 0.5
    gamma: float = 0.5
    beta_warmup_steps: int = 0  # beta rises linearly from beta_initial over these training steps (0: a step)
    beta_initial: float = 0.0  # the training beta before beta_warmup_start (used only with a warm-up or a start)
    beta_warmup_start: int = 0  # the training step at which the warm-up (or the step to beta) begins
    likelihood: Likelihood = Likelihood.per_pixel
    # GECO (Rezende & Viola 2018, as in GENESIS): weight the NLL by an adaptive lambda that grows while the
    # training reconstruction MSE (moving average) is above this target and shrinks below it. None: off.
    geco_mse_target: float | None = None
    geco_rate: float = 0.01  # lambda *= exp(rate * (mse_ema / target - 1)) per step
    geco_ema: float = 0.99  # moving-average factor of the measured MSE
    geco_max_weight: float = 16.0  # lambda is kept in [geco_min_weight, geco_max_weight]
    # lower bound of lambda (None: 1 / geco_max_weight); 1.0 hands the loss back to the paper's balance once
    # the target is met instead of weighting the KL terms up
    geco_min_weight: float | None = None
    # the weight of KL(masks || decoded masks) for the component VAE (not in the paper; None: gamma). The
    # attention keeps gamma: the extra weight reaches the encoder and decoder only (the masks are detached in it)
    gamma_decoder: float | None = None
    # what GECO's lambda weighs (see the module docstring): the image likelihood only (likelihood), or also
    # the component VAE's KL(z) and mask terms (component), so that only the attention's balance changes
    geco_scope: GecoScope = GecoScope.likelihood
    # with geco_scope=component: the training step from which lambda weighs the component VAE's terms (before
    # it, lambda weighs the likelihood alone, which segments sooner); 0: from the start
    geco_component_from_step: int = 0


@dataclass
class MONetConfig:
    """Everything :class:`MONet` reads: K, the latent size and the three parts' settings."""

    num_slots: int = 5
    latent_dim: int = 16
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    component: ComponentConfig = field(default_factory=ComponentConfig)
    loss: LossConfig = field(default_factory=LossConfig)

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_density(x: Tensor, mean: Tensor, sigma: Tensor) -> Tensor:
    """Elementwise ``log N(x | mean, sigma)``; ``sigma`` broadcasts against ``x``."""
    return -0.5 * ((x - mean) / sigma) ** 2 - torch.log(sigma) - _LOG_SQRT_2PI


def mixture_nll(image: Tensor, log_masks: Tensor, slot_means: Tensor, sigmas: Tensor,
                per_channel: bool = False) -> Tensor:
    """Negative log-likelihood of the pixel mixture, per image.

    Args:
        image: ``[B,C,H,W]``.
        log_masks: ``[B,K,1,H,W]``, logsumexp over K is 0.
        slot_means: ``[B,K,C,H,W]`` component means.
        sigmas: ``[K]`` per-slot standard deviations.
        per_channel: one mixture per (pixel, channel) instead of per pixel.

    Returns:
        ``[B]`` summed over pixels (and channels).
    """
    log_density = gaussian_log_density(image[:, None], slot_means, sigmas.view(1, -1, 1, 1, 1))
    if not per_channel:
        log_density = log_density.sum(dim=2, keepdim=True)  # [B,K,1,H,W]
    return -torch.logsumexp(log_masks + log_density, dim=1).flatten(1).sum(1)


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` elementwise."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)


def mask_kl(log_masks: Tensor, mask_logits: Tensor) -> Tensor:
    """Per-image ``sum_pixels KL(m || softmax(mask_logits))`` over slots.

    ``log_masks``, ``mask_logits``: ``[B,K,1,H,W]``; the KL is computed from log masks (no clamps).
    """
    log_q = F.log_softmax(mask_logits, dim=1)
    return (log_masks.exp() * (log_masks - log_q)).flatten(1).sum(1)


def build_attention(cfg: AttentionConfig, in_channels: int, image_size: int, num_slots: int) -> nn.Module:
    """Build the attention network named by ``cfg.type`` (MONet's U-Net, or RN50 / RN50*)."""
    if cfg.type == AttentionType.unet_recurrent:
        return RecurrentUNetAttention(cfg, in_channels, image_size)
    from .resnet_attention import ResNetAttention  # imports torchvision, so only when asked for

    return ResNetAttention(cfg, in_channels, image_size, num_slots)


class MONet(SceneModelBase):
    """MONet with a configurable attention network.

    ``forward(image [B,C,H,W], num_slots=None) -> ModelOutput`` (see :class:`ModelOutput`).
    The component VAE runs once on all ``B*K`` slots.
    """

    def __init__(self, cfg: MONetConfig, in_channels: int = 3, image_size: int = 64):
        super().__init__()
        self.cfg = cfg
        self.num_slots = cfg.num_slots
        self.attention = build_attention(cfg.attention, in_channels, image_size, cfg.num_slots)
        self.component = ComponentVAE(cfg.component, in_channels, image_size, cfg.latent_dim)
        self.per_channel = cfg.loss.likelihood == "per_channel"
        self.register_buffer("train_beta", torch.tensor(self.beta_at(0)), persistent=False)
        # 1 while lambda weighs the component VAE's terms (geco_scope=component, from geco_component_from_step)
        self.register_buffer("component_scope", torch.tensor(self.component_scope_at(0)), persistent=False)
        if cfg.loss.geco_mse_target is not None:
            self.register_buffer("geco_lambda", torch.tensor(1.0))
            self.register_buffer("geco_mse_ema", torch.tensor(float("nan")))

    latent_decoder = "slot_vae"  # the component VAE decodes each slot's latent (traversals, slot swaps)

    @property
    def adjustable_num_slots(self) -> bool:
        """The recurrent attention takes any K at inference; a one-pass attention (RN50/RN50*) predicts a
        fixed number of masks."""
        return self.attention.recurrent

    def parameter_groups(self, lr: float) -> list[dict]:
        """Optimiser groups: every parameter at ``lr``, except that with a one-pass attention and
        ``attention.trunk_lr_scale != 1`` the ResNet trunk (``attention.encoder``) is a second group at
        ``lr * trunk_lr_scale``."""
        scale = self.cfg.attention.trunk_lr_scale
        if scale == 1 or self.attention.recurrent:
            return [{"params": [p for p in self.parameters() if p.requires_grad]}]
        trunk = self.attention.encoder
        trunk_ids = {id(p) for p in trunk.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in trunk_ids]
        return [{"params": rest, "lr": lr, "name": "model"},
                {"params": [p for p in trunk.parameters() if p.requires_grad], "lr": lr * scale, "name": "trunk"}]

    def beta_at(self, step: int) -> float:
        """The training KL(z) weight at ``step``: ``beta_initial`` until ``beta_warmup_start``, then a linear
        ramp over ``beta_warmup_steps`` to ``beta`` (constant ``beta`` when both are 0)."""
        c = self.cfg.loss
        if c.beta_warmup_steps <= 0 and c.beta_warmup_start <= 0:
            return c.beta
        if step < c.beta_warmup_start:
            return c.beta_initial
        done = 1.0 if c.beta_warmup_steps <= 0 else min(1.0, (step - c.beta_warmup_start) / c.beta_warmup_steps)
        return c.beta_initial + (c.beta - c.beta_initial) * done

    def component_scope_at(self, step: int) -> float:
        """1.0 where GECO's lambda weighs the component VAE's terms at training ``step``, else 0.0."""
        loss_cfg = self.cfg.loss
        return float(loss_cfg.geco_scope == GecoScope.component and step >= loss_cfg.geco_component_from_step)

    def set_step(self, step: int) -> None:
        """Global training step (for the ``beta`` warm-up and ``geco_component_from_step``)."""
        self.train_beta.fill_(self.beta_at(int(step)))
        self.component_scope.fill_(self.component_scope_at(int(step)))

    @torch.no_grad()
    def _geco_update(self, mse: Tensor) -> Tensor:
        """Update the GECO moving average and ``lambda`` from this batch's MSE; return the ``lambda`` to use."""
        cfg = self.cfg.loss
        ema = self.geco_mse_ema
        ema.copy_(torch.where(torch.isnan(ema), mse, cfg.geco_ema * ema + (1 - cfg.geco_ema) * mse))
        weight = self.geco_lambda.clone()  # this step uses the weight from before the update
        low = 1 / cfg.geco_max_weight if cfg.geco_min_weight is None else cfg.geco_min_weight
        self.geco_lambda.mul_(torch.exp(cfg.geco_rate * (ema / cfg.geco_mse_target - 1))).clamp_(
            low, cfg.geco_max_weight)
        return weight

    def slot_sigmas(self, num_slots: int, like: Tensor) -> Tensor:
        """``[K]`` per-slot standard deviations: ``sigma_bg`` for slot 0, ``sigma_fg`` for the others."""
        sigmas = like.new_full((num_slots,), self.cfg.loss.sigma_fg)
        sigmas[0] = self.cfg.loss.sigma_bg
        return sigmas

    def components(self, image: Tensor, log_masks: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Run the component VAE on every slot of ``image [B,C,H,W]`` under ``log_masks [B,K,1,H,W]``.

        Returns ``(mean [B*K,D], logvar [B*K,D], slot_means [B,K,C,H,W], mask_logits [B,K,1,H,W])``; the
        latents are sampled while training and set to the mean in eval mode.
        """
        (b, c, h, w), k = image.shape, log_masks.shape[1]
        flat_image = image[:, None].expand(b, k, c, h, w).reshape(b * k, c, h, w)
        mean, logvar = self.component.encode(flat_image, log_masks.reshape(b * k, 1, h, w))
        if self.training:
            z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        else:
            z = mean
        slot_means, mask_logits = self.component.decode(z)
        return mean, logvar, slot_means.view(b, k, c, h, w), mask_logits.view(b, k, 1, h, w)

    def forward(self, image: Tensor, num_slots: int | None = None) -> ModelOutput:
        k = num_slots or self.num_slots
        b = image.shape[0]
        log_masks = self.attention(image, k)  # [B,K,1,H,W]
        k = log_masks.shape[1]
        mean, logvar, slot_means, mask_logits = self.components(image, log_masks)

        loss_cfg = self.cfg.loss
        sigmas = self.slot_sigmas(k, image)
        nll = mixture_nll(image, log_masks, slot_means, sigmas, self.per_channel)
        kl_z = gaussian_kl(mean, logvar).view(b, -1).sum(1)
        kl_m = mask_kl(log_masks, mask_logits)
        beta = self.train_beta if self.training else loss_cfg.beta
        masks = log_masks.exp()
        recon = (masks * slot_means).sum(1)
        terms = {"nll": nll.mean(), "kl_z": kl_z.mean(), "kl_mask": kl_m.mean()}
        nll_weight = 1.0
        if loss_cfg.geco_mse_target is not None and self.training:
            nll_weight = self._geco_update((recon.detach() - image).pow(2).mean())
            terms["geco_lambda"] = nll_weight
        component_weight = 1.0
        if loss_cfg.geco_scope == GecoScope.component and self.training:
            component_weight = 1.0 + self.component_scope * (nll_weight - 1.0)  # lambda once the scope is on
        per_image = nll_weight * nll + component_weight * beta * kl_z + loss_cfg.gamma * kl_m
        if self.training and (loss_cfg.gamma_decoder is not None or loss_cfg.geco_scope == GecoScope.component):
            # the component VAE's mask reconstruction at decoder_weight; the attention's gradient stays gamma
            decoder_weight = component_weight * (loss_cfg.gamma if loss_cfg.gamma_decoder is None
                                                 else loss_cfg.gamma_decoder)
            per_image = per_image + (decoder_weight - loss_cfg.gamma) * mask_kl(log_masks.detach(), mask_logits)

        return ModelOutput(
            loss=per_image.mean(),
            loss_terms=terms,
            log_masks=log_masks,
            slot_recons=slot_means,
            recon=recon,
            latents=mean.view(b, k, -1),
            extras={"recon_log_masks": F.log_softmax(mask_logits, dim=1), "latent_logvar": logvar.view(b, k, -1)},
        )
