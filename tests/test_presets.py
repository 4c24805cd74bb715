"""Presets: the resolved configuration of every preset is pinned, so restructuring the preset files can
never change what a run trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scenedecomp.config import ConfigError, list_presets, load_config, to_yaml
from scenedecomp.config.presets import CONFIG_DIR, list_fragments

RESOLVED = Path(__file__).parent / "presets_resolved"  # to_yaml(load_config(name)) per preset


def test_every_preset_is_pinned():
    assert sorted(list_presets()) == sorted(p.stem for p in RESOLVED.glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(p.stem for p in RESOLVED.glob("*.yaml")))
def test_resolved_preset_is_unchanged(name):
    assert to_yaml(load_config(name)) == (RESOLVED / f"{name}.yaml").read_text()


def test_presets_compose_from_fragments():
    # a preset names a model and a dataset fragment and states only its differences
    text = (CONFIG_DIR / "monet-rn50star-objects-room.yaml").read_text()
    assert "defaults: {model: monet-rn50star, dataset: objects_room}" in text and "channels" not in text
    assert {"monet-paper", "monet-rn50", "monet-rn50star"} <= set(list_fragments("model"))
    assert "monet-paper" not in list_presets() and "objects_room" not in list_presets()  # fragments are not presets


def test_a_model_dataset_override_applies_only_to_its_pair():
    assert load_config("monet-paper-clevr").model.attention.channels == [32, 32, 32, 64, 64, 64]
    assert load_config("monet-clevr").model.attention.channels == [64, 128, 256, 512, 512, 512]
    assert load_config("monet-rn50-clevr").model.attention.channels == [32, 32, 64, 64, 64]  # unused default


def _preset(tmp_path, text: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


def test_a_preset_outside_the_package_uses_packaged_and_local_fragments(tmp_path):
    cfg = load_config(_preset(tmp_path, "defaults: {model: monet-paper, dataset: objects_room}\nname: mine\n"))
    assert (cfg.name, cfg.model.num_slots, cfg.data.image_size) == ("mine", 7, 64)
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "mine.yaml").write_text("data: {name: shapes, image_size: 32}\nmodel: {num_slots: 4}\n")
    cfg = load_config(_preset(tmp_path, "defaults: {model: monet-paper, dataset: mine}\n"))
    assert (cfg.data.name, cfg.model.num_slots, cfg.optim.name) == ("shapes", 4, "rmsprop")


@pytest.mark.parametrize("text, pattern", [
    ("defaults: {model: no-such-model}\n", r"unknown model 'no-such-model'; known: .*monet-paper"),
    ("defaults: {trainer: fast}\n", "unknown group 'trainer'"),
    ("defaults: [model/monet-paper]\n", "defaults must be a mapping"),
    ("defaults: {model: monet-paper}\nmodel: {attention: {type: unet}}\n", "model.attention.type"),
    ("defaults: {preset: no-such-preset}\n", r"mine.yaml: defaults: unknown preset 'no-such-preset'.*monet-demo"),
    ("defaults: {preset: monet-demo, model: monet-paper}\n", "preset cannot be combined with model or dataset"),
    ("defaults: {preset: elsewhere.yaml}\n", r"defaults: .*elsewhere.yaml: no such config file"),
])
def test_bad_defaults_are_refused_in_one_line(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(_preset(tmp_path, text))
    assert "\n" not in str(info.value)


def test_a_preset_starts_from_another_and_changes_only_what_it_states(tmp_path):
    # a packaged base: everything of monet-demo except the lines the file states
    cfg = load_config(_preset(tmp_path, "defaults: {preset: monet-demo}\nname: mine\nmodel: {num_slots: 3}\n"))
    demo = load_config("monet-demo")
    assert (cfg.name, cfg.model.num_slots) == ("mine", 3)
    assert (cfg.model.attention, cfg.optim, cfg.trainer) == (demo.model.attention, demo.optim, demo.trainer)
    # a base beside the preset is found first, and may itself start from a packaged preset
    (tmp_path / "base.yaml").write_text("defaults: {preset: monet-demo}\ndata: {image_size: 48}\n")
    cfg = load_config(_preset(tmp_path, "defaults: {preset: base}\nmodel: {attention: {type: resnet_skip}}\n"))
    assert (cfg.data.image_size, cfg.model.attention.type.value, cfg.model.latent_dim) == (48, "resnet_skip", 16)
    assert cfg.model.component == demo.model.component
    assert load_config(_preset(tmp_path, "defaults: {preset: base.yaml}\n")).data.image_size == 48


def test_a_defaults_loop_is_refused(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a.yaml").write_text("defaults: {model: b}\n")
    (tmp_path / "model" / "b.yaml").write_text("defaults: {model: a}\n")
    with pytest.raises(ConfigError, match="defaults form a loop"):
        load_config(_preset(tmp_path, "defaults: {model: a}\n"))


# one training step of every preset's model, loss and optimiser on random images, with tiny overrides:
# 32x32 images (64x64 for a 6-block U-Net; both divisible by the ResNet stride), batch 2, ResNet18 backbones and
# narrow U-Nets (the presets' own widths are pinned above), short AIR recurrences
SMOKE = ["data.image_size=32", "data.batch_size=2", "model.attention.backbone=resnet18",
         "model.air.lstm_hidden=16", "model.air.what_hidden=16", "model.air.baseline_hidden=16",
         "model.air.patch_size=8", "model.component.encoder_hidden=16", "model.component.decoder_channels=8"]


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_trains_one_step(name):
    from scenedecomp.training.module import SceneDecompModule

    cfg = load_config(name, SMOKE)
    blocks = len(cfg.model.attention.channels)
    size = 64 if blocks >= 6 else 32  # InstanceNorm needs a bottleneck of 2x2 or more
    cfg = load_config(name, [*SMOKE, f"data.image_size={size}", f"model.attention.channels={[8] * blocks}",
                             "model.attention.mlp_hidden=[16]"])
    channels = 1 if cfg.data.name == "multi_mnist" else 3
    torch.manual_seed(0)
    module = SceneDecompModule.from_config(cfg, channels, size)
    module.train()
    optimizer = module.configure_optimizers()["optimizer"]
    before = [p.detach().clone() for p in module.model.parameters()]
    out = module.model(torch.rand(2, channels, size, size))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, module.model.parameters()))


def _flat(cfg) -> dict[str, object]:
    from omegaconf import OmegaConf

    out: dict[str, object] = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            out[prefix] = node

    walk("", OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True))
    return out


# the thesis compares its MONet with MONet-RN50 and RN50* per dataset: the pairs may differ only in the
# attention network (the thesis uses one initialisation, trunc_normal_kaiming, for all three)
THESIS_PAIRS = [("monet-objects-room", "monet-rn50-objects-room"), ("monet-clevr", "monet-rn50-clevr"),
                ("monet-objects-room", "monet-rn50star-objects-room"), ("monet-clevr", "monet-rn50star-clevr")]
# the CPU comparisons of docs/results.md ("MONet vs one-pass ResNet attention"): the same recipe for both
# sides, only the attention differs
CPU_PAIRS = [("monet-demo", "monet-rn18star-sprites-cpu"), ("monet-rooms64-cpu", "monet-rn18star-rooms64-cpu"),
             *(("monet-sprites64-cpu", f"monet-{rn}-sprites64-cpu")
               for rn in ("rn18star", "rn34star", "rn50star", "rn50"))]
COMPARED = THESIS_PAIRS + CPU_PAIRS


@pytest.mark.parametrize("first, second", COMPARED)
def test_compared_presets_differ_only_in_the_attention(first, second):
    a, b = _flat(load_config(first)), _flat(load_config(second))
    assert a.keys() == b.keys()
    differing = {key for key in a if a[key] != b[key]}
    allowed = {"name", "notes"} | {key for key in a if key.startswith("model.attention.")}
    assert differing <= allowed, sorted(differing - allowed)
    assert {"name", "notes", "model.attention.type"} <= differing
    assert a["model.init"] == b["model.init"]
    if (first, second) in THESIS_PAIRS:
        assert a["model.init"] == "trunc_normal_kaiming"


def test_the_thesis_monet_is_the_13_9m_ngf64_unet():
    from scenedecomp.models import build_model

    for name, size in (("monet-objects-room", 64), ("monet-paper-objects-room", 64)):
        cfg = load_config(name)
        model = build_model(cfg.model, 3, size)
        params = sum(p.numel() for p in model.attention.parameters())
        assert round(params / 1e6, 2) == (13.93 if name == "monet-objects-room" else 0.60), (name, params)
