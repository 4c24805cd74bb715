"""Session-wide tiny trained runs (one MONet, one AIR, each trained once) for the tests of decompose,
disentanglement, OOD splits, traversals and the report; conftest.py loads this file as a plugin, so the
``monet_run`` and ``air_run`` fixtures are available everywhere and each run is trained at most once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_cli import AIR_TINY, TINY

from scenedecomp.cli import main


def _train(factory, kind: str) -> Path:
    root = factory.mktemp(f"run-{kind}")
    cache = f"data.options.cache_dir={root / 'cache'}"
    if kind == "monet":
        args = ["--config", "monet-demo", *TINY, "data.num_test=40", "model.latent_dim=5"]
    else:
        args = ["--config", "air-multi-sprites", *AIR_TINY, "data.image_size=24", "model.air.max_steps=3"]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *args, "--quiet", f"out_dir={root}", f"name={kind}", cache]) == 0
    finally:
        torch.set_num_threads(previous)
    return root / kind


@pytest.fixture(scope="session")
def monet_run(tmp_path_factory) -> Path:
    """A MONet run (16x16 multi_sprites, K=3, latent 5, 4 steps) with test metrics and figures."""
    return _train(tmp_path_factory, "monet")


@pytest.fixture(scope="session")
def air_run(tmp_path_factory) -> Path:
    """An AIR run (24x24 multi_sprites with 0-3 sprites, 3 steps, 4 training steps)."""
    return _train(tmp_path_factory, "air")
