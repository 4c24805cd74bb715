"""Presets: the resolved configuration of every preset is pinned, so restructuring the preset files can
never change what a run trains."""

from __future__ import annotations

from pathlib import Path

import pytest

from scenedecomp.training.config import list_presets, load_config, to_yaml

RESOLVED = Path(__file__).parent / "presets_resolved"  # to_yaml(load_config(name)) per preset


def test_every_preset_is_pinned():
    assert sorted(list_presets()) == sorted(p.stem for p in RESOLVED.glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(p.stem for p in RESOLVED.glob("*.yaml")))
def test_resolved_preset_is_unchanged(name):
    assert to_yaml(load_config(name)) == (RESOLVED / f"{name}.yaml").read_text()
