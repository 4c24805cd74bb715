"""One-pass ResNet attention (MONet-RN50 / RN50*): masks, gradients, pretrained transfer, errors."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import torchvision

from scenedecomp.config import load_config
from scenedecomp.models import build_model
from scenedecomp.models.attention import AttentionConfig
from scenedecomp.models.resnet_attention import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PretrainedWeightsError,
    PretrainedWeightsNotFoundError,
    ResNetAttention,
)


def make_attention(kind: str = "resnet_skip", norm: str = "stick_breaking", backbone: str = "resnet18",
                   image_size: int = 32, num_slots: int = 4, in_channels: int = 3,
                   pretrained: str | None = None) -> ResNetAttention:
    cfg = AttentionConfig(type=kind, backbone=backbone, mask_normalization=norm, pretrained=pretrained)
    return ResNetAttention(cfg, in_channels, image_size, num_slots)


def resnet18_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # make BN statistics non-default too, so a silent non-load would be caught
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return model.state_dict()


def assert_encoder_equals(att: ResNetAttention, state: dict[str, torch.Tensor]) -> None:
    enc = att.encoder.state_dict()
    expected = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assert set(enc) == set(expected)
    for key, value in expected.items():
        assert torch.equal(enc[key], value), key


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to fetch weights fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("attempted to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("norm", ["stick_breaking", "softmax"])
@pytest.mark.parametrize("kind", ["resnet", "resnet_skip"])
def test_masks_sum_to_one(kind, norm, size):
    k = 5
    att = make_attention(kind, norm, image_size=size, num_slots=k)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        log_masks = att(x, k)
    assert log_masks.shape == (2, k, 1, size, size)
    assert torch.isfinite(log_masks).all()
    assert torch.allclose(log_masks.exp().sum(1), torch.ones(2, 1, size, size), atol=1e-5)
    assert torch.allclose(torch.logsumexp(log_masks, dim=1), torch.zeros(2, 1, size, size), atol=1e-5)
    with torch.no_grad():
        same, logits = att(x, k, return_logits=True)
    assert logits.shape == (2, k - 1 if norm == "stick_breaking" else k, 1, size, size)
    torch.testing.assert_close(same, log_masks)


def test_head_channels_follow_normalisation():
    assert make_attention(norm="stick_breaking", num_slots=7).head.out_channels == 6
    assert make_attention(norm="softmax", num_slots=7).head.out_channels == 7


@pytest.mark.parametrize("norm", ["stick_breaking", "softmax"])
@pytest.mark.parametrize("kind", ["resnet", "resnet_skip"])
def test_gradients_reach_every_attention_parameter(kind, norm):
    cfg = load_config(None, [f"model.attention.type={kind}", "model.attention.backbone=resnet18",
                             f"model.attention.mask_normalization={norm}", "model.num_slots=3"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 3, 32)
    model.train()
    out = model(torch.rand(2, 3, 32, 32))
    out.loss.backward()
    for name, p in model.attention.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_wrong_num_slots_is_refused():
    att = make_attention(num_slots=4)
    with pytest.raises(ValueError, match=r"built for K=4 .* called with K=6"):
        att(torch.rand(2, 3, 32, 32), 6)


def test_image_size_must_be_multiple_of_32():
    with pytest.raises(ValueError, match="divisible by 32"):
        make_attention(image_size=48)


def test_non_rgb_input_without_pretrained():
    att = make_attention(in_channels=1)
    log_masks = att(torch.rand(2, 1, 32, 32), 4)
    assert torch.allclose(log_masks.exp().sum(1), torch.ones(2, 1, 32, 32), atol=1e-5)


def test_resnet50_parameter_counts_match_thesis():
    # Thesis: 54.0M (RN50) and 55.8M (RN50*) attention parameters.
    def count(kind: str) -> int:
        return sum(p.numel() for p in make_attention(kind, backbone="resnet50", num_slots=7).parameters())

    rn50, rn50s = count("resnet"), count("resnet_skip")
    assert round(rn50 / 1e6, 1) == 54.0
    assert round(rn50s / 1e6, 1) == 55.8


def test_pretrained_local_file_is_loaded(tmp_path, no_download):
    state = resnet18_state()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    att = make_attention(pretrained=str(path))
    assert_encoder_equals(att, state)
    assert att.normalize and att.pretrained_path == str(path)
    assert getattr(att.encoder, "keep_init", False)


def test_pretrained_encoder_survives_model_init(tmp_path, no_download):
    state = resnet18_state()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    cfg = load_config(None, ["model.attention.type=resnet_skip", "model.attention.backbone=resnet18",
                             f"model.attention.pretrained={path}", "model.init=trunc_normal_kaiming",
                             "model.num_slots=4"])
    model = build_model(cfg.model, 3, 32)
    assert_encoder_equals(model.attention, state)
    assert torch.all(model.attention.head.bias == 0)  # the rest was re-initialised


def test_pretrained_applies_imagenet_normalisation(tmp_path, no_download):
    path = tmp_path / "r18.pth"
    torch.save(resnet18_state(), path)
    seen = []
    for pretrained in (str(path), None):
        att = make_attention(pretrained=pretrained).eval()
        handle = att.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
        x = torch.rand(2, 3, 32, 32)
        att(x, 4)
        handle.remove()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        expected = (x - mean) / std if pretrained else x
        assert torch.allclose(seen[-1], expected, atol=1e-6)


def test_pretrained_grayscale_is_repeated(tmp_path, no_download):
    """A grey image meets the pretrained RGB stem as the same value in all three channels: the grey network
    gives exactly the RGB network's masks for the grey image repeated, and not those for grey in one channel."""
    path = tmp_path / "r18.pth"
    torch.save(resnet18_state(), path)
    torch.manual_seed(1)
    grey = make_attention(pretrained=str(path), in_channels=1).eval()
    torch.manual_seed(1)
    rgb = make_attention(pretrained=str(path), in_channels=3).eval()
    image = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        log_masks = grey(image, 4)
        repeated = rgb(image.expand(-1, 3, -1, -1), 4)
        one_channel = rgb(torch.cat([image, torch.zeros_like(image), torch.zeros_like(image)], 1), 4)
    assert log_masks.shape == (2, 4, 1, 32, 32)
    torch.testing.assert_close(log_masks, repeated, rtol=0, atol=0)
    assert (log_masks - one_channel).abs().max() > 1e-3


