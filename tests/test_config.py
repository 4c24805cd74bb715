"""Config loading: presets, overrides, and one-line refusals of bad input."""

from __future__ import annotations

import pytest

from scenedecomp.config import ConfigError, list_presets, load_config


def test_every_preset_loads():
    names = list_presets()
    assert "monet-demo" in names and "monet-multi-sprites" in names
    for name in names:
        cfg = load_config(name)
        assert cfg.model.name in ("monet", "air", "slot_attention")


def test_paper_preset_values():
    cfg = load_config("monet-multi-sprites")
    assert cfg.model.attention.channels == [32, 32, 64, 64, 64]
    assert (cfg.model.loss.sigma_bg, cfg.model.loss.sigma_fg) == (0.09, 0.11)
    assert (cfg.model.loss.beta, cfg.model.loss.gamma) == (0.5, 0.5)
    assert (cfg.optim.name, cfg.optim.lr, cfg.data.batch_size) == ("rmsprop", 1e-4, 64)


def test_overrides_are_typed():
    cfg = load_config("monet-demo", ["model.num_slots=6", "optim.lr=0.01", "model.attention.channels=[8,8]"])
    assert cfg.model.num_slots == 6 and cfg.optim.lr == 0.01 and cfg.model.attention.channels == [8, 8]


@pytest.mark.parametrize("override, pattern", [
    ("model.num_slotz=4", "num_slotz"),
    ("model.num_slots=four", "num_slots"),
    ("model.num_slots=1", "at least 2"),
    ("optim.name=sgd", "optimiser"),
    ("nonsense", "dotted.key=value"),
    ("model.loss.likelihood=both", "likelihood"),
    ("model.attention.trunk_lr_scale=0", "trunk_lr_scale must be positive"),
    ("model.attention.trunk_lr_scale=0.1", "U-Net has no trunk"),  # monet-demo's attention is the U-Net
])
def test_bad_overrides_are_refused_in_one_line(override, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config("monet-demo", [override])
    assert "\n" not in str(info.value)


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("no-such-preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {num_slots: [\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model:\n  colour: red\n")
    with pytest.raises(ConfigError, match="colour"):
        load_config(unknown)


@pytest.mark.parametrize("override, allowed", [
    ("model.attention.type=unet", "unet_recurrent, resnet, resnet_skip"),
    ("model.init=xavier", "torch_default, trunc_normal_default, trunc_normal_kaiming"),
    ("model.name=genesis", "monet, air, slot_attention"),
    ("model.air.composition=over", "additive, alpha"),
])
def test_a_bad_choice_names_the_key_and_the_allowed_values(override, allowed):
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as info:
        load_config("monet-demo", [override])
    message = str(info.value)
    assert "\n" not in message and key in message and allowed in message


def test_choices_round_trip_through_config_yaml(tmp_path):
    from scenedecomp.config import to_dict, to_yaml

    cfg = load_config("monet-rn18star-sprites-cpu", ["model.attention.mask_normalization=softmax"])
    assert cfg.model.attention.type == "resnet_skip" and f"{cfg.model.attention.type}" == "resnet_skip"
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(cfg))
    assert "type: resnet_skip" in saved.read_text() and "mask_normalization: softmax" in saved.read_text()
    assert load_config(saved) == cfg
    plain = to_dict(cfg)  # checkpoint hyper-parameters: plain strings only (weights_only loading)
    assert type(plain["model"]["attention"]["type"]) is str and type(plain["model"]["init"]) is str
