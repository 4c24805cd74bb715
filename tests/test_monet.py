"""MONet: mask invariants, loss terms against direct computations, gradients, learning."""

from __future__ import annotations

import math

import pytest
import torch
from overrides import TINY_MONET

from scenedecomp.config import ConfigError, load_config
from scenedecomp.models import build_model
from scenedecomp.models.masks import stick_breaking_log_masks
from scenedecomp.models.monet import gaussian_kl, mask_kl, mixture_nll

TINY = TINY_MONET


def tiny_monet(k: int = 3, size: int = 16, extra=()):
    cfg = load_config(None, [*TINY, f"model.num_slots={k}", *extra])
    torch.manual_seed(0)
    return build_model(cfg.model, 3, size)


def test_stick_breaking_sums_to_one_and_matches_recurrence():
    logits = torch.randn(2, 4, 1, 5, 5) * 5
    log_masks = stick_breaking_log_masks(logits)
    assert log_masks.shape == (2, 5, 1, 5, 5)
    torch.testing.assert_close(log_masks.exp().sum(1), torch.ones(2, 1, 5, 5))
    # direct recurrence in probability space (fine at these magnitudes)
    scope = torch.ones(2, 1, 5, 5)
    for k in range(4):
        alpha = torch.sigmoid(logits[:, k])
        torch.testing.assert_close(log_masks[:, k].exp(), scope * alpha)
        scope = scope * (1 - alpha)
    torch.testing.assert_close(log_masks[:, 4].exp(), scope)


@pytest.mark.parametrize("k", [2, 3, 6])
def test_masks_sum_to_one_and_shapes(k):
    model = tiny_monet(k=3)
    image = torch.rand(2, 3, 16, 16)
    out = model(image, num_slots=k)  # K at inference may differ from training
    assert out.log_masks.shape == (2, k, 1, 16, 16)
    assert out.slot_recons.shape == (2, k, 3, 16, 16)
    assert out.recon.shape == (2, 3, 16, 16)
    assert out.latents.shape == (2, k, 4)
    torch.testing.assert_close(out.log_masks.exp().sum(1), torch.ones(2, 1, 16, 16))
    assert out.predicted_labels().shape == (2, 16, 16)


def test_masks_stay_exact_under_extreme_logits():
    """Log-space scopes: no underflow to -inf/NaN when the attention saturates."""
    model = tiny_monet(k=4)
    with torch.no_grad():
        model.attention.unet.head.bias.fill_(-80.0)  # every step passes (almost) all scope on
    out = model(torch.rand(2, 3, 16, 16))
    assert torch.isfinite(out.log_masks).all() and torch.isfinite(out.loss)
    torch.testing.assert_close(out.log_masks.exp().sum(1), torch.ones(2, 1, 16, 16))
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_every_parameter_gets_a_gradient():
    model = tiny_monet(k=3)
    model(torch.rand(2, 3, 16, 16)).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_mixture_nll_matches_direct_computation():
    torch.manual_seed(1)
    b, k, c, h, w = 2, 3, 3, 4, 4
    image = torch.rand(b, c, h, w, dtype=torch.float64)
    log_masks = torch.log_softmax(torch.randn(b, k, 1, h, w, dtype=torch.float64), 1)
    means = torch.rand(b, k, c, h, w, dtype=torch.float64)
    sigmas = torch.tensor([0.09, 0.11, 0.11], dtype=torch.float64)
    density = torch.stack([torch.distributions.Normal(means[:, j], sigmas[j]).log_prob(image).exp()
                           for j in range(k)], 1)  # [B,K,C,H,W]
    m = log_masks.exp()
    per_pixel = -torch.log((m * density.prod(2, keepdim=True)).sum(1)).flatten(1).sum(1)
    per_channel = -torch.log((m * density).sum(1)).flatten(1).sum(1)
    torch.testing.assert_close(mixture_nll(image, log_masks, means, sigmas), per_pixel)
    torch.testing.assert_close(mixture_nll(image, log_masks, means, sigmas, per_channel=True), per_channel)


