"""Slot Attention: output contract, slot symmetry, K at inference, implicit differentiation, the closed-form
decoder layer, learning, and its presets."""

from __future__ import annotations

import pytest
import torch

from scenedecomp.config import ConfigError, load_config
from scenedecomp.models import build_model, fixed_num_slots
from scenedecomp.models.slot_attention import SlotAttention, SlotAttentionConfig

# a tiny Slot Attention on 16x16 images (the preset's structure, narrower)
TINY = ["model.name=slot_attention", "model.latent_dim=8", "model.num_slots=3",
        "model.slot_attention.encoder_channels=[8,8]", "model.slot_attention.encoder_strides=[1,2]",
        "model.slot_attention.feature_mlp_hidden=8", "model.slot_attention.mlp_hidden=16",
        "model.slot_attention.decoder_channels=[8,8]", "model.slot_attention.decoder_kernel=3",
        "data.image_size=16"]


def tiny_sa(extra=(), size: int = 16) -> SlotAttention:
    cfg = load_config(None, [*TINY, f"data.image_size={size}", *extra])
    torch.manual_seed(0)
    return build_model(cfg.model, 3, size)


def _images(n: int = 2, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("broadcast, size", [(None, 16), (4, 16)])
def test_output_contract_shapes_and_masks_sum_to_one(broadcast, size):
    model = tiny_sa([f"model.slot_attention.decoder_broadcast={broadcast or 'null'}"], size).eval()
    with torch.no_grad():
        out = model(_images(size=size))
    assert out.log_masks.shape == (2, 3, 1, size, size)
    assert out.slot_recons.shape == (2, 3, 3, size, size) and out.recon.shape == (2, 3, size, size)
    assert out.latents.shape == (2, 3, 8)
    torch.testing.assert_close(out.log_masks.exp().sum(1), torch.ones(2, 1, size, size))
    assert 0 <= out.slot_recons.min() and out.slot_recons.max() <= 1
    # recon is the alpha-weighted sum of the slot images, and the loss is its MSE in [-1, 1]
    x = _images(size=size) * 2 - 1
    torch.testing.assert_close(out.loss, ((out.recon * 2 - 1) - x).pow(2).mean())
    assert set(out.loss_terms) == {"mse"}


def test_permuting_the_initial_slots_permutes_every_output():
    model = tiny_sa().eval()
    images = _images()
    init = model.slot_attention.initial_slots(2, 3).detach()
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = model(images, slots=init)
        permuted = model(images, slots=init[:, perm])
    torch.testing.assert_close(permuted.latents, out.latents[:, perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(permuted.log_masks, out.log_masks[:, perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(permuted.slot_recons, out.slot_recons[:, perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(permuted.recon, out.recon, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out.latents[:, 0], out.latents[:, 1])  # the slots did differ


@pytest.mark.parametrize("k", [2, 5, 9])
def test_another_number_of_slots_at_inference(k):
    model = tiny_sa().eval()
    assert fixed_num_slots(model) is None  # evaluate / decompose accept --num-slots
    with torch.no_grad():
        out = model(_images(), k)
    assert out.log_masks.shape[1] == k and out.latents.shape == (2, k, 8)
    torch.testing.assert_close(out.log_masks.exp().sum(1), torch.ones(2, 1, 16, 16))


def _grads(model) -> dict[str, torch.Tensor]:
    return {name: torch.zeros_like(p) if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}


def test_implicit_differentiation_equals_detaching_before_the_last_iteration_by_hand():
    model = tiny_sa(["model.slot_attention.implicit_differentiation=true", "model.slot_attention.iterations=3"])
    images = _images()
    init = model.slot_attention.initial_slots(2, 3).detach()
    model(images, slots=init).loss.backward()
    implicit = _grads(model)
    model.zero_grad(set_to_none=True)

    sa = model.slot_attention  # the same iterations written out, detaching by hand
    inputs = sa.norm_inputs(model.encoder(images * 2 - 1))
    k, v = sa.project_k(inputs), sa.project_v(inputs)
    slots = init.requires_grad_()
    for _ in range(2):
        slots, _ = sa.step(slots, k, v)
    slots, _ = sa.step(slots.detach(), k, v)
    decoded = model.decoder(slots.reshape(6, -1)).view(2, 3, 4, 16, 16)
    masks = decoded[:, :, 3:].softmax(1)
    ((masks * decoded[:, :, :3]).sum(1) - (images * 2 - 1)).pow(2).mean().backward()
    by_hand = _grads(model)
    for name in implicit:
        torch.testing.assert_close(implicit[name], by_hand[name], rtol=1e-5, atol=1e-8, msg=name)
    assert init.grad is None  # nothing flowed back through the first two iterations

    # the full gradient differs: it reaches the slot initialisation through every iteration
    model.zero_grad(set_to_none=True)
    full = tiny_sa()
    full.load_state_dict(model.state_dict())
    full(images).loss.backward()
    assert full.slot_attention.slots_mu.grad.abs().sum() > 0
    model(images).loss.backward()
    assert model.slot_attention.slots_mu.grad is None
    assert not torch.allclose(full.slot_attention.project_q.weight.grad, implicit["slot_attention.project_q.weight"])


def test_gradients_reach_every_parameter():
    model = tiny_sa()
    model(_images()).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("implicit", [False, True])
def test_learned_initial_slots_are_trained_and_fix_k(implicit):
    model = tiny_sa(["model.slot_attention.slot_init=learned",
                     f"model.slot_attention.implicit_differentiation={str(implicit).lower()}"])
    assert fixed_num_slots(model) == 3  # evaluate / decompose refuse another --num-slots
    assert not hasattr(model.slot_attention, "slots_mu")  # no unused Gaussian parameters
    model(_images()).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []  # with implicit differentiation through the straight-through estimate
    model.eval()
    with torch.no_grad():
        a, b = model(_images()), model(_images())
        init = model.slot_attention.initial_slots(2, 3)
        explicit = model(_images(), slots=init)
    torch.testing.assert_close(init, model.slot_attention.queries.expand(2, -1, -1))
    torch.testing.assert_close(a.latents, b.latents)  # no sampling noise
    torch.testing.assert_close(a.latents, explicit.latents)
    with pytest.raises(ValueError, match="trained K = 3 only, not 5"):
        model(_images(), 5)


def test_an_unknown_slot_init_is_refused():
    with pytest.raises(ValueError, match="slot_init must be gaussian or learned"):
        tiny_sa(["model.slot_attention.slot_init=kmeans"])


@pytest.mark.parametrize("broadcast", [None, 4])
def test_closed_form_first_decoder_layer_equals_the_tiled_conv(broadcast):
    cfg = SlotAttentionConfig(decoder_channels=[6, 5], decoder_kernel=5, decoder_broadcast=broadcast)
    torch.manual_seed(0)
    decoder = SlotAttention(cfg, 3, 7, 3, 16).decoder.double()
    assert decoder.closed_form == (broadcast is None)
    slots = torch.randn(4, 7, dtype=torch.double)
    torch.testing.assert_close(decoder(slots), decoder.forward_tiled(slots))


def test_a_tiny_model_learns():
    torch.manual_seed(0)
    data = torch.rand(8, 3, 1, 1).expand(8, 3, 16, 16).clone()  # plain backgrounds
    data[:4, :, 3:8, 3:8] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # and a red or a blue square
    data[4:, :, 8:13, 9:14] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]
    model = tiny_sa()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = model(data).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]


def test_bf16_autocast_keeps_the_loss_close_and_the_masks_exact():
    model = tiny_sa().eval()
    images = _images(6)
    init = model.slot_attention.initial_slots(6, 3).detach()
    with torch.no_grad():
        ref = model(images, slots=init)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(images, slots=init)
    assert low.loss.dtype == torch.float32 and low.latents.dtype == torch.float32
    torch.testing.assert_close(low.loss, ref.loss, rtol=0.05, atol=0)
    torch.testing.assert_close(low.log_masks.exp().sum(1), torch.ones(6, 1, 16, 16), rtol=0, atol=1e-5)


def test_the_published_schedule_is_warm_up_times_exponential_decay():
    from scenedecomp.training.module import SceneDecompModule

    cfg = load_config("sa-multi-dsprites", TINY[1:])
    module = SceneDecompModule.from_config(cfg, 3, 16)
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    factor = scheduler.lr_lambdas[0]
    for step in (0, 4999, 9999, 10000, 150000):
        expected = min(1.0, (step + 1) / 10000) * 0.5 ** (step / 100000)
        assert factor(step) == pytest.approx(expected)
    assert cfg.optim.lr == 4e-4 and cfg.optim.grad_clip_norm is None


@pytest.mark.parametrize("override, pattern", [
    ("model.slot_attention.decoder_broadcast=6", "decoder_broadcast: data.image_size 16 is not 6 times"),
    ("model.slot_attention.encoder_strides=[1]", "encoder_strides: need one stride per encoder layer"),
    ("model.slot_attention.iterations=0", "iterations must be at least 1"),
    ("model.slot_attention.decoder_kernel=4", "must be odd"),
])
def test_inconsistent_settings_are_refused_in_one_line(override, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(None, [*TINY, override])
    assert "\n" not in str(info.value)


def test_presets_state_the_published_settings():
    clevr = load_config("sa-clevr6")
    assert (clevr.data.image_size, clevr.model.num_slots, clevr.model.slot_attention.decoder_broadcast) == (128, 7, 8)
    assert clevr.model.slot_attention.encoder_channels == [64] * 4
    assert len(clevr.model.slot_attention.decoder_channels) == 5
    for name, size, k in (("sa-multi-dsprites", 64, 6), ("sa-objects-room", 64, 7), ("sa-tetrominoes", 32, 4)):
        cfg = load_config(name)
        assert (cfg.model.name, cfg.data.image_size, cfg.model.num_slots) == ("slot_attention", size, k)
        assert cfg.model.slot_attention.decoder_broadcast is None and cfg.model.latent_dim == 64
    demo = load_config("sa-demo")
    assert (demo.data.name, demo.data.image_size, demo.model.num_slots) == ("multi_sprites", 32, 5)


def test_the_step_benchmark_builds_slot_attention_with_its_own_layout_key():
    from scenedecomp.bench.monet_step import build_training_step, channels_last_key

    assert channels_last_key("sa-demo", []) == "model.slot_attention.channels_last"
    assert channels_last_key("monet-demo", []) == "model.component.channels_last"
    model, images, step = build_training_step("sa-demo", [*TINY[1:], "model.slot_attention.channels_last=false"],
                                              16, 2, torch.device("cpu"), bf16=True)
    before = model.decoder.first.weight.detach().clone()
    step()
    assert isinstance(model, SlotAttention) and not model.decoder.channels_last
    assert not torch.equal(before, model.decoder.first.weight)


def test_evaluation_is_deterministic_and_training_samples_new_slots():
    model = tiny_sa()
    images = _images()
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(images).latents, model(images).latents)
        model.eval()
        torch.testing.assert_close(model(images).latents, model(images).latents, rtol=0, atol=0)
        torch.testing.assert_close(model(images, 4).log_masks, model(images, 4).log_masks, rtol=0, atol=0)
