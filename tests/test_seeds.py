"""`scenedecomp seeds`: one preset trained for several seeds, per-seed JSON and a summary."""

from __future__ import annotations

import json
import statistics

import pytest
from test_cli import TINY

from scenedecomp.cli import main
from scenedecomp.cli.seeds import parse_seeds
from scenedecomp.config import ConfigError
from scenedecomp.training import seeds as seeds_module
from scenedecomp.training.seeds import criterion_for, probe_scalars, summarize


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5") == [5]
    assert parse_seeds("7,0,2-3,2") == [0, 2, 3, 7]
    for bad in ("", "a", "3-1", "-2", "1-x"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_default_criteria():
    assert criterion_for("air") == ("count_accuracy", 0.9)
    assert criterion_for("monet") == ("fg_ari", 0.5)


def _record(seed, value, status="ok"):
    if status != "ok":
        return {"preset": "p", "overrides": [], "seed": seed, "status": status, "failed": True, "error": "x"}
    return {"preset": "p", "overrides": [], "seed": seed, "status": "ok",
            "metrics": {"fg_ari": value, "mse": 1.0, "fg_ari_std": 0.1, "fg_ari_count": 7}, "failed": value < 0.5}


def test_summary_counts_failures_and_errors():
    records = [_record(0, 0.9), _record(1, 0.4), _record(2, None, status="error"), _record(3, 0.7)]
    summary = summarize(records, ("fg_ari", 0.5))
    assert summary["num_failed"] == 2 and summary["failed_seeds"] == [1, 2] and summary["errors"] == [2]
    stats = summary["metrics"]["fg_ari"]
    assert stats["n"] == 3
    assert stats["mean"] == pytest.approx(statistics.mean([0.9, 0.4, 0.7]))
    assert stats["std"] == pytest.approx(statistics.stdev([0.9, 0.4, 0.7]))
    assert (stats["min"], stats["max"]) == (0.4, 0.9)
    assert summary["metrics"]["mse"]["std"] == 0.0
    assert set(summary["metrics"]) == {"fg_ari", "mse"}  # a run's per-image spreads and counts are not summarised


@pytest.mark.slow  # two trainings in subprocesses: 20-40 s on two shared cores
def test_seeds_command_trains_each_seed_and_summarises(tmp_path, capsys):
    out, runs = tmp_path / "table", tmp_path / "runs"
    code = main(["seeds", "monet-demo", *TINY, f"data.options.cache_dir={tmp_path / 'cache'}", "--seeds", "0-1",
                 "--out", str(out), "--runs-dir", str(runs)])
    assert code == 0, capsys.readouterr()
    printed = capsys.readouterr().out
    assert "failed" in printed and "fg_ari" in printed
    # independent: the runs' own metrics.json and config.yaml
    run_metrics = {s: json.loads((runs / f"seed{s}" / "metrics.json").read_text()) for s in (0, 1)}
    for s in (0, 1):
        assert f"seed: {s}\n" in (runs / f"seed{s}" / "config.yaml").read_text()
        record = json.loads((out / f"seed{s}.json").read_text())
        assert record["seed"] == s and record["status"] == "ok" and record["preset"] == "monet-demo"
        assert record["metrics"]["fg_ari"] == run_metrics[s]["fg_ari"]
        assert record["train_steps"] == run_metrics[s]["train_steps"] == 4
        assert record["failed"] == (run_metrics[s]["fg_ari"] < 0.5)
        assert "seed=" in record["command"] and "trainer.num_threads=1" in record["command"]
    assert run_metrics[0]["mse"] != run_metrics[1]["mse"]  # the seeds differ
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["criterion"] == "fg_ari < 0.5"
    for name in ("fg_ari", "ari", "mse"):
        values = [run_metrics[s][name] for s in (0, 1)]
        stats = summary["metrics"][name]
        assert stats["mean"] == pytest.approx(statistics.mean(values))
        assert stats["std"] == pytest.approx(statistics.stdev(values))
        assert (stats["min"], stats["max"], stats["n"]) == (min(values), max(values), 2)
    assert summary["num_failed"] == sum(run_metrics[s]["fg_ari"] < 0.5 for s in (0, 1))
    # the run directories exist now: a second table refuses to overwrite them, before training anything
    assert main(["seeds", "monet-demo", *TINY, "--seeds", "1", "--out", str(out), "--runs-dir", str(runs)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["seed=3"], "sets seed itself"),
    (["model.no_such_key=1"], "no_such_key"),
    (["--seeds", "2-1"], "--seeds"),
    (["--parallel", "0"], "--parallel"),
])
def test_seeds_command_refuses_bad_input(tmp_path, capsys, args, message):
    code = main(["seeds", "monet-demo", "--out", str(tmp_path / "t"), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()


def test_a_seed_whose_training_fails_is_recorded_and_counted(tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    out = tmp_path / "table"
    code = main(["seeds", "monet-demo", *TINY, f"data.options.cache_dir={blocker}", "--seeds", "0",
                 "--out", str(out), "--runs-dir", str(tmp_path / "runs")])
    assert code == 1
    record = json.loads((out / "seed0.json").read_text())
    assert record["status"] == "error" and record["failed"] and record["returncode"] != 0
    assert "not-a-folder" in record["error"]  # the training's last output line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_failed"] == 1 and summary["errors"] == [0] and summary["metrics"] == {}
    assert "seed 0: error" in capsys.readouterr().out


def _probes(x: float) -> dict:
    return {"dci_disentanglement": 0.4, "mig": 0.02, "importance": [[0.1]], "factor_names": ["x", "shape"],
            "informativeness": {"mlp": {"x": x, "shape": 0.5}, "linear": {"x": x - 0.1, "shape": 0.4}}}


def test_probe_scalars_flattens_the_disentanglement_result():
    flat = probe_scalars(_probes(0.9))
    assert flat == {"dci_disentanglement": 0.4, "mig": 0.02, "probe_mlp_x": 0.9, "probe_mlp_shape": 0.5,
                    "probe_linear_x": pytest.approx(0.8), "probe_linear_shape": 0.4}
    assert probe_scalars(None) == {}


def test_collect_rebuilds_the_table_from_existing_runs_without_training(tmp_path, capsys, monkeypatch):
    runs, out = tmp_path / "runs", tmp_path / "table"
    for seed, (fg_ari, x) in enumerate([(0.9, 0.95), (0.4, 0.85)]):
        (runs / f"seed{seed}").mkdir(parents=True)
        metrics = {"fg_ari": fg_ari, "mse": 0.001, "train_steps": 100, "disentanglement": _probes(x)}
        (runs / f"seed{seed}" / "metrics.json").write_text(json.dumps(metrics))

    def no_subprocess(*args, **kwargs):
        raise AssertionError("collect must not start a process when every run has its probes")

    monkeypatch.setattr(seeds_module.subprocess, "run", no_subprocess)
    code = main(["seeds", "monet-demo", "--collect", "--disentanglement", "--seeds", "0-1", "--out", str(out),
                 "--runs-dir", str(runs)])
    assert code == 0, capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_failed"] == 1 and summary["failed_seeds"] == [1]
    assert summary["metrics"]["probe_mlp_x"]["mean"] == pytest.approx(0.9)
    assert summary["metrics"]["probe_mlp_x"]["std"] == pytest.approx(statistics.stdev([0.95, 0.85]))
    kept = json.loads((out / "seed0.json").read_text())["metrics"]
    assert kept["probe_linear_shape"] == 0.4 and "disentanglement" not in kept  # scalars only, no figure paths
    # a seed that was never trained cannot be collected: one line, nothing written
    code = main(["seeds", "monet-demo", "--collect", "--seeds", "0-2", "--out", str(tmp_path / "t2"),
                 "--runs-dir", str(runs)])
    err = capsys.readouterr().err
    assert code == 2 and "seed2" in err and "no such run directory" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t2").exists()