def test_mixture_nll_does_not_underflow():
    image = torch.zeros(1, 3, 2, 2)
    means = torch.ones(1, 2, 3, 2, 2)  # every pixel 1.0 away from both means: density ~ exp(-150)
    log_masks = torch.log(torch.full((1, 2, 1, 2, 2), 0.5))
    nll = mixture_nll(image, log_masks, means, torch.tensor([0.05, 0.05]))
    assert torch.isfinite(nll).all()
    expected = 4 * (3 * (0.5 / 0.05**2 + math.log(0.05) + 0.5 * math.log(2 * math.pi)))
    assert nll.item() == pytest.approx(expected, rel=1e-5)


def test_kl_terms_match_torch_distributions():
    mean, logvar = torch.randn(5, 4), torch.randn(5, 4)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(5, 4), torch.ones(5, 4))
    torch.testing.assert_close(gaussian_kl(mean, logvar), torch.distributions.kl_divergence(q, p))
    log_m = torch.log_softmax(torch.randn(2, 4, 1, 3, 3), 1)
    logits = torch.randn(2, 4, 1, 3, 3)
    direct = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=log_m.movedim(1, -1)),
        torch.distributions.Categorical(logits=logits.movedim(1, -1))).flatten(1).sum(1)
    torch.testing.assert_close(mask_kl(log_m, logits), direct)
    assert mask_kl(log_m, log_m).abs().max() < 1e-5


def test_broadcast_decoder_closed_form_equals_tiling():
    model = tiny_monet(k=3)
    decoder = model.component.decoder
    z = torch.randn(6, 4)
    torch.testing.assert_close(decoder(z), decoder.forward_tiled(z), atol=1e-5, rtol=1e-5)


