"""AIR: spatial transformer, z_pres masking, gradients and optimiser groups, learning signal, training."""

from __future__ import annotations

import math

import pytest
import torch

from scenedecomp.config import ConfigError, load_config
from scenedecomp.models import ModelConfig, build_model
from scenedecomp.models.air import (
    AIR,
    AIRConfig,
    bernoulli_kl,
    crop,
    geometric_step_probs,
    learning_signal,
    paste,
    window_boxes,
)


def _cfg(**air) -> AIRConfig:
    base = {"max_steps": 3, "lstm_hidden": 32, "patch_size": 8, "what_dim": 6, "what_hidden": 32,
            "baseline_hidden": 16}
    base.update(air)
    return AIRConfig(**base)


def _blobs(batch: int, size: int = 24, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """Images with 0-2 bright squares."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.zeros(batch, channels, size, size)
    for b in range(batch):
        for _ in range(b % 3):
            r, c = torch.randint(0, size - 7, (2,), generator=gen).tolist()
            image[b, :, r:r + 7, c:c + 7] = 1.0
    return image


# --- spatial transformer ------------------------------------------------------------------------------
def test_paste_then_crop_is_exact_on_aligned_windows():
    torch.manual_seed(0)
    patch = torch.rand(2, 3, 10, 10)
    z_where = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.4, -0.6]])  # offsets on the pixel lattice
    canvas = paste(patch, z_where, 20)
    assert canvas.shape == (2, 3, 20, 20)
    torch.testing.assert_close(crop(canvas, z_where, 10), patch, atol=1e-5, rtol=0)
    # the window is centred at -(x, y)/s: rows 8..17 and columns 3..12 for the second one
    torch.testing.assert_close(canvas[1, :, 8:18, 3:13], patch[1], atol=1e-5, rtol=0)
    assert canvas[1].abs().sum() == pytest.approx(patch[1].abs().sum().item(), rel=1e-5)


def test_crop_then_paste_reproduces_the_window():
    torch.manual_seed(0)
    image = torch.rand(1, 1, 20, 20)
    z_where = torch.tensor([[2.0, -0.2, 0.4]])
    back = paste(crop(image, z_where, 10), z_where, 20)
    window = back[0, 0] != 0
    assert window.sum() == 100
    torch.testing.assert_close(back[0, 0][window], image[0, 0][window], atol=1e-5, rtol=0)


def test_round_trip_off_lattice_smooth_patch():
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    patch = torch.exp(-(xs ** 2 + ys ** 2) / 0.5)[None, None]
    z_where = torch.tensor([[2.3, 0.17, -0.31]])
    again = crop(paste(patch, z_where, 50), z_where, 16)
    assert (again - patch)[..., 2:-2, 2:-2].abs().max() < 0.05


def test_window_boxes_enclose_exactly_the_pasted_pixels():
    patch = torch.ones(2, 1, 10, 10)
    z_where = torch.tensor([[2.0, 0.4, -0.6], [2.5, -0.2, 0.2]])
    canvas = paste(patch, z_where, 20)
    boxes = window_boxes(z_where, 20, 20)
    # the first window is rows 8..17, columns 3..12 (see above): box (3, 8, 13, 18) in pixel edges
    torch.testing.assert_close(boxes[0], torch.tensor([3.0, 8.0, 13.0, 18.0]))
    for b in range(2):
        x0, y0, x1, y1 = boxes[b].tolist()
        rows, cols = torch.nonzero(canvas[b, 0] > 0.5, as_tuple=True)
        assert x0 - 0.5 <= cols.min() and cols.max() + 1 <= x1 + 0.5
        assert y0 - 0.5 <= rows.min() and rows.max() + 1 <= y1 + 0.5
        assert (x1 - x0) == pytest.approx(20 / z_where[b, 0].item())


# --- model behaviour ----------------------------------------------------------------------------------
def test_output_contract_and_deterministic_eval():
    torch.manual_seed(0)
    model = AIR(_cfg(), in_channels=1, image_size=24)
    image = _blobs(6)
    out = model(image)
    b, k = 6, 4
    assert out.log_masks.shape == (b, k, 1, 24, 24)
    torch.testing.assert_close(out.log_masks.exp().sum(1), torch.ones(b, 1, 24, 24))
    assert out.slot_recons.shape == (b, k, 1, 24, 24) and out.recon.shape == (b, 1, 24, 24)
    assert 0 <= out.slot_recons.min() and out.slot_recons.max() <= 1
    assert out.latents.shape == (b, k, 3 + 6)
    assert out.extras["z_pres"].shape == (b, 3) and out.extras["z_where"].shape == (b, 3, 3)
    torch.testing.assert_close(out.extras["num_objects"], out.extras["z_pres"].sum(1))
    names = {"nll", "kl_what", "kl_where", "kl_pres", "reinforce", "baseline_mse", "elbo"}
    assert set(out.loss_terms) == names
    assert torch.isfinite(out.loss)
    # additive masks: objects weighted by their decoded intensity, the background by mask_background
    weights = out.slot_recons[:, 1:].mean(2, keepdim=True) * out.extras["z_pres"][:, :, None, None, None]
    weights = torch.cat([torch.full_like(weights[:, :1], 0.1), weights], dim=1)
    expected = weights / weights.sum(1, keepdim=True)
    torch.testing.assert_close(out.log_masks.exp(), expected, atol=1e-6, rtol=1e-4)
    model.eval()
    a, b2 = model(image), model(image)
    torch.testing.assert_close(a.recon, b2.recon)
    torch.testing.assert_close(a.extras["z_pres"], (a.extras["p_pres"] > 0.5).float().cumprod(1))
    assert model(image, num_slots=3).log_masks.shape[1] == 3


def test_z_pres_is_zero_after_the_first_zero():
    torch.manual_seed(0)
    model = AIR(_cfg(max_steps=5, z_pres_init=0.5), in_channels=1, image_size=24)
    out = model(_blobs(64))
    z = out.extras["z_pres"]
    assert (z[:, 1:] <= z[:, :-1]).all()
    assert (z.sum(1) < 5).any() and (z[:, 0] == 1).any()  # both kinds of rows occur
    # absent steps draw nothing and cost no z_what / z_where KL
    absent = z == 0
    assert (out.log_masks[:, 1:].exp()[absent] == 0).all() or out.log_masks[:, 1:][absent].max() < -20
    with torch.no_grad():
        model.pres_bias.fill_(-10.0)  # z_pres = 0 at the first step
    out = model(_blobs(8))
    assert out.extras["z_pres"].sum() == 0
    assert out.loss_terms["kl_what"] == 0 and out.loss_terms["kl_where"] == 0
    torch.testing.assert_close(out.recon, torch.zeros_like(out.recon))


def test_presence_floor_keeps_every_step_explored_in_training_only():
    torch.manual_seed(0)
    plain = AIR(_cfg(), 1, 24)
    logits = torch.linspace(-40, 40, 81)[:, None]
    torch.testing.assert_close(plain.floored_logit(logits), logits)  # floor 0: the paper's Bernoulli
    model = AIR(_cfg(z_pres_floor=0.05), 1, 24)
    p = torch.sigmoid(model.floored_logit(logits))
    torch.testing.assert_close(p, 0.05 + 0.9 * torch.sigmoid(logits))
    assert torch.equal(model.floored_logit(logits) > 0, logits > 0)  # the eval decision is unchanged
    images = _blobs(3000)
    for air in (model, plain):  # every step switched off as far as a logit can
        with torch.no_grad():
            air.pres_bias.fill_(-40.0)
    out = model(images)
    assert abs(float(out.extras["z_pres"][:, 0].mean()) - 0.05) < 0.015  # still sampled at the floor's rate
    out.loss.backward()  # so the step's z_what encoder (and window) still learn from the reconstruction
    assert next(model.what_encoder.parameters()).grad.abs().sum() > 0
    out = plain(images)
    assert out.extras["z_pres"].sum() == 0
    out.loss.backward()  # at floor 0 such a step is never sampled and gets no gradient at all
    grad = next(plain.what_encoder.parameters()).grad
    assert grad is None or grad.abs().sum() == 0
    model.eval()
    with torch.no_grad():
        assert model(images[:64]).extras["num_objects"].eq(0).all()  # eval: p_pres > 0.5, not sampled
    with pytest.raises(ValueError, match="z_pres_floor"):
        AIR(_cfg(z_pres_floor=0.5), 1, 24)


def test_every_parameter_gets_a_gradient_and_the_baseline_is_isolated():
    torch.manual_seed(0)
    model = AIR(_cfg(), in_channels=1, image_size=24)
    out = model(_blobs(16))
    out.loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name

    out = model(_blobs(16))
    baseline = list(model.baseline.parameters())
    rest = [p for n, p in model.named_parameters() if not n.startswith("baseline.")]
    grads = torch.autograd.grad(out.loss_terms["baseline_mse"], rest, allow_unused=True, retain_graph=True)
    assert all(g is None or g.abs().sum() == 0 for g in grads)  # the model does not learn from the MSE
    model_loss = out.loss - out.loss_terms["baseline_mse"]
    grads = torch.autograd.grad(model_loss, baseline, allow_unused=True)
    assert all(g is None or g.abs().sum() == 0 for g in grads)  # the baseline learns only from its MSE


def test_parameter_groups_put_every_baseline_parameter_in_the_baseline_group():
    model = AIR(_cfg(baseline_lr=0.05), in_channels=1, image_size=24)
    groups = model.parameter_groups(3e-4)
    assert [g["name"] for g in groups] == ["model", "baseline"]
    assert groups[0]["lr"] == 3e-4 and groups[1]["lr"] == 0.05
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert ids[1] == {id(p) for p in model.baseline.parameters()}
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {id(p) for p in model.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    torch.optim.Adam(groups)  # a valid optimiser spec


def test_reverse_cumsum_learning_signal_equals_direct_computation():
    torch.manual_seed(0)
    nll = torch.rand(5) * 100
    kl = torch.rand(5, 4)
    direct = torch.empty(5, 4)
    for b in range(5):
        for t in range(4):
            direct[b, t] = nll[b] + sum(kl[b, s] for s in range(t, 4))
    torch.testing.assert_close(learning_signal(nll, kl), direct)


def test_priors_geometric_and_annealing():
    rho, steps = 0.3, 3
    probs = geometric_step_probs(rho, steps)
    # P(n) from the per-step conditionals must be proportional to rho^n on 0..steps
    p_n, alive = [], 1.0
    for t in range(steps):
        p_n.append(alive * (1 - probs[t]))
        alive *= probs[t]
    p_n.append(alive)
    expected = [rho ** n for n in range(steps + 1)]
    total = sum(expected)
    assert p_n == pytest.approx([e / total for e in expected])
    model = AIR(_cfg(z_pres_prob=0.01, z_pres_prob_start=0.5, z_pres_anneal_steps=100), 1, 24)
    model.set_step(0)
    assert model.z_pres_prob() == pytest.approx(0.5)
    model.set_step(50)
    assert model.z_pres_prob() == pytest.approx(math.sqrt(0.5 * 0.01))
    model.set_step(1000)
    assert model.z_pres_prob() == pytest.approx(0.01)
    assert bernoulli_kl(torch.tensor([0.0]), 0.5).abs().item() < 1e-7


def test_alpha_composition_with_colour_background_on_rgb():
    torch.manual_seed(0)
    model = AIR(_cfg(composition="alpha", background="color"), in_channels=3, image_size=24)
    image = _blobs(8, channels=3) * torch.tensor([0.2, 0.9, 0.4])[:, None, None] + 0.05
    out = model(image)
    torch.testing.assert_close(out.log_masks.exp().sum(1), torch.ones(8, 1, 24, 24))
    mixture = (out.log_masks.exp() * out.slot_recons).sum(1)
    torch.testing.assert_close(mixture, out.recon, atol=1e-4, rtol=0)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    model = AIR(_cfg(), in_channels=1, image_size=24)
    image = _blobs(24, seed=1)

    def neg_elbo() -> float:
        model.eval()
        with torch.no_grad():
            value = -model(image).loss_terms["elbo"].item()
        model.train()
        return value

    before = neg_elbo()
    optimiser = torch.optim.Adam(model.parameter_groups(1e-3))
    losses = []
    for step in range(60):
        model.set_step(step)
        out = model(image)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        losses.append(out.loss_terms["nll"].item() + out.loss_terms["kl_what"].item())
    after = neg_elbo()
    assert after < 0.9 * before
    assert sum(losses[-10:]) < sum(losses[:10])


# --- construction and bad input -----------------------------------------------------------------------
def test_build_model_and_init_scheme_keep_the_heads():
    cfg = ModelConfig(name="air", air=_cfg(), init="trunc_normal_kaiming")
    model = build_model(cfg, in_channels=1, image_size=24)
    assert isinstance(model, AIR)
    assert model.where_head.bias[0].item() == pytest.approx(cfg.air.z_where_prior_scale_mean)
    assert torch.sigmoid(model.pres_bias[0]).item() == pytest.approx(cfg.air.z_pres_init)


def test_bad_configuration():
    with pytest.raises(ValueError, match="at least 1"):
        AIR(_cfg(max_steps=0), 1, 24)
    with pytest.raises(ConfigError, match="max_steps"):
        load_config(None, ["model.name=air", "model.air.max_steps=0"])
    with pytest.raises(ValueError, match="z_pres_prior"):
        AIR(_cfg(z_pres_prior="poisson"), 1, 24)
    model = AIR(_cfg(), 1, 24)
    with pytest.raises(ValueError, match="num_slots"):
        model(_blobs(2), num_slots=1)
    with pytest.raises(ValueError, match="expected images"):
        model(torch.zeros(2, 3, 24, 24))


@pytest.mark.parametrize("preset", ["air-multi-mnist", "air-multi-sprites"])
def test_presets_load(preset):
    cfg = load_config(preset)
    assert cfg.model.name == "air" and cfg.optim.name == "adam" and cfg.notes
    channels = 1 if cfg.data.name == "multi_mnist" else 3
    model = AIR(cfg.model.air, in_channels=channels, image_size=cfg.data.image_size)
    assert model.max_steps == cfg.model.air.max_steps
    out = model(torch.rand(2, channels, cfg.data.image_size, cfg.data.image_size))
    assert out.log_masks.shape[1] == cfg.model.air.max_steps + 1
