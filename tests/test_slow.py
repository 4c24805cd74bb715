"""Slower end-to-end checks (minutes): ``make test-slow`` runs them; the default suite skips them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from scenedecomp.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCENEDECOMP_CACHE", str(tmp_path / "cache"))


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compiled_training_runs_end_to_end(tmp_path):
    """``trainer.compile=true`` (torch.compile, slow to compile on a CPU) trains, evaluates and draws."""
    tiny = ["data.image_size=16", "data.num_train=32", "data.num_val=8", "data.num_test=8", "data.batch_size=8",
            "model.num_slots=3", "model.latent_dim=4", "model.attention.channels=[8,8,8]",
            "model.attention.mlp_hidden=[16]", "model.component.encoder_channels=[8,8]",
            "model.component.encoder_hidden=16", "model.component.decoder_channels=8", "trainer.max_steps=3",
            "trainer.val_every_n_steps=3", "trainer.compile=true"]
    assert main(["train", "--config", "monet-demo", "--quiet", f"out_dir={tmp_path}", "name=c", *tiny]) == 0
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert metrics["num_images"] == 8 and metrics["train_steps"] == 3


def test_air_counts_on_several_seeds(tmp_path):
    """AIR at the preset's settings counts 0-2 digits on held-out scenes after 1,500 steps, on each of
    three seeds (``scenedecomp seeds``: the training command, two runs at a time, one thread each; about
    11 minutes on two shared cores).

    The threshold is the one a stuck run fails: without ``z_pres_floor``, seed 0 switched its second step
    off for every scene and counted every 2-digit scene as 1 (count accuracy 0.65 from step 1,000 on).
    """
    out = tmp_path / "table"
    code = main(["seeds", "air-multi-mnist", "--seeds", "0-2", "--out", str(out), "--fail-below", "0.95",
                 "trainer.max_steps=1500", "data.num_train=20000", "data.num_test=1000",
                 "trainer.val_every_n_steps=500"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads((out / f"seed{s}.json").read_text()) for s in range(3)]
    assert [r["train_steps"] for r in records] == [1500] * 3
    accuracies = {r["seed"]: r["metrics"]["count_accuracy"] for r in records}
    assert min(accuracies.values()) >= 0.95, accuracies
    assert summary["num_failed"] == 0 and summary["criterion"] == "count_accuracy < 0.95"


def test_air_count_benchmark_writes_its_curve(tmp_path):
    """``benchmarks/air_count_accuracy.py`` (the plain-loop benchmark) writes its JSON and PNG."""
    out = tmp_path / "air.json"
    code = _benchmark("air_count_accuracy").main(
        ["--minutes", "10", "--max-steps", "30", "--seed", "0", "--threads", "1", "--eval-every", "1e9",
         "--num-eval", "100", "--num-final", "200", "--num-train", "2000", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["steps"] == 30 and result["final"]["num_test"] == 200
    assert set(result["final"]["accuracy_by_count"]) == {"0", "1", "2"}
    assert out.with_suffix(".png").is_file()
