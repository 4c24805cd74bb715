"""Precision and speed settings: bf16 autocast and compiled losses against fp32 eager, precision
resolution, the allocator setting, and the channels-last decoder computing the same function."""

from __future__ import annotations

import pytest
import torch
from overrides import TINY_MONET

from scenedecomp import hardware
from scenedecomp.config import ConfigError, load_config
from scenedecomp.models import build_model
from scenedecomp.models.component_vae import SpatialBroadcastDecoder

TINY = [*TINY_MONET, "model.num_slots=3",
        "model.loss.geco_mse_target=null"]  # the paper loss: its value is comparable across steps

# bf16 keeps 8 bits of mantissa: ~0.4 % per rounding; the loss is a sum over 16x16x3 pixel terms whose
# errors partly cancel. Stated tolerance of the bf16-mixed loss against the fp32 eager loss:
BF16_LOSS_RTOL = 0.02
COMPILED_LOSS_RTOL = 1e-4


def _model_and_batch(seed: int = 0):
    cfg = load_config("monet-demo", TINY)
    torch.manual_seed(seed)
    model = build_model(cfg.model, 3, 16).eval()
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(seed + 1))
    return model, images


def _bf16(fn):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fn()


def test_bf16_loss_terms_stay_close_to_fp32_and_masks_stay_exact():
    model, images = _model_and_batch()
    with torch.no_grad():
        ref = model(images)
        low = _bf16(lambda: model(images))
    assert low.loss.dtype == torch.float32 and low.log_masks.dtype == torch.float32
    torch.testing.assert_close(low.loss, ref.loss, rtol=BF16_LOSS_RTOL, atol=0)
    for name in ("nll", "kl_z"):
        torch.testing.assert_close(low.loss_terms[name], ref.loss_terms[name], rtol=BF16_LOSS_RTOL, atol=0.5)
    # stick-breaking runs in fp32 even under autocast: masks still sum to one to fp32 precision
    torch.testing.assert_close(low.log_masks.exp().sum(1), torch.ones(6, 1, 16, 16), rtol=0, atol=1e-5)
    assert not torch.allclose(low.loss, ref.loss, rtol=0, atol=0), "autocast did not change anything"


def test_bf16_training_loss_goes_down_like_fp32():
    gen = torch.Generator().manual_seed(3)
    data = torch.rand(4, 8, 3, 1, 1, generator=gen).expand(4, 8, 3, 16, 16).clone()  # plain backgrounds
    data[:, :, :, 4:9, 4:9] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # and a red square

    def train(bf16: bool) -> list[float]:
        model, _ = _model_and_batch()
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        torch.manual_seed(7)  # the same latent noise for both runs
        losses = []
        for step in range(40):
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(data[step % 4])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            losses.append(out.loss.item())
        return losses

    fp32, bf16 = train(False), train(True)
    first, last = sum(fp32[:4]) / 4, sum(fp32[-4:]) / 4
    first_b, last_b = sum(bf16[:4]) / 4, sum(bf16[-4:]) / 4
    assert last < 0.8 * first, "fp32 did not learn"
    assert last_b < 0.8 * first_b, "bf16 did not learn"
    assert abs(last_b - last) / last < 0.05, (last, last_b)


def test_channels_last_decoder_is_the_same_function():
    torch.manual_seed(0)
    decoder = SpatialBroadcastDecoder(4, 4, 12, hidden=8, num_layers=3, channels_last=True)
    z = torch.randn(5, 4)
    out = decoder(z)
    decoder.channels_last = False
    torch.testing.assert_close(out, decoder(z), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, decoder.forward_tiled(z), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_compiled_loss_equals_eager():
    model, images = _model_and_batch()
    with torch.no_grad():
        ref = model(images).loss
        model.compile()
        compiled = model(images).loss
    torch.testing.assert_close(compiled, ref, rtol=COMPILED_LOSS_RTOL, atol=0)


def test_auto_precision_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert hardware.resolve_precision("auto", "auto", "monet") == "bf16-mixed"
    assert hardware.resolve_precision("auto", "cpu", "air") == "32-true", "AIR is not validated in bf16"
    assert hardware.resolve_precision("32-true", "auto", "monet") == "32-true", "explicit values are kept"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert hardware.resolve_precision("auto", "auto", "monet") == "bf16-mixed"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert hardware.resolve_precision("auto", "auto", "monet") == "32-true"


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="trainer.precision"):
        load_config("monet-demo", ["trainer.precision=bf17"])


def test_tune_malloc_is_accepted_by_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    hardware.tune_malloc.cache_clear()
    assert hardware.tune_malloc() is True


@pytest.mark.parametrize("variant", ["fp32", "bf16"])
def test_step_benchmark_variant_measures_its_own_step(variant):
    from scenedecomp.bench.monet_step import measure_variant

    result = measure_variant(variant, "monet-demo", tuple(TINY), image_size=16, num_slots=3, batch_size=2,
                             steps=2, warmup=0, device="cpu", threads=1)
    assert result["precision"] == variant and len(result["step_seconds_all"]) == 2
    assert result["images_per_s"] > 0 and result["flops_per_step"] > 0
    assert result["achieved_gflops"] == pytest.approx(result["flops_per_step"] / result["step_seconds_median"] / 1e9,
                                                      rel=0.02, abs=0.01)


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_training_clips_the_gradients_beside_the_fused_optimiser(tmp_path, monkeypatch, precision):
    # Lightning's mixed-precision plugin refuses clipping beside a fused optimiser; the module clips itself,
    # so bf16 training keeps the fused Adam and every step's update sees the clipped gradients
    from overrides import tiny_run

    from scenedecomp.cli import main
    from scenedecomp.training.module import SceneDecompModule

    monkeypatch.setenv("SCENEDECOMP_CACHE", str(tmp_path / "cache"))
    seen = []
    original = SceneDecompModule.configure_gradient_clipping

    def spy(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        grads = lambda: [p.grad for p in self.parameters() if p.grad is not None]  # noqa: E731
        before = float(torch.nn.utils.get_total_norm(grads()))
        original(self, optimizer, gradient_clip_val, gradient_clip_algorithm)
        seen.append((optimizer.defaults["fused"], before, float(torch.nn.utils.get_total_norm(grads()))))

    monkeypatch.setattr(SceneDecompModule, "configure_gradient_clipping", spy)
    clip = 1e-3
    assert main(["train", "--config", "monet-demo", "--quiet", f"out_dir={tmp_path}", "name=c",
                 *tiny_run(16, max_steps=3, val_every_n_steps=1000, image_log_every_n_steps=0),
                 f"trainer.precision={precision}", f"optim.grad_clip_norm={clip}"]) == 0
    assert len(seen) == 3
    assert all(fused for fused, _, _ in seen)
    assert all(before > clip for _, before, _ in seen), "the test needs gradients above the clipping norm"
    assert all(after == pytest.approx(clip, rel=1e-3) for _, _, after in seen)