def test_loss_decreases_on_a_tiny_batch():
    model = tiny_monet(k=3)
    torch.manual_seed(0)
    image = torch.rand(4, 3, 16, 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = model(image).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_eval_mode_is_deterministic_and_uses_latent_means():
    model = tiny_monet(k=3).eval()
    image = torch.rand(2, 3, 16, 16)
    a, b = model(image), model(image)
    torch.testing.assert_close(a.loss, b.loss)
    torch.testing.assert_close(a.recon, b.recon)


def test_per_channel_option_changes_the_likelihood():
    image = torch.rand(2, 3, 16, 16)
    pixel = tiny_monet(k=3).eval()(image).loss_terms["nll"]
    channel = tiny_monet(k=3, extra=["model.loss.likelihood=per_channel"]).eval()(image).loss_terms["nll"]
    assert torch.isfinite(pixel) and torch.isfinite(channel) and not torch.isclose(pixel, channel)


def test_unet_depth_must_fit_the_image():
    with pytest.raises(ValueError, match="divisible"):
        tiny_monet(k=3, size=20, extra=["model.attention.channels=[8,8,8,8]"])


@pytest.mark.parametrize("extra, schedule", [
    # a step: beta_initial until beta_warmup_start, beta from then on
    (["model.loss.beta_initial=0.5", "model.loss.beta=8", "model.loss.beta_warmup_start=100"],
     [(0, 0.5), (99, 0.5), (100, 8.0), (10_000, 8.0)]),
    # a ramp that starts late, from beta_initial to beta
    (["model.loss.beta_initial=1", "model.loss.beta=3", "model.loss.beta_warmup_start=100",
      "model.loss.beta_warmup_steps=200"], [(50, 1.0), (100, 1.0), (200, 2.0), (300, 3.0), (900, 3.0)]),
])
def test_beta_schedule_holds_then_steps_or_ramps(extra, schedule):
    model = tiny_monet(k=3, extra=extra)
    image = torch.rand(2, 3, 16, 16)
    for step, expected_beta in schedule:
        model.set_step(step)
        assert model.train_beta.item() == pytest.approx(expected_beta)
    torch.manual_seed(0)
    out = model(image)
    terms = out.loss_terms
    torch.testing.assert_close(out.loss, terms["nll"] + schedule[-1][1] * terms["kl_z"] + 0.5 * terms["kl_mask"])


def test_beta_schedule_refuses_a_negative_start_or_initial_weight():
    for bad in ("model.loss.beta_warmup_start=-1", "model.loss.beta_initial=-0.5"):
        with pytest.raises(ConfigError, match="beta"):
            tiny_monet(k=3, extra=[bad])


def test_beta_warmup_scales_kl_z_while_training_only():
    model = tiny_monet(k=3, extra=["model.loss.beta_warmup_steps=100", "model.loss.beta=0.5"])
    image = torch.rand(2, 3, 16, 16)
    for step, expected_beta in [(0, 0.0), (50, 0.25), (100, 0.5), (500, 0.5)]:
        model.set_step(step)
        assert model.train_beta.item() == pytest.approx(expected_beta)
        torch.manual_seed(0)
        out = model(image)
        terms = out.loss_terms
        torch.testing.assert_close(
            out.loss, terms["nll"] + expected_beta * terms["kl_z"] + 0.5 * terms["kl_mask"])
    model.set_step(0)
    model.eval()  # evaluation reports the paper's objective, whatever the warm-up
    out = model(image)
    torch.testing.assert_close(
        out.loss, out.loss_terms["nll"] + 0.5 * out.loss_terms["kl_z"] + 0.5 * out.loss_terms["kl_mask"])


def test_geco_weight_follows_the_reconstruction_constraint():
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    # a target far below what an untrained model reaches: lambda must grow, and the loss weighs the NLL by it
    model = tiny_monet(extra=["model.loss.geco_mse_target=1e-4", "model.loss.geco_rate=1e-4",
                              "model.loss.geco_max_weight=4"]).train()
    assert {"geco_lambda", "geco_mse_ema"} <= set(model.state_dict()), "checkpointed with the model"
    lambdas = []
    for _ in range(6):
        torch.manual_seed(1)
        out = model(images)
        lambdas.append(out.loss_terms["geco_lambda"].item())
        terms = out.loss_terms
        expected = lambdas[-1] * terms["nll"] + 0.5 * terms["kl_z"] + 0.5 * terms["kl_mask"]
        torch.testing.assert_close(out.loss, expected)
    assert lambdas[0] == 1.0 and all(b > a for a, b in zip(lambdas, lambdas[1:])), lambdas
    fast = tiny_monet(extra=["model.loss.geco_mse_target=1e-4", "model.loss.geco_rate=0.5",
                             "model.loss.geco_max_weight=4"]).train()
    fast(images)
    assert fast.geco_lambda.item() == pytest.approx(4.0), "clamped at geco_max_weight"
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert "geco_lambda" not in out.loss_terms
    torch.testing.assert_close(out.loss, out.loss_terms["nll"] + 0.5 * out.loss_terms["kl_z"]
                               + 0.5 * out.loss_terms["kl_mask"])
    # a target above the model's error: lambda shrinks
    easy = tiny_monet(extra=["model.loss.geco_mse_target=10", "model.loss.geco_rate=0.5"]).train()
    easy(images)
    easy(images)
    assert easy.geco_lambda.item() < 1.0
    # with a floor of 1 the weight never drops below the paper's balance
    floored = tiny_monet(extra=["model.loss.geco_mse_target=10", "model.loss.geco_rate=0.5",
                                "model.loss.geco_min_weight=1"]).train()
    floored(images)
    floored(images)
    assert floored.geco_lambda.item() == 1.0


def test_recurrent_attention_returns_the_logits_of_its_masks():
    model = tiny_monet(k=4)
    image = torch.rand(2, 3, 16, 16)
    log_masks, logits = model.attention(image, 4, return_logits=True)
    assert logits.shape == (2, 3, 1, 16, 16)
    torch.testing.assert_close(stick_breaking_log_masks(logits), log_masks)
    torch.testing.assert_close(model.attention(image, 4), log_masks)


def test_detached_mask_input_leaves_the_attention_only_the_direct_gradient():
    """With ``detach_mask_input`` the attention's gradient is what it gets with the encoder's input detached
    by hand; without it, the encoder path adds to it."""
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))

    def attention_grads(model):
        model.zero_grad()
        model(image).loss.backward()
        return [p.grad.clone() for p in model.attention.parameters()]

    plain = tiny_monet(k=3).eval()
    detached = tiny_monet(k=3, extra=["model.component.detach_mask_input=true"]).eval()  # same weights (seed)
    torch.testing.assert_close(detached(image).loss, plain(image).loss)  # the same objective
    by_hand = tiny_monet(k=3).eval()
    encode = by_hand.component.encode
    by_hand.component.encode = lambda x, log_mask: encode(x, log_mask.detach())
    expected, got, full = attention_grads(by_hand), attention_grads(detached), attention_grads(plain)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e)
    assert any((f - e).abs().max() > 1e-6 for f, e in zip(full, expected))
    # every parameter still learns: the attention from the likelihood and the mask KL
    assert all(g.abs().sum() > 0 for g in got)


