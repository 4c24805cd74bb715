"""Weight initialisation schemes of the thesis' initialisation study (section 4.3).

``model.init`` selects one; :func:`scenedecomp.models.build_model` calls :func:`initialize` unless it is
``torch_default`` (PyTorch's own per-layer defaults: ``kaiming_uniform_(a=sqrt(5))``, i.e.
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for conv and linear weights).

Both schemes draw every conv (``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``) and ``Linear`` weight from a
normal ``N(0, sigma^2)`` truncated to ``[-bound, bound]`` (the normal density renormalised on the interval;
sampled exactly by the inverse CDF, see :func:`trunc_normal_`) with::

    bound = sqrt(k),   sigma = sqrt(k / 3)          (so the cut is at sqrt(3) sigma)

- ``trunc_normal_default`` ("PyTorch default adapted"): ``k = 1 / fan_in``. ``bound`` is the bound of
  PyTorch's default uniform init and ``sigma`` that uniform's standard deviation.
- ``trunc_normal_kaiming``: ``k = 2 / fan_out`` (the thesis' wording, "k = 2/n_out").

Fans follow PyTorch's convention (``torch.nn.init._calculate_fan_in_and_fan_out``): a conv weight
``[C_out, C_in/groups, kh, kw]`` has ``fan_in = C_in/groups * kh * kw`` and ``fan_out = C_out * kh * kw``; a
``Linear`` has ``fan_in = in_features`` and ``fan_out = out_features``. For ``ConvTranspose`` the weight is
stored ``[C_in, C_out/groups, kh, kw]`` and the same function (as PyTorch's default init does) counts
``C_out/groups * kh * kw`` as fan_in and ``C_in * kh * kw`` as fan_out.

Because the cut is at ``a = sqrt(3)`` standard deviations, the realised standard deviation of the weights is
smaller than ``sigma``::

    std = sigma * sqrt(1 - 2 a phi(a) / (2 Phi(a) - 1)) = 0.8147 * sigma      (a = sqrt(3))

(:func:`truncated_std` computes it; the tests check samples against it). Note that with ``k = 2/fan_out``
the realised std is ``0.8147 * sqrt(2 / (3 fan_out))`` = 0.47 x He's ``sqrt(2/fan_out)``: the scheme is
"Kaiming-scaled" in its ``k``, as the thesis describes it, not He's variance-preserving normal.

All biases of these layers are set to zero. Normalisation layers (BatchNorm, InstanceNorm, GroupNorm,
LayerNorm) keep their defaults (weight 1, bias 0), and other modules (e.g. LSTMs) are left untouched.
A module that carries ``keep_init = True`` (a pretrained ResNet encoder does) is skipped with all its
children, so transferred weights are never overwritten.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..choices import Choice


class InitScheme(Choice):  # ``model.init``
    torch_default = "torch_default"
    trunc_normal_default = "trunc_normal_default"
    trunc_normal_kaiming = "trunc_normal_kaiming"


SCHEMES = InitScheme.names()
INIT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
               nn.Linear)


def scheme_k(weight: torch.Tensor, name: str) -> float:
    """The ``k`` of scheme ``name`` for ``weight``: ``1/fan_in`` or ``2/fan_out``."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    if name == "trunc_normal_default":
        return 1.0 / fan_in
    if name == "trunc_normal_kaiming":
        return 2.0 / fan_out
    raise ValueError(f"model.init: unknown scheme {name!r}; expected one of {', '.join(SCHEMES)}")


def scheme_bounds(weight: torch.Tensor, name: str) -> tuple[float, float]:
    """``(sigma, bound)`` of the truncated normal for ``weight`` under scheme ``name``."""
    k = scheme_k(weight, name)
    return math.sqrt(k / 3.0), math.sqrt(k)


def truncated_std(sigma: float, bound: float) -> float:
    """Standard deviation of ``N(0, sigma^2)`` truncated symmetrically to ``[-bound, bound]``."""
    a = bound / sigma
    phi = math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    mass = math.erf(a / math.sqrt(2.0))  # 2 Phi(a) - 1
    return sigma * math.sqrt(1.0 - 2.0 * a * phi / mass)


@torch.no_grad()
def trunc_normal_(tensor: torch.Tensor, sigma: float, bound: float) -> torch.Tensor:
    """Fill ``tensor`` with ``N(0, sigma^2)`` truncated to ``[-bound, bound]`` by inverse-CDF sampling.

    ``u ~ U(-erf(c), erf(c))`` with ``c = bound / (sigma sqrt 2)``, then ``x = sigma sqrt(2) erfinv(u)``
    (clamped to the bound against rounding). Exact in distribution and one pass over the tensor, unlike
    the rejection sampler of this PyTorch's ``nn.init.trunc_normal_`` (several full passes).
    """
    edge = math.erf(bound / (sigma * math.sqrt(2.0)))
    tensor.uniform_(-edge, edge).erfinv_().mul_(sigma * math.sqrt(2.0)).clamp_(-bound, bound)
    return tensor


@torch.no_grad()
def initialize(model: nn.Module, name: str) -> nn.Module:
    """Re-initialise ``model`` in place with scheme ``name`` (see the module docstring); returns it."""
    if name == "torch_default":
        return model
    if name not in SCHEMES:
        raise ValueError(f"model.init: unknown scheme {name!r}; expected one of {', '.join(SCHEMES)}")

    def visit(module: nn.Module) -> None:
        if getattr(module, "keep_init", False):
            return
        if isinstance(module, INIT_LAYERS):
            sigma, bound = scheme_bounds(module.weight, name)
            trunc_normal_(module.weight, sigma, bound)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        for child in module.children():
            visit(child)

    visit(model)
    return model
