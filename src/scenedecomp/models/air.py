"""AIR: Attend, Infer, Repeat (Eslami et al. 2016).

Generative model (per image, at most ``N = max_steps`` objects)::

    z_pres_t ~ prior (below), forced to 0 after the first 0        (z_pres_0 := 1 before the first step)
    z_where_t = (s, x, y) ~ N([s_mean, 0, 0], diag[s_sd^2, 1, 1])
    z_what_t ~ N(0, I)
    patch_t = sigmoid(decoder(z_what_t) + decoder_bias)            ([C,P,P], empty by default)
    canvas  = background + sum_t z_pres_t * paste(patch_t, z_where_t)   (``composition: additive``)
    x ~ N(canvas, likelihood_sd^2)                                 (per pixel and channel)

Spatial transformer (Pyro convention): :func:`paste` writes a patch with ``theta = [[s,0,x],[0,s,y]]`` (a
canvas point ``c`` reads the patch at ``s*c + (x, y)``), :func:`crop` reads with the inverse
``[1/s, -x/s, -y/s]``. The object's window is centred at ``-(x, y)/s`` in ``[-1,1]`` canvas coordinates and
covers ``1/s`` of the canvas side.

Inference: one recurrent network (an LSTM with ``lstm_hidden`` units) reads the flattened image and the
previous ``(z_pres, z_where, z_what)``; at each step it gives ``p_pres`` (sigmoid) and the mean and
softplus scale of ``z_where``; the patch under ``z_where`` is cropped and encoded by an MLP
(``what_hidden``) into the mean and softplus scale of ``z_what``. ``z_where`` and ``z_what`` are
reparameterised; ``z_pres`` is a Bernoulli sample times the previous ``z_pres``. Only this recurrence is
sequential: the image's input projection is computed once for all steps, and the decoder and the
``paste`` of all steps run once on ``B*N`` patches after the recurrence.

Loss per image (minimised; batch mean)::

    nll      = -log N(x | canvas, sd)                      summed over pixels
    kl_what  = sum_t z_pres_t KL(q(z_what_t) || N(0,I))    (closed form)
    kl_where = sum_t z_pres_t KL(q(z_where_t) || prior)    (closed form)
    kl_pres  = sum_t z_pres_{t-1} KL(Bern(p_t) || Bern(prior_t))   (closed form; steps that were sampled)
    elbo     = -(nll + kl_what + kl_where + kl_pres)
    reinforce = sum_t z_pres_{t-1} log q(z_pres_t) * (signal_t - baseline_t)      (all but log q detached)
    signal_t  = nll + sum_{s >= t} (kl_what_s + kl_where_s + kl_pres_s)     (reverse cumsum, detached)
    baseline_mse = sum_t z_pres_{t-1} (b_t - (signal_t - c) / v)^2,  baseline_t = c + v * b_t.detach()
    loss = nll + kl_what + kl_where + kl_pres + reinforce + baseline_mse

The closed-form ``kl_pres`` gives ``p_pres`` a direct gradient; REINFORCE supplies the gradient of
the sampled ``z_pres`` through the reconstruction and the later steps. The baseline ``b_t`` is its own
recurrent network (LSTM, ``baseline_hidden``) over the image (average-pooled by ``baseline_pool``: a
coarse image is enough to predict the learning signal, and it cuts the input weights 4x) and the
detached previous latents, so it learns only from ``baseline_mse`` (its inputs are detached and it
enters ``reinforce`` detached) while the model never learns from ``baseline_mse``. Its parameters form
their own optimiser group with ``baseline_lr`` (:meth:`AIR.parameter_groups`).

Options for reliable counting (defaults in :class:`AIRConfig`; docs/results.md measures them):

- Prior: a fixed ``Bernoulli(z_pres_prob = 0.01)`` per step by default, so every extra step costs about
  ``log(p/0.01)`` nats. Also: a truncated geometric prior on the count (``z_pres_prior: geometric``,
  ``P(n) ∝ rho^n`` on ``0..N``) and a log-linear annealing from ``z_pres_prob_start`` over
  ``z_pres_anneal_steps`` steps (:meth:`AIR.set_step`).
- Baseline scale (``baseline_normalize``, NVIL centring): the baseline predicts the learning signal on a
  unit scale, from running estimates of its mean ``c`` and standard deviation ``v`` (buffers updated in
  training); the advantage keeps the signal's own scale.
- Initialisation: the presence logit has a learned per-step offset (``pres_bias``) that starts at
  ``p_pres = z_pres_init`` (0.9) for the first step and ``z_pres_init_later`` (0.2) for later ones, so the
  first step learns to find an object anywhere and later steps switch on where they pay off (with equal
  starts, a first step that draws nothing can stay on while a later step draws the object, and single
  objects are then counted twice). The ``z_where`` head starts at the prior mean scale (window centred)
  with posterior scale 0.1; ``decoder_bias`` (-2) makes empty patches the default. These heads carry
  ``keep_init = True``, so ``model.init`` schemes leave them as they are.
- Exploration floor (``z_pres_floor``; 0 is the paper's unrestricted Bernoulli): in training
  ``q(z_pres = 1) = floor + (1 - 2 floor) sigmoid(logit)``, so a step that may run is sampled at least that
  often and keeps learning to draw; the decision ``p_pres > 0.5`` and the closed-form ``kl_pres`` and
  ``log q`` keep their form (:meth:`AIR.floored_logit`). ``air-multi-mnist`` sets 0.05.
- Deterministic evaluation: in ``eval()`` mode ``z_pres = p_pres > 0.5`` (with the masking), and
  ``z_where`` and ``z_what`` are their means, so counts and figures are reproducible.

Masks for the shared output contract (``K = N + 1`` slots; slot 0 is the background). They are derived
for evaluation and figures only (detached; not part of the loss):

- ``composition: additive`` (the paper's canvas): per pixel, the weight of object ``t`` is its
  intensity ``w_t = z_pres_t * mean_c paste(patch_t)``, the background has the constant weight
  ``w_0 = mask_background`` (0.1), and ``m_k = w_k / sum_j w_j``. The argmax labels a pixel with the
  brightest object wherever that object's decoded intensity exceeds ``mask_background``. (The decoded
  digits are smoother than the data, so a threshold of 0.5, the one that defines the data's label
  maps, leaves many stroke pixels to the background; docs/results.md compares thresholds.)
- ``composition: alpha``: the compositing weights themselves, step 1 in front:
  ``m_t = alpha_t prod_{j<t} (1 - alpha_j)``, ``m_0 = prod_t (1 - alpha_t)`` (``alpha_t`` = ``z_pres_t``
  times the pasted decoded alpha).

``recon`` is the likelihood mean ``canvas`` clipped to [0, 1] (for ``alpha`` composition it equals
``sum_k m_k slot_recons_k``; for the additive canvas it is the sum of the objects, which the mixture
only approximates). ``slot_recons``: slot 0 the background, slot ``t`` the pasted patch of step ``t``
(zero outside its window). ``latents [B,K,3+what_dim]``: ``(z_where mean, z_what mean)`` per step,
zeros for slot 0.

Options beyond the paper, for RGB scenes on coloured backgrounds (``multi_sprites``):
``composition: alpha`` (the decoder also outputs an alpha channel, ``sigmoid(. + decoder_bias)``, and the
objects are alpha-composited over the background in step order) and ``background: color`` (a small
deterministic network predicts one background colour per image from an 8x8 average-pooled image; the
inference network, the glimpses and the baseline then read the image minus that colour, so on a
coloured background they see the objects as on black).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..choices import Choice
from .output import ModelOutput
from .scene_model import SceneModelBase

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_EMA = 0.99  # decay of the running learning-signal statistics
_LOG_FLOOR = math.log(1e-12)  # log-mask floor where a mask is exactly 0


# --- configuration -----------------------------------------------------------------------------------
class ZPresPrior(Choice):  # prior of z_pres (see the module docstring)
    bernoulli = "bernoulli"
    geometric = "geometric"


class Composition(Choice):  # how the decoded patches make the canvas
    additive = "additive"  # the paper's
    alpha = "alpha"  # decoded alpha, step-ordered compositing


class Background(Choice):
    none = "none"  # black
    color = "color"  # one predicted colour per image


@dataclass
class AIRConfig:
    """``model.air``: AIR's settings (see the module docstring)."""

    max_steps: int = 3
    lstm_hidden: int = 256
    patch_size: int = 28
    what_dim: int = 50
    what_hidden: int = 200
    decoder_bias: float = -2.0
    likelihood_sd: float = 0.3
    z_pres_prior: ZPresPrior = ZPresPrior.bernoulli
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
    z_pres_floor: float = 0.0  # q(z_pres) = floor + (1 - 2 floor) sigmoid(logit): every step stays explored
    composition: Composition = Composition.additive
    background: Background = Background.none
    mask_background: float = 0.1  # additive composition: background weight of the derived masks


