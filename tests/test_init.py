"""Initialisation study schemes: truncated-normal bounds, standard deviations, zero biases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from scenedecomp.config import load_config
from scenedecomp.models import build_model
from scenedecomp.models.init import initialize, scheme_bounds, truncated_std

# (layer, fan_in, fan_out) with the fans written out by hand (PyTorch's convention)
LAYERS = [
    (lambda: nn.Linear(512, 2048), 512, 2048),
    (lambda: nn.Conv2d(64, 128, 3), 64 * 9, 128 * 9),
    # ConvTranspose2d weight is [C_in, C_out, k, k]: PyTorch counts C_out*k*k as fan_in
    (lambda: nn.ConvTranspose2d(96, 64, 5), 64 * 25, 96 * 25),
]


def expected_k(scheme: str, fan_in: int, fan_out: int) -> float:
    return 1.0 / fan_in if scheme == "trunc_normal_default" else 2.0 / fan_out


def test_truncated_std_factor():
    # N(0, s) cut at sqrt(3) s has std 0.8147 s.
    assert truncated_std(1.0, math.sqrt(3.0)) == pytest.approx(0.81469, abs=1e-4)
    assert truncated_std(2.0, 1e6) == pytest.approx(2.0)


@pytest.mark.parametrize("scheme", ["trunc_normal_default", "trunc_normal_kaiming"])
@pytest.mark.parametrize("index", range(len(LAYERS)))
def test_weights_in_bounds_with_stated_std(scheme, index):
    make, fan_in, fan_out = LAYERS[index]
    torch.manual_seed(index)
    layer = make()
    initialize(layer, scheme)
    w = layer.weight.detach().double().flatten()
    k = expected_k(scheme, fan_in, fan_out)
    bound, sigma = math.sqrt(k), math.sqrt(k / 3.0)
    assert scheme_bounds(layer.weight, scheme) == pytest.approx((sigma, bound))
    n = w.numel()
    assert w.abs().max() <= bound * (1 + 1e-6)
    assert w.abs().max() >= 0.97 * bound  # the support reaches the cut
    std = truncated_std(sigma, bound)
    # standard error of the sample std ~ std / sqrt(2n) (a bit less for a truncated normal): 5 se tolerance
    assert w.std().item() == pytest.approx(std, rel=5 / math.sqrt(2 * n))
    assert abs(w.mean().item()) < 5 * std / math.sqrt(n)
    # shape: P(|w| < sigma) is 0.6827 / 0.9167 = 0.7447 for this truncated normal (0.577 for a uniform)
    inside = (w.abs() < sigma).double().mean().item()
    expected_inside = math.erf(1 / math.sqrt(2)) / math.erf(math.sqrt(1.5))
    assert inside == pytest.approx(expected_inside, abs=2.5 / math.sqrt(n))
    assert torch.all(layer.bias == 0)


def test_norm_layers_untouched_and_biases_zero():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.InstanceNorm2d(8, affine=True),
                          nn.GroupNorm(2, 8), nn.Linear(8, 4))
    with torch.no_grad():
        for m in model:
            if not isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-1, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    initialize(model, "trunc_normal_kaiming")
    after = model.state_dict()
    for key in before:
        if key.startswith(("0.", "4.")):
            if key.endswith("bias"):
                assert torch.all(after[key] == 0)
            else:
                assert not torch.equal(after[key], before[key])
        else:
            assert torch.equal(after[key], before[key]), key


def test_keep_init_modules_are_skipped():
    keep = nn.Linear(4, 4)
    keep.keep_init = True
    model = nn.Sequential(nn.Sequential(keep), nn.Linear(4, 4))
    before = keep.weight.clone()
    initialize(model, "trunc_normal_default")
    assert torch.equal(keep.weight, before)
    assert torch.all(model[1].bias == 0)


def test_torch_default_changes_nothing_and_unknown_is_refused():
    layer = nn.Linear(4, 4)
    before = layer.weight.clone()
    initialize(layer, "torch_default")
    assert torch.equal(layer.weight, before)
    with pytest.raises(ValueError, match="unknown scheme"):
        initialize(layer, "xavier")


@pytest.mark.parametrize("attention", ["unet_recurrent", "resnet_skip"])
def test_build_model_applies_scheme_to_every_conv_and_linear(attention):
    cfg = load_config(None, [f"model.attention.type={attention}", "model.attention.backbone=resnet18",
                             "model.init=trunc_normal_default", "model.num_slots=3"])
    model = build_model(cfg.model, 3, 32)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    assert layers
    for m in layers:
        _, bound = scheme_bounds(m.weight, "trunc_normal_default")
        assert m.weight.abs().max() <= bound * (1 + 1e-6)
        if m.bias is not None:
            assert torch.all(m.bias == 0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.affine:
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