def test_geco_scope_component_weighs_the_component_vae_with_lambda():
    """geco_scope=component: lambda multiplies beta * KL(z) and the component VAE's mask term too, while the
    attention's gradient is the one it gets when lambda weighs the likelihood alone."""
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    geco = ["model.loss.geco_mse_target=1e-4", "model.loss.geco_rate=0.5", "model.loss.geco_max_weight=4",
            "model.component.detach_mask_input=true", "model.loss.gamma_decoder=2"]
    grads = {}
    for scope in ("likelihood", "component"):
        model = tiny_monet(extra=[*geco, f"model.loss.geco_scope={scope}"]).train()
        for _ in range(3):  # lambda grows above 1
            model.zero_grad()
            torch.manual_seed(1)
            out = model(images)
            out.loss.backward()
        weight, t = out.loss_terms["geco_lambda"], out.loss_terms
        assert weight.item() > 1
        if scope == "component":
            expected = weight * t["nll"] + weight * 0.5 * t["kl_z"] + 2 * weight * t["kl_mask"]
        else:
            expected = weight * t["nll"] + 0.5 * t["kl_z"] + 2 * t["kl_mask"]
        torch.testing.assert_close(out.loss, expected)
        grads[scope] = {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("attention.")}
    for n, g in grads["likelihood"].items():
        torch.testing.assert_close(g, grads["component"][n], msg=n)
    model.eval()
    with torch.no_grad():  # evaluation reports the unweighted paper loss
        out = model(images)
    torch.testing.assert_close(out.loss, out.loss_terms["nll"] + 0.5 * out.loss_terms["kl_z"]
                               + 0.5 * out.loss_terms["kl_mask"])


def test_geco_component_scope_starts_at_its_step():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    model = tiny_monet(extra=["model.loss.geco_mse_target=1e-4", "model.loss.geco_rate=0.5",
                              "model.loss.geco_scope=component", "model.loss.geco_component_from_step=5"]).train()
    for step, scoped in ((0, False), (4, False), (5, True), (9, True)):
        model.set_step(step)
        out = model(images)
        weight, t = out.loss_terms["geco_lambda"], out.loss_terms
        component = weight if scoped else 1.0
        torch.testing.assert_close(out.loss, weight * t["nll"] + component * 0.5 * t["kl_z"]
                                   + component * 0.5 * t["kl_mask"])
    assert weight.item() > 1


def test_gamma_decoder_weighs_the_component_vae_only():
    """gamma_decoder changes the component VAE's gradient from the mask KL, not the attention's."""
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    grads, terms = {}, {}
    for name, extra in (("paper", []), ("decoder", ["model.loss.gamma_decoder=20"])):
        model = tiny_monet(extra=["model.component.detach_mask_input=true", *extra]).train()
        torch.manual_seed(1)
        out = model(images)
        out.loss.backward()
        terms[name] = out.loss_terms
        grads[name] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        if name == "decoder":
            t = out.loss_terms
            torch.testing.assert_close(out.loss, t["nll"] + 0.5 * t["kl_z"] + 20 * t["kl_mask"])
    same = {n: torch.allclose(g, grads["decoder"][n], atol=1e-6, rtol=1e-5) for n, g in grads["paper"].items()}
    assert all(v for n, v in same.items() if n.startswith("attention.")), same  # the attention's is the paper's
    # the VAE's differs (but for the last layer's bias: a mask-logit offset shared by all slots has no gradient)
    assert not any(v for n, v in same.items() if n.startswith("component.") and n != "component.decoder.rest.7.bias")