# --- spatial transformer ------------------------------------------------------------------------------
def _grid(z_where: Tensor, height: int, width: int, inverse: bool) -> Tensor:
    """Sampling grid ``[B,H,W,2]`` of the affine map ``c -> s*c + (x, y)`` (or its inverse) at the pixel
    centres of an ``H x W`` output, in ``align_corners=False`` coordinates.

    Equal to ``F.affine_grid([[s,0,x],[0,s,y]], ...)`` but built by broadcasting (no batched matmul).
    """
    s, x, y = z_where[:, 0:1], z_where[:, 1:2], z_where[:, 2:3]
    if inverse:
        s = 1.0 / s
        x, y = -x * s, -y * s
    us = (torch.arange(width, device=z_where.device, dtype=z_where.dtype) * 2 + 1) / width - 1
    vs = (torch.arange(height, device=z_where.device, dtype=z_where.dtype) * 2 + 1) / height - 1
    gx = (s * us + x)[:, None, :].expand(-1, height, width)
    gy = (s * vs + y)[:, :, None].expand(-1, height, width)
    return torch.stack([gx, gy], dim=-1)


def crop(image: Tensor, z_where: Tensor, patch: int) -> Tensor:
    """Read the window of ``z_where [B,3] = (s, x, y)`` from ``image [B,C,H,W]`` into ``[B,C,P,P]``."""
    grid = _grid(z_where, patch, patch, inverse=True)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def paste(patch: Tensor, z_where: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Write ``patch [B,C,P,P]`` into a zero canvas ``[B,C,H,W]`` at the window of ``z_where [B,3]``."""
    h, w = (size, size) if isinstance(size, int) else size
    grid = _grid(z_where, h, w, inverse=False)
    return F.grid_sample(patch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def window_boxes(z_where: Tensor, height: int, width: int) -> Tensor:
    """Pixel boxes ``[..., 4] = (x0, y0, x1, y1)`` of the windows of ``z_where [..., 3] = (s, x, y)``.

    :func:`paste` puts the patch where ``s*c + (x, y)`` lies in ``[-1, 1]``, i.e. canvas coordinates
    ``c`` in ``[(-1 - x)/s, (1 - x)/s]`` (columns; rows likewise with ``y``); pixel ``p = (c + 1) * W / 2``
    (``align_corners=False``).
    """
    s, x, y = z_where.unbind(-1)
    x0, x1 = ((-1 - x) / s + 1) * width / 2, ((1 - x) / s + 1) * width / 2
    y0, y1 = ((-1 - y) / s + 1) * height / 2, ((1 - y) / s + 1) * height / 2
    return torch.stack([x0, y0, x1, y1], dim=-1)


# --- loss helpers -------------------------------------------------------------------------------------
def learning_signal(nll: Tensor, kl_steps: Tensor) -> Tensor:
    """``signal[b, t] = nll[b] + sum_{s >= t} kl_steps[b, s]`` via a reverse cumulative sum.

    ``nll [B]``, ``kl_steps [B,N]`` (each step's KL terms, already masked) -> ``[B,N]``.
    """
    return nll[:, None] + kl_steps.flip(1).cumsum(1).flip(1)


def normal_kl(mean: Tensor, std: Tensor, prior_mean: Tensor | float, prior_std: Tensor | float) -> Tensor:
    """Elementwise ``KL(N(mean, std) || N(prior_mean, prior_std))``."""
    prior_std = torch.as_tensor(prior_std, dtype=mean.dtype, device=mean.device)
    var_ratio = (std / prior_std).pow(2)
    return 0.5 * (var_ratio + ((mean - prior_mean) / prior_std).pow(2) - 1.0 - var_ratio.log())


def bernoulli_kl(logits: Tensor, prior_prob: Tensor | float) -> Tensor:
    """Elementwise ``KL(Bernoulli(sigmoid(logits)) || Bernoulli(prior_prob))`` (stable in logit space)."""
    prior_prob = torch.as_tensor(prior_prob, dtype=logits.dtype, device=logits.device)
    p = torch.sigmoid(logits)
    log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    return p * (log_p - prior_prob.log()) + (1 - p) * (log_1mp - torch.log1p(-prior_prob))


def geometric_step_probs(rho: float, steps: int) -> list[float]:
    """Per-step ``P(z_t = 1 | z_{<t} = 1)`` of a count prior ``P(n) ∝ rho^n`` truncated to ``0..steps``."""

    def tail(t: int) -> float:  # P(n >= t) up to the normaliser: sum_{k=t}^{steps} rho^k
        return sum(rho ** k for k in range(t, steps + 1))

    return [tail(t) / tail(t - 1) for t in range(1, steps + 1)]


# --- networks -----------------------------------------------------------------------------------------
class _ImageLSTM(nn.Module):
    """LSTM over steps whose input is a fixed image plus a per-step vector.

    The image's contribution to the gates is computed once (:meth:`project`) and reused at every step.
    """

    def __init__(self, image_dim: int, step_dim: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.image_in = nn.Linear(image_dim, 4 * hidden)
        self.step_in = nn.Linear(step_dim + hidden, 4 * hidden, bias=False)

    def project(self, image_flat: Tensor) -> Tensor:
        return self.image_in(image_flat)

    def initial_state(self, batch: int, ref: Tensor) -> tuple[Tensor, Tensor]:
        zeros = ref.new_zeros(batch, self.hidden)
        return zeros, zeros

    def step(self, image_gates: Tensor, step_input: Tensor,
             state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = image_gates + self.step_in(torch.cat([step_input, h], dim=1))
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class Baseline(nn.Module):
    """REINFORCE baseline: own LSTM over the detached image and previous latents, one value per step."""

    def __init__(self, image_dim: int, step_dim: int, hidden: int):
        super().__init__()
        self.rnn = _ImageLSTM(image_dim, step_dim, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, image_flat: Tensor, step_inputs: Tensor) -> Tensor:
        """``image_flat [B,D]``, ``step_inputs [B,N,S]`` (the latents before each step) -> ``[B,N]``."""
        image_flat, step_inputs = image_flat.detach(), step_inputs.detach()
        gates = self.rnn.project(image_flat)
        state = self.rnn.initial_state(image_flat.shape[0], image_flat)
        outputs = []
        for t in range(step_inputs.shape[1]):
            state = self.rnn.step(gates, step_inputs[:, t], state)
            outputs.append(state[0])
        return self.out(torch.stack(outputs, dim=1)).squeeze(-1)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


# --- the model ----------------------------------------------------------------------------------------
class AIR(SceneModelBase):
    """Attend-Infer-Repeat. ``forward(image [B,C,H,W], num_slots=None) -> ModelOutput`` with ``K = N + 1``.

    ``num_slots`` (if given) sets the number of steps to ``num_slots - 1``. See the module docstring.
    """

    # parameters that only training uses (the REINFORCE baseline): a model folder may leave them out
    training_only_prefixes = ("baseline.",)
    adjustable_num_slots = False  # at inference AIR keeps the number of steps it was trained with
    latent_decoder = "glimpse"  # decode(z_what): a step's patch (traversals of z_what)

    def __init__(self, cfg: AIRConfig, in_channels: int = 1, image_size: int | tuple[int, int] = 50):
        super().__init__()
        a = cfg
        if a.max_steps < 1:
            raise ValueError(f"AIR: max_steps N must be at least 1, got {a.max_steps}")
        if a.z_pres_prior not in ("bernoulli", "geometric"):
            raise ValueError(f"AIR: z_pres_prior must be bernoulli or geometric, got {a.z_pres_prior!r}")
        if not 0.0 < a.z_pres_prob < 1.0:
            raise ValueError(f"AIR: z_pres_prob must lie in (0, 1), got {a.z_pres_prob}")
        if a.z_pres_prob_start is not None and not 0.0 < a.z_pres_prob_start < 1.0:
            raise ValueError(f"AIR: z_pres_prob_start must lie in (0, 1), got {a.z_pres_prob_start}")
        if not 0.0 <= a.z_pres_floor < 0.5:
            raise ValueError(f"AIR: z_pres_floor must lie in [0, 0.5), got {a.z_pres_floor}")
        if a.composition not in ("additive", "alpha"):
            raise ValueError(f"AIR: composition must be additive or alpha, got {a.composition!r}")
        if a.background not in ("none", "color"):
            raise ValueError(f"AIR: background must be none or color, got {a.background!r}")
        if a.mask_background <= 0:
            raise ValueError(f"AIR: mask_background must be positive, got {a.mask_background}")
        if a.patch_size < 2 or a.likelihood_sd <= 0:
            raise ValueError("AIR: patch_size must be >= 2 and likelihood_sd positive")
        self.cfg = cfg
        self.max_steps = a.max_steps
        self.num_slots = a.max_steps + 1
        self.in_channels = in_channels
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.patch = a.patch_size
        self.what_dim = a.what_dim
        self.alpha = a.composition == "alpha"
        image_dim = in_channels * self.image_size[0] * self.image_size[1]
        patch_dim = in_channels * self.patch * self.patch
        step_dim = 1 + 3 + a.what_dim  # previous (z_pres, z_where, z_what)

        self.rnn = _ImageLSTM(image_dim, step_dim, a.lstm_hidden)
        self.pres_head = nn.Linear(a.lstm_hidden, 1, bias=False)
        self.pres_bias = nn.Parameter(torch.zeros(a.max_steps))  # per-step z_pres logit offset
        self.where_head = nn.Linear(a.lstm_hidden, 6)
        self.what_encoder = _mlp([patch_dim, a.what_hidden, 2 * a.what_dim])
        out_dim = patch_dim + (self.patch * self.patch if self.alpha else 0)
        self.decoder = _mlp([a.what_dim, a.what_hidden, out_dim])
        self.bg_net = _mlp([in_channels * 64, 64, in_channels]) if a.background == "color" else None
        if a.baseline_pool < 1:
            raise ValueError(f"AIR: baseline_pool must be at least 1, got {a.baseline_pool}")
        self.baseline_pool = a.baseline_pool
        pooled = [n // a.baseline_pool for n in self.image_size]
        self.baseline = Baseline(in_channels * pooled[0] * pooled[1], step_dim, a.baseline_hidden)

        self.register_buffer("signal_mean", torch.zeros(()))
        self.register_buffer("signal_var", torch.ones(()))
        self.register_buffer("signal_updates", torch.zeros((), dtype=torch.long))
        self._step = 0
        self._init_heads()

    @torch.no_grad()
    def _init_heads(self) -> None:
        a = self.cfg
        def logit(p: float) -> float:
            p = min(max(p, 1e-4), 1 - 1e-4)
            return math.log(p / (1 - p))

        self.pres_head.weight.mul_(0.1)
        later = a.z_pres_init if a.z_pres_init_later is None else a.z_pres_init_later
        self.pres_bias.fill_(logit(later))
        self.pres_bias[0] = logit(a.z_pres_init)
        self.where_head.weight.mul_(0.1)
        self.where_head.bias.zero_()
        self.where_head.bias[0] = a.z_where_prior_scale_mean
        self.where_head.bias[3:] = _inverse_softplus(0.1)
        # the decoder's last layer keeps torch's init; its outputs pass through sigmoid(. + decoder_bias)
        for head in (self.pres_head, self.where_head):
            head.keep_init = True

    def floored_logit(self, logit: Tensor) -> Tensor:
        """The logit of ``p = floor + (1 - 2 floor) sigmoid(logit)`` (``z_pres_floor``; unchanged at 0).

        The map keeps the sign of the logit, so ``p > 0.5`` exactly where ``logit > 0``."""
        eps = self.cfg.z_pres_floor
        if eps <= 0:
            return logit
        log_eps, log_rest = math.log(eps), math.log1p(-2 * eps)
        log_p = torch.logaddexp(logit.new_tensor(log_eps), log_rest + F.logsigmoid(logit))
        log_1mp = torch.logaddexp(logit.new_tensor(log_eps), log_rest + F.logsigmoid(-logit))
        return log_p - log_1mp

    # --- annealing / optimisation hooks -----------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """Global training step (for the annealed ``z_pres`` prior)."""
        self._step = int(step)

    def z_pres_prob(self, step: int | None = None) -> float:
        """The prior's ``rho`` at ``step`` (log-linear annealing from ``z_pres_prob_start``)."""
        a = self.cfg
        step = self._step if step is None else step
        if a.z_pres_prob_start is None or a.z_pres_anneal_steps <= 0:
            return a.z_pres_prob
        frac = min(max(step / a.z_pres_anneal_steps, 0.0), 1.0)
        return math.exp((1 - frac) * math.log(a.z_pres_prob_start) + frac * math.log(a.z_pres_prob))

    def prior_step_probs(self, steps: int) -> list[float]:
        rho = self.z_pres_prob()
        if self.cfg.z_pres_prior == "geometric":
            return geometric_step_probs(rho, steps)
        return [rho] * steps

    def parameter_groups(self, lr: float) -> list[dict]:
        """Two optimiser groups: the model (``lr``) and the baseline (``baseline_lr``)."""
        baseline_ids = {id(p) for p in self.baseline.parameters()}
        model_params = [p for p in self.parameters() if id(p) not in baseline_ids]
        baseline_params = list(self.baseline.parameters())
        return [{"params": model_params, "lr": lr, "name": "model"},
                {"params": baseline_params, "lr": self.cfg.baseline_lr, "name": "baseline"}]

    # --- decoding -----------------------------------------------------------------------------------------
    def decode(self, z_what: Tensor) -> tuple[Tensor, Tensor | None]:
        """``z_what [M,D]`` -> patch colours ``[M,C,P,P]`` and (``alpha`` composition) alpha ``[M,1,P,P]``."""
        out = self.decoder(z_what)
        c, p = self.in_channels, self.patch
        bias = self.cfg.decoder_bias
        if not self.alpha:
            return torch.sigmoid(out + bias).view(-1, c, p, p), None
        colour = torch.sigmoid(out[:, : c * p * p]).view(-1, c, p, p)
        return colour, torch.sigmoid(out[:, c * p * p:] + bias).view(-1, 1, p, p)

    def background(self, image: Tensor) -> Tensor:
        """``[B,C,1,1]`` background colour (zeros without a background network)."""
        if self.bg_net is None:
            return image.new_zeros(image.shape[0], image.shape[1], 1, 1)
        pooled = F.adaptive_avg_pool2d(image, 8).flatten(1)
        return torch.sigmoid(self.bg_net(pooled))[:, :, None, None]

    # --- forward ------------------------------------------------------------------------------------------
    def forward(self, image: Tensor, num_slots: int | None = None) -> ModelOutput:
        a = self.cfg
        steps = self.max_steps if num_slots is None else int(num_slots) - 1
        if steps < 1:
            raise ValueError(f"AIR: num_slots must be at least 2 (background + one step), got {num_slots}")
        b, c, h, w = image.shape
        if (c, h, w) != (self.in_channels, *self.image_size):
            raise ValueError(f"AIR: expected images [B,{self.in_channels},{self.image_size[0]},"
                             f"{self.image_size[1]}], got {list(image.shape)}")
        sample = self.training
        bg = self.background(image)  # [B,C,1,1]
        # with a background model, inference reads the image minus its background colour
        seen = image if self.bg_net is None else image - bg
        image_flat = seen.flatten(1)
        image_gates = self.rnn.project(image_flat)
        state = self.rnn.initial_state(b, image)
        prev_pres = image.new_ones(b, 1)
        prev_where = image.new_zeros(b, 3)
        prev_what = image.new_zeros(b, self.what_dim)

        step_inputs, pres_logits, pres_list, pres_mask = [], [], [], []
        where_mean, where_std, where_list, what_mean, what_std, what_list = [], [], [], [], [], []
        for t in range(steps):
            step_in = torch.cat([prev_pres, prev_where, prev_what], dim=1)
            step_inputs.append(step_in)
            state = self.rnn.step(image_gates, step_in, state)
            hid = state[0]
            logit = self.floored_logit(self.pres_head(hid) + self.pres_bias[min(t, self.max_steps - 1)])  # [B,1]
            where_out = self.where_head(hid)
            mu_where, sd_where = where_out[:, :3], F.softplus(where_out[:, 3:]) + 1e-4
            if sample:
                z_where = mu_where + sd_where * torch.randn_like(mu_where)
                draw = torch.bernoulli(torch.sigmoid(logit).detach())
            else:
                z_where = mu_where
                draw = (logit > 0).to(logit.dtype)
            z_pres = prev_pres * draw
            glimpse = crop(seen, z_where, self.patch).flatten(1)
            what_out = self.what_encoder(glimpse)
            mu_what, sd_what = what_out[:, : self.what_dim], F.softplus(what_out[:, self.what_dim:]) + 1e-4
            z_what = mu_what + sd_what * torch.randn_like(mu_what) if sample else mu_what

            pres_mask.append(prev_pres)
            pres_logits.append(logit)
            pres_list.append(z_pres)
            where_mean.append(mu_where)
            where_std.append(sd_where)
            where_list.append(z_where)
            what_mean.append(mu_what)
            what_std.append(sd_what)
            what_list.append(z_what)
            prev_pres, prev_where, prev_what = z_pres, z_where, z_what

        # [B,N,...]
        z_pres = torch.cat(pres_list, dim=1)
        mask = torch.cat(pres_mask, dim=1)  # z_pres_{t-1}: step t was sampled
        logits = torch.cat(pres_logits, dim=1)
        z_where = torch.stack(where_list, dim=1)
        mu_where, sd_where = torch.stack(where_mean, dim=1), torch.stack(where_std, dim=1)
        z_what = torch.stack(what_list, dim=1)
        mu_what, sd_what = torch.stack(what_mean, dim=1), torch.stack(what_std, dim=1)

        # decode all steps at once
        colour, alpha = self.decode(z_what.reshape(b * steps, self.what_dim))
        where_flat = z_where.reshape(b * steps, 3)
        if alpha is None:
            pasted = paste(colour, where_flat, (h, w)).view(b, steps, c, h, w)
            opacity = pasted.mean(2, keepdim=True) * z_pres[:, :, None, None, None]  # intensity
        else:
            both = paste(torch.cat([colour, alpha], dim=1), where_flat, (h, w)).view(b, steps, c + 1, h, w)
            pasted, opacity = both[:, :, :c], both[:, :, c:] * z_pres[:, :, None, None, None]
        if alpha is None:
            canvas = bg + (pasted * z_pres[:, :, None, None, None]).sum(1)
        else:  # step 1 in front: weight_t = alpha_t prod_{j<t} (1 - alpha_j)
            transmit = torch.cumprod(1 - opacity, dim=1)  # [B,N,1,H,W]
            in_front = torch.cat([torch.ones_like(transmit[:, :1]), transmit[:, :-1]], dim=1)
            canvas = transmit[:, -1] * bg + (opacity * in_front * pasted).sum(1)
        if alpha is None:
            weights = torch.cat([torch.full_like(opacity[:, :1], a.mask_background), opacity.detach()], dim=1)
            log_masks = torch.log_softmax(torch.log(weights.clamp_min(1e-12)).clamp_min(_LOG_FLOOR), dim=1)
        else:
            log_masks = self._composite_log_masks(opacity.detach())

        # loss
        nll = -(-0.5 * ((image - canvas) / a.likelihood_sd).pow(2) - math.log(a.likelihood_sd)
                - _LOG_SQRT_2PI).flatten(1).sum(1)
        prior_where_mean = mu_where.new_tensor([a.z_where_prior_scale_mean, 0.0, 0.0])
        prior_where_std = mu_where.new_tensor([a.z_where_prior_scale_sd, 1.0, 1.0])
        kl_where_t = normal_kl(mu_where, sd_where, prior_where_mean, prior_where_std).sum(-1) * z_pres
        kl_what_t = normal_kl(mu_what, sd_what, 0.0, 1.0).sum(-1) * z_pres
        prior_probs = logits.new_tensor(self.prior_step_probs(steps))
        kl_pres_t = bernoulli_kl(logits, prior_probs) * mask
        kl_steps = kl_what_t + kl_where_t + kl_pres_t
        signal = learning_signal(nll.detach(), kl_steps.detach())  # [B,N]

        baseline_inputs = torch.stack(step_inputs, dim=1)
        small = F.avg_pool2d(seen, self.baseline_pool) if self.baseline_pool > 1 else seen
        b_hat = self.baseline(small.flatten(1), baseline_inputs)  # [B,N]
        centre, scale = self._signal_stats(signal, mask)
        target = (signal - centre) / scale
        baseline_mse = (mask * (b_hat - target).pow(2)).sum(1)
        advantage = (signal - (centre + scale * b_hat.detach())).detach()
        log_q = torch.where(z_pres.bool(), F.logsigmoid(logits), F.logsigmoid(-logits))
        reinforce = (mask * log_q * advantage).sum(1)

        kl_what, kl_where, kl_pres = kl_what_t.sum(1), kl_where_t.sum(1), kl_pres_t.sum(1)
        neg_elbo = nll + kl_what + kl_where + kl_pres
        loss = (neg_elbo + reinforce + baseline_mse).mean()

        bg_slot = bg.expand(b, c, h, w)[:, None]
        slot_recons = torch.cat([bg_slot, pasted], dim=1).clamp(0, 1)
        latents = torch.cat([mu_where, mu_what], dim=-1)
        latents = torch.cat([latents.new_zeros(b, 1, latents.shape[-1]), latents], dim=1)
        return ModelOutput(
            loss=loss,
            loss_terms={"nll": nll.mean(), "kl_what": kl_what.mean(), "kl_where": kl_where.mean(),
                        "kl_pres": kl_pres.mean(), "reinforce": reinforce.mean(),
                        "baseline_mse": baseline_mse.mean(), "elbo": -neg_elbo.mean()},
            log_masks=log_masks,
            slot_recons=slot_recons,
            recon=canvas.clamp(0, 1),
            latents=latents,
            extras={"z_pres": z_pres, "z_where": z_where, "z_what": z_what, "p_pres": torch.sigmoid(logits),
                    "num_objects": z_pres.sum(1), "learning_signal": signal,
                    "boxes": window_boxes(z_where.detach(), h, w),
                    "baseline": (centre + scale * b_hat).detach()},
        )

    @staticmethod
    def _composite_log_masks(opacity: Tensor) -> Tensor:
        """Log masks ``[B,N+1,1,H,W]`` of step-ordered compositing of opacities ``[B,N,1,H,W]`` in [0,1]."""
        log_a = torch.log(opacity.clamp_min(1e-12)).clamp_min(_LOG_FLOOR)
        log_1ma = torch.log1p(-opacity.clamp_max(1 - 1e-7))
        before = torch.cumsum(log_1ma, dim=1) - log_1ma  # sum_{j<t} log(1 - a_j)
        log_obj = log_a + before
        log_bg = log_1ma.sum(1, keepdim=True).clamp_min(_LOG_FLOOR)
        return torch.log_softmax(torch.cat([log_bg, log_obj], dim=1), dim=1)

    @torch.no_grad()
    def _signal_stats(self, signal: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Centre and scale of the learning signal (running EMA; see ``baseline_normalize``).

        Uses the statistics from before this batch, then (in training) updates them with it.
        """
        if not self.cfg.baseline_normalize:
            return signal.new_zeros(()), signal.new_ones(())
        weight = mask.sum()
        if not (self.training and weight > 0):
            return self.signal_mean.clone(), self.signal_var.clamp_min(1.0).sqrt()
        mean = (signal * mask).sum() / weight
        var = ((signal - mean).pow(2) * mask).sum() / weight
        if int(self.signal_updates) == 0:  # first batch: start from its own statistics
            self.signal_mean.copy_(mean)
            self.signal_var.copy_(var)
        centre, scale = self.signal_mean.clone(), self.signal_var.clamp_min(1.0).sqrt()
        self.signal_mean.mul_(_EMA).add_((1 - _EMA) * mean)
        self.signal_var.mul_(_EMA).add_((1 - _EMA) * (var + (mean - centre).pow(2)))
        self.signal_updates += 1
        return centre, scale
