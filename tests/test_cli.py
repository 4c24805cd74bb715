"""End to end through the `scenedecomp` command: train -> evaluate -> visualize, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from overrides import tiny_run

from scenedecomp.cli import main

TINY = tiny_run(48, 16, 24, max_steps=4, val_every_n_steps=2, checkpoint_every_n_steps=2, image_log_every_n_steps=2,
                log_every_n_steps=1)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCENEDECOMP_CACHE", str(tmp_path / "cache"))


def _train(tmp_path, *extra, name="tiny"):
    return main(["train", "--config", "monet-demo", "--quiet", f"out_dir={tmp_path / 'runs'}", f"name={name}",
                 *TINY, *extra])


def test_train_evaluate_visualize(tmp_path, capsys):
    assert _train(tmp_path) == 0
    run = tmp_path / "runs" / "tiny"
    for name in ("config.yaml", "env.json", "metrics.json", "history.jsonl", "checkpoints/last.ckpt",
                 "figures/decomposition_0.png", "figures/validation_curve.png"):
        assert (run / name).is_file(), name
    assert list((run / "checkpoints").glob("step*.ckpt")), "periodic checkpoints"
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert state and all(key.startswith("model.") for key in state), "weights stored once, under model."
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    env = json.loads((run / "env.json").read_text())
    assert {"torch", "lightning", "git_commit", "seed"} <= set(env)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("ari", "fg_ari", "msc", "sc", "mse", "num_images", "train_seconds"):
        assert key in metrics, key
    assert metrics["num_images"] == 24 and 0 <= metrics["fg_ari"] <= 1
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history] == [2, 4] and "fg_ari" in history[0]
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["num_slots"] == 3

    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "val", "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["split"] == "val" and printed["num_images"] == 16
    assert (run / "metrics_val.json").is_file()
    # a different K at inference with the recurrent attention
    assert main(["evaluate", str(run / "checkpoints" / "last.ckpt"), "--num-slots", "5",
                 "--out", str(tmp_path / "k5.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "k5.json").read_text())["num_slots"] == 5

    assert main(["visualize", str(run), "--out", str(tmp_path / "figs"), "--num-images", "5"]) == 0
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["decomposition_0.png", "decomposition_1.png"]

    # the same name again is refused unless asked to overwrite
    assert _train(tmp_path) == 2
    assert "already exists" in capsys.readouterr().err

    # a checkpoint that does not match the run's config
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["latent_dim"] = 6
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", str(run)]) == 2
    assert "does not match" in capsys.readouterr().err


def test_ema_weights_are_what_checkpoints_and_evaluation_use(tmp_path, capsys):
    assert _train(tmp_path, "trainer.ema_decay=0.5", "trainer.checkpoint_every_n_steps=3", name="ema") == 0
    ckpt = torch.load(tmp_path / "runs" / "ema" / "checkpoints" / "step0000003.ckpt", map_location="cpu",
                      weights_only=True)
    averaged, current = ckpt["state_dict"], ckpt["current_model_state"]
    assert averaged.keys() == current.keys()
    moved = [k for k in averaged if averaged[k].is_floating_point() and not torch.equal(averaged[k], current[k])]
    assert moved, "the averaged weights differ from the trained ones after 3 steps"
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "runs" / "ema"), "--json", "--quiet"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["fg_ari"] <= 1
    assert main(["train", "--config", "monet-demo", "trainer.ema_decay=1.5", f"out_dir={tmp_path}"]) == 2
    assert "trainer.ema_decay" in capsys.readouterr().err


def test_ema_warmup_follows_the_early_weights(tmp_path):
    from torch.optim.swa_utils import AveragedModel

    from scenedecomp.training.callbacks import ema_multi_avg_fn

    weight = torch.nn.Parameter(torch.zeros(1))
    holder = torch.nn.Module()
    holder.w = weight
    averaged = AveragedModel(holder, multi_avg_fn=ema_multi_avg_fn(0.999, warmup=True))
    expected = 0.0
    for n in range(1, 51):  # the model's weight is n after step n
        weight.data.fill_(float(n))
        averaged.update_parameters(holder)
        d = min(0.999, (1 + (n - 1)) / (10 + (n - 1)))  # n - 1 updates came before this one
        expected = float(n) if n == 1 else expected + (n - expected) * (1 - d)
        assert averaged.module.w.item() == pytest.approx(expected, rel=1e-6)
    assert averaged.module.w.item() > 35  # a plain 0.999 EMA of 1..50 started at 1 would be ~2.2
    assert _train(tmp_path, "trainer.ema_decay=0.999", "trainer.ema_warmup=true",
                  "trainer.checkpoint_every_n_steps=3", name="warm") == 0
    ckpt = torch.load(tmp_path / "runs" / "warm" / "checkpoints" / "step0000003.ckpt", map_location="cpu",
                      weights_only=True)
    averaged_state, current = ckpt["state_dict"], ckpt["current_model_state"]
    key = next(k for k in current if "weight" in k and current[k].is_floating_point())
    assert not torch.equal(averaged_state[key], current[key])


def test_weight_average_equals_torchs_tensor_by_tensor_ema():
    # the foreach average against torch's per-tensor EMA, over parameters and buffers (BatchNorm's running
    # statistics and its integer batch count), and the state keys earlier checkpoints were written under
    from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

    from scenedecomp.training.callbacks import ExponentialWeightAverage, ema_multi_avg_fn

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(2, 2))
    ours = AveragedModel(net, multi_avg_fn=ema_multi_avg_fn(0.9), use_buffers=True)
    reference = AveragedModel(net, avg_fn=get_ema_avg_fn(0.9), use_buffers=True)
    for _ in range(5):
        net(torch.rand(2, 3, 4, 4))  # training mode: the running statistics and the batch count move
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ours.update_parameters(net)
        reference.update_parameters(net)
    mine, theirs = ours.module.state_dict(), reference.module.state_dict()
    assert mine["1.num_batches_tracked"].item() == net[1].num_batches_tracked.item() == 5
    for key in theirs:  # torch's EMA of the integer count truncates 0.9 * n + 0.1 * m; ours takes the count
        if theirs[key].is_floating_point():
            torch.testing.assert_close(mine[key], theirs[key], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(mine["0.weight"], net[0].weight)  # an average, not a copy
    assert ExponentialWeightAverage(0.999).state_key == "EMAWeightAveraging"
    assert ExponentialWeightAverage(0.999, warmup=True).state_key == "WeightAveraging"


class _Payload:
    """A pickle whose loading would create a marker file (the checkpoint attack)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_checkpoint_never_runs(tmp_path, capsys):
    assert _train(tmp_path) == 0
    run = tmp_path / "runs" / "tiny"
    marker = tmp_path / "pwned"
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state["hyper_parameters"]["payload"] = _Payload(marker)
    torch.save(state, run / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    for args in (["evaluate", str(run)], ["visualize", str(run), "--out", str(tmp_path / "figs")],
                 ["train", "--config", "monet-demo", f"out_dir={tmp_path / 'runs'}", "name=tiny", "--resume", *TINY]):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert "refused without running them" in err and len(err.splitlines()) == 1, err
        assert not marker.exists(), f"{args[0]} ran code from the checkpoint"


AIR_TINY = ["data.num_train=64", "data.num_val=16", "data.num_test=30", "data.batch_size=16",
            "data.eval_batch_size=16", "model.air.lstm_hidden=32", "model.air.patch_size=10",
            "model.air.what_dim=6", "model.air.what_hidden=32", "model.air.baseline_hidden=16",
            "trainer.max_steps=4", "trainer.val_every_n_steps=2", "trainer.checkpoint_every_n_steps=2",
            "trainer.image_log_every_n_steps=2", "trainer.log_every_n_steps=1"]


def test_air_train_evaluate_visualize_with_counts_and_boxes(tmp_path, capsys):
    assert main(["train", "--config", "air-multi-mnist", "--quiet", f"out_dir={tmp_path / 'runs'}", "name=air",
                 *AIR_TINY]) == 0
    run = tmp_path / "runs" / "air"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("count_accuracy", "count_accuracy_by_count", "fg_ari", "mse", "num_images"):
        assert key in metrics, key
    assert metrics["num_images"] == 30 and 0 <= metrics["count_accuracy"] <= 1
    assert set(metrics["count_accuracy_by_count"]) <= {"0", "1", "2"}
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert "count_accuracy" in history[-1]
    assert (run / "figures" / "boxes.png").is_file() and (run / "figures" / "validation_curve.png").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--quiet"]) == 0
    assert "count acc" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["train", "--config", "no-such-preset"], "unknown preset"),
    (["train", "--config", "monet-demo", "model.num_slots=1"], "at least 2"),
    (["train", "--config", "monet-demo", "model.numslots=3"], "numslots"),
    (["train", "--config", "monet-demo", "optim.lr=fast"], "optim.lr"),
    (["train", "--config", "monet-demo", "data.name=no_such_data"], "unknown dataset"),
    (["train", "--config", "air-multi-mnist", "model.air.max_steps=0"], "at least 1"),
    (["train", "--config", "air-multi-mnist", "data.image_size=20"], "smaller than the digit size"),
    (["train", "--config", "air-multi-mnist", "data.options.mnist_path=/no/such/mnist"], "does not exist"),
    (["evaluate", "/no/such/run"], "no such run"),
    (["visualize", "/no/such/run", "--out", "x"], "no such run"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    code = main([*args, f"out_dir={tmp_path / 'runs'}"] if args[0] == "train" else args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_unwritable_run_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["train", "--config", "monet-demo", f"out_dir={blocker}/runs"]) == 2
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["visualize"], ["benchmark", "step"], ["presets"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0 and "usage: scenedecomp" in capsys.readouterr().out


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("scenedecomp")
    result = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("scenedecomp ")


def test_presets_into_a_closed_pipe_ends_quietly():
    # `scenedecomp presets | head -1`: the reader is gone before the command writes (the pipe's read end is
    # closed before the interpreter has even started), so every write meets a broken pipe
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-c", "import sys; from scenedecomp.cli import main; "
                               "sys.exit(main(['presets']))"], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.stderr == "" and done.returncode == 0