def test_geco_settings_are_validated():
    from scenedecomp.config import ConfigError

    with pytest.raises(ConfigError, match="geco"):
        load_config(None, ["model.loss.geco_mse_target=-1"])
    with pytest.raises(ConfigError, match="geco_min_weight"):
        load_config(None, ["model.loss.geco_mse_target=0.01", "model.loss.geco_min_weight=100"])


def test_replicate_padding_removes_the_border_signature():
    # a constant image: with replicate padding every pixel of a conv block sees the same neighbourhood, so
    # the features are constant; zero padding makes the border pixels different
    x = torch.cat([torch.full((1, 3, 16, 16), 0.6), torch.zeros(1, 1, 16, 16)], 1)
    for padding, constant in (("replicate", True), ("zeros", False)):
        model = tiny_monet(extra=[f"model.attention.padding={padding}"]).eval()
        with torch.no_grad():
            conv = model.attention.unet.down[0][0](x)
        assert (conv.std(dim=(2, 3)).max().item() < 1e-5) == constant, padding


def test_area_downsampling_treats_mirrored_images_alike():
    # without the (position-specific) MLP bottleneck and with mirror-symmetric kernels, a U-Net with area
    # downsampling and replicate padding commutes with a horizontal flip; the nearest resize keeps even
    # columns only, so it does not
    x = torch.rand(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    for downsample, symmetric in (("area", True), ("nearest", False)):
        unet = tiny_monet(extra=[f"model.attention.downsample={downsample}",
                                 "model.attention.padding=replicate"]).attention.unet.eval()
        unet.mlp = torch.nn.Identity()
        with torch.no_grad():
            for module in unet.modules():  # mirror-symmetric kernels: only the resize can break the symmetry
                if isinstance(module, torch.nn.Conv2d):
                    module.weight.copy_((module.weight + module.weight.flip(-1)) / 2)
            flipped, plain = unet(x.flip(-1)).flip(-1), unet(x)
        assert torch.allclose(flipped, plain, atol=1e-5) == symmetric, downsample


def test_log_mask_floor_bounds_what_the_encoder_reads():
    """With ``log_mask_floor`` the encoder sees ``max(log mask, floor)``: masks far below the floor encode like
    masks at it, masks above it are read unchanged; a floor at 0 or above is refused."""
    model = tiny_monet(k=3, extra=["model.component.log_mask_floor=-10"]).eval()
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    at_floor = torch.full((2, 1, 16, 16), -10.0)
    mean_floor, _ = model.component.encode(image, at_floor)
    mean_far, logvar_far = model.component.encode(image, torch.full((2, 1, 16, 16), -650.0))
    torch.testing.assert_close(mean_far, mean_floor)
    unbounded = tiny_monet(k=3).eval()  # same weights (seed)
    mean_far_unbounded, logvar_unbounded = unbounded.component.encode(image, torch.full((2, 1, 16, 16), -650.0))
    assert logvar_unbounded.abs().max() > 10 * logvar_far.abs().max()
    above = torch.full((2, 1, 16, 16), -2.0)
    torch.testing.assert_close(model.component.encode(image, above)[0], unbounded.component.encode(image, above)[0])
    for bad in ("0", "1", "nan"):
        with pytest.raises(ConfigError, match="log_mask_floor"):
            load_config("monet-demo", [f"model.component.log_mask_floor={bad}"])


def test_encoder_coordinates_are_read_by_the_encoder():
    """With ``encoder_coordinates`` the encoder reads x and y channels: two more inputs to its first conv,
    gradients reach every parameter, and the code of an all-zero input depends on the coordinate weights."""
    plain = tiny_monet(k=3)
    coords = tiny_monet(k=3, extra=["model.component.encoder_coordinates=true"])
    assert coords.component.encoder[0].in_channels == plain.component.encoder[0].in_channels + 2
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    coords.train()
    coords(image).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in coords.parameters())
    coords.eval()
    zeros = torch.zeros(1, 3, 16, 16)
    mean, _ = coords.component.encode(zeros, torch.zeros(1, 1, 16, 16))
    with torch.no_grad():
        coords.component.encoder[0].weight[:, -2:] = 0
    mean_blind, _ = coords.component.encode(zeros, torch.zeros(1, 1, 16, 16))
    assert (mean - mean_blind).abs().max() > 1e-4