def _canonical_name(backbone: str, weights: str = "IMAGENET1K_V1") -> str:
    enum = torchvision.models.get_model_weights(backbone)[weights]
    return os.path.basename(urlparse(enum.url).path)


def test_pretrained_weights_name_resolves_from_hub_cache(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True)
    state = resnet18_state(seed=3)
    torch.save(state, folder / _canonical_name("resnet18"))
    for name in ("IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"):
        att = make_attention(pretrained=name)
        assert_encoder_equals(att, state)


def test_missing_hub_weights_say_where_to_put_which_file(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsNotFoundError) as info:
        make_attention(pretrained="IMAGENET1K_V1")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    assert "\n" not in message
    assert _canonical_name("resnet18") in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "IMAGENET1K_V1" in message and "resnet18" in message


def test_missing_local_file_is_one_line(tmp_path, no_download):
    missing = tmp_path / "nope" / "weights.pth"
    with pytest.raises(FileNotFoundError) as info:
        make_attention(pretrained=str(missing))
    assert "\n" not in str(info.value) and str(missing) in str(info.value)


def test_unknown_weights_name_is_refused(no_download):
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        make_attention(pretrained="IMAGENET_V9")
    with pytest.raises(ValueError, match="ResNet18_Weights"):
        make_attention(pretrained="ResNet50_Weights.IMAGENET1K_V1")


def test_mismatched_state_dict_is_refused(tmp_path, no_download):
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(PretrainedWeightsError) as info:
        make_attention(pretrained=str(path))
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "resnet18" in message
    assert "unexpected keys [layer1.2." in message


def test_wrong_shape_is_refused(tmp_path, no_download):
    state = resnet18_state()
    state["layer2.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError, match=r"shape mismatch \[layer2\.0\.conv1\.weight"):
        make_attention(pretrained=str(path))


class _NotWeights:
    pass


def test_non_state_dict_files_are_refused(tmp_path, no_download):
    pickled = tmp_path / "object.pth"
    torch.save({"model": _NotWeights()}, pickled)  # weights_only=True refuses arbitrary classes
    with pytest.raises(PretrainedWeightsError) as info:
        make_attention(pretrained=str(pickled))
    assert "\n" not in str(info.value) and "cannot read a state dict" in str(info.value)
    scalars = tmp_path / "scalars.pth"
    torch.save({"epoch": 3}, scalars)
    with pytest.raises(PretrainedWeightsError, match="not a state dict of tensors"):
        make_attention(pretrained=str(scalars))


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_trunk_lr_scale_slows_only_the_trunk(scale):
    """One Adam step moves each parameter by about its group's lr: the trunk by lr * scale, the rest by lr."""
    from scenedecomp.training.module import SceneDecompModule

    cfg = load_config("monet-rn18star-sprites64-cpu", ["data.image_size=32", "model.component.encoder_hidden=16",
                                                       "model.component.decoder_channels=8", "optim.warmup_steps=0",
                                                       "optim.grad_clip_norm=null",
                                                       f"model.attention.trunk_lr_scale={scale}"])
    torch.manual_seed(0)
    module = SceneDecompModule.from_config(cfg, 3, 32)
    module.train()
    optimizer = module.configure_optimizers()["optimizer"]
    model = module.model
    trunk_ids = {id(p) for p in model.attention.encoder.parameters()}
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # every parameter exactly once
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model(torch.rand(2, 3, 32, 32)).loss.backward()
    optimizer.step()
    moved = {name: (p.detach() - before[name]).abs().max().item() for name, p in model.named_parameters()}
    trunk = max(moved[name] for name, p in model.named_parameters() if id(p) in trunk_ids)
    assert trunk == pytest.approx(cfg.optim.lr * scale, rel=0.05)
    assert moved["attention.head.weight"] == pytest.approx(cfg.optim.lr, rel=0.05)
