"""Kill and resume: a real training subprocess is SIGKILLed (also in the middle of a checkpoint write) and
`train --resume` continues to the same step count and, on CPU with the same seed, the same weights and
metrics as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from overrides import tiny_run

from scenedecomp.data.samplers import ResumableSampler

# 40 training images in batches of 8: 5 batches per epoch, so 13 steps cross two epoch boundaries
TINY = [*tiny_run(40, 8, 16, max_steps=13, val_every_n_steps=4, checkpoint_every_n_steps=3,
                  image_log_every_n_steps=0, log_every_n_steps=1, num_threads=1), "data.eval_batch_size=8"]

# Runs the CLI in a child process; SCENEDECOMP_TEST_KILL="after:N" SIGKILLs it right after the checkpoint of
# step N (and last.ckpt) is on disk, "during:N" half-way through writing that checkpoint's temp file (before
# the rename).
DRIVER = textwrap.dedent("""
    import os, signal, sys
    from scenedecomp.training import resume  # its AtomicCheckpointIO writes every checkpoint
    mode, _, step = os.environ.get("SCENEDECOMP_TEST_KILL", "").partition(":")
    original = resume.atomic_write_bytes
    armed = []

    def killing_write(path, data=None, writer=None):
        path = __import__("pathlib").Path(path)
        number = path.stem[4:].split("-")[0]  # step0000027.ckpt (or step0000027-v1.ckpt)
        hit = path.name.startswith("step") and number.isdigit() and int(number) == int(step or -1)
        if hit and mode == "during":
            def half(fh):
                import io
                buf = io.BytesIO()
                writer(buf)
                fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return original(path, writer=half)
        result = original(path, data, writer)
        if hit and mode == "after":
            armed.append(path)  # Lightning writes last.ckpt right after the step file
        elif armed and path.name == "last.ckpt":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    resume.atomic_write_bytes = killing_write
    from scenedecomp.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _run(tmp_path, name, *extra, kill="", timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SCENEDECOMP_CACHE": str(tmp_path / "cache"),
           "SCENEDECOMP_TEST_KILL": kill}
    args = ["train", "--config", "monet-demo", "--quiet", f"out_dir={tmp_path / 'runs'}", f"name={name}", *TINY,
            *extra]
    return subprocess.run([sys.executable, "-c", DRIVER, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_sampler_order_depends_on_seed_and_epoch_only():
    a, b = ResumableSampler(40, seed=3, batch_size=8), ResumableSampler(40, seed=3, batch_size=8)
    a.set_epoch(2)
    b.resume_at(2, consumed_batches=3)
    full = list(a)
    assert sorted(full) == list(range(40))
    assert list(b) == full[24:] and list(b) == full, "the skip applies to one iteration only"
    assert b.batch_indices(2, 1) == full[8:16]
    a.set_epoch(3)
    assert list(a) != full


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    start = time.perf_counter()
    ref = _run(tmp_path, "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_run = tmp_path / "runs" / "ref"

    # killed right after the step-6 checkpoint (mid-epoch 1), then half-way through writing step 9's
    killed = _run(tmp_path, "cut", kill="after:6")
    assert killed.returncode == -signal.SIGKILL
    cut = tmp_path / "runs" / "cut"
    assert _state(cut)["global_step"] == 6
    resumed = _run(tmp_path, "cut", "--resume", kill="during:9")
    assert resumed.returncode == -signal.SIGKILL
    assert list((cut / "checkpoints").glob(".*.tmp")), "the kill left a half-written temp file"
    assert not (cut / "checkpoints" / "step0000009.ckpt").exists(), "a half checkpoint never takes the name"
    assert _state(cut)["global_step"] == 6, "last.ckpt is still the last complete checkpoint"
    final = _run(tmp_path, "cut", "--resume")
    assert final.returncode == 0, final.stderr[-3000:]
    assert not list((cut / "checkpoints").glob(".*.tmp")), "stale temp files are cleaned up on resume"

    ref_state, cut_state = _state(ref_run), _state(cut)
    assert cut_state["global_step"] == ref_state["global_step"] == 13
    for key, value in ref_state["state_dict"].items():
        assert torch.equal(value, cut_state["state_dict"][key]), key
    ref_metrics = json.loads((ref_run / "metrics.json").read_text())
    cut_metrics = json.loads((cut / "metrics.json").read_text())
    for key in ("ari", "fg_ari", "msc", "mse"):
        assert ref_metrics[key] == cut_metrics[key], key
    history = {json.loads(line)["step"]: json.loads(line) for line in (ref_run / "history.jsonl").open()}
    cut_history = {json.loads(line)["step"]: json.loads(line) for line in (cut / "history.jsonl").open()}
    assert set(cut_history) == set(history) == {4, 8, 12}
    assert cut_history[12]["fg_ari"] == history[12]["fg_ari"] and cut_history[12]["mse"] == history[12]["mse"]
    # the clock continues across the resumes (the rows of steps 8 and 12 come from resumed processes)
    assert cut_history[4]["seconds"] < cut_history[8]["seconds"] < cut_history[12]["seconds"]
    print(f"kill/resume test: {time.perf_counter() - start:.0f} s")


@pytest.mark.slow
def test_kills_at_random_moments_lose_nothing(tmp_path):
    """SIGKILL at random wall-clock moments after each new checkpoint (seeded, so a failure can be replayed),
    resume after each, three times; the result equals an uninterrupted run bit for bit."""
    import random

    seed = int(os.environ.get("SCENEDECOMP_KILL_SEED", "0"))
    rng = random.Random(seed)
    longer = ["trainer.max_steps=31"]  # 6 checkpoints, so the kills land mid-run
    ref = _run(tmp_path, "ref", *longer)
    assert ref.returncode == 0, ref.stderr[-3000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SCENEDECOMP_CACHE": str(tmp_path / "cache")}
    base = ["train", "--config", "monet-demo", "--quiet", f"out_dir={tmp_path / 'runs'}", "name=cut", *TINY, *longer]
    cut = tmp_path / "runs" / "cut"
    last = cut / "checkpoints" / "last.ckpt"
    kills = []
    for _ in range(3):
        first = _state(cut)["global_step"] if last.exists() else 0
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, *base, *(["--resume"] if last.exists() else [])],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and \
                (not last.exists() or _state(cut)["global_step"] == first):
            time.sleep(0.01)  # wait for a new checkpoint, so every attempt makes progress
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills.append(_state(cut)["global_step"])
        proc.wait(timeout=60)
        if proc.returncode == 0:
            break
    assert any(step < 31 for step in kills), f"no kill landed mid-run (seed {seed}, kills at {kills})"
    if _state(cut)["global_step"] < 31:
        final = _run(tmp_path, "cut", "--resume", *longer)
        assert final.returncode == 0, final.stderr[-3000:]
    ref_state, cut_state = _state(tmp_path / "runs" / "ref"), _state(cut)
    assert cut_state["global_step"] == ref_state["global_step"] == 31
    names = sorted(p.name for p in (cut / "checkpoints").glob("step*.ckpt"))
    assert names == sorted(p.name for p in (tmp_path / "runs" / "ref" / "checkpoints").glob("step*.ckpt")), names
    for key, value in ref_state["state_dict"].items():
        assert torch.equal(value, cut_state["state_dict"][key]), (key, seed, kills)
    print(f"random kills (seed {seed}) after checkpoints at steps {kills}")


def test_history_clock_continues_from_the_checkpoint_state(tmp_path):
    from types import SimpleNamespace

    from scenedecomp.training.callbacks import HistoryCallback

    trainer = SimpleNamespace(global_step=4, sanity_checking=False, is_global_zero=True, world_size=1,
                              callback_metrics={})
    first = HistoryCallback(tmp_path / "history.jsonl", batch_size=8)
    first.on_fit_start(trainer, None)
    time.sleep(0.05)
    state = first.state_dict()  # what Lightning stores in the checkpoint
    assert state["seconds"] >= 0.05
    resumed = HistoryCallback(tmp_path / "history.jsonl", batch_size=8)
    resumed.load_state_dict(state)
    resumed.on_fit_start(trainer, None)
    trainer.global_step = 8
    resumed.on_validation_start(trainer, None)
    resumed.on_validation_end(trainer, SimpleNamespace())
    row = json.loads((tmp_path / "history.jsonl").read_text().splitlines()[-1])
    assert row["step"] == 8 and row["seconds"] >= round(state["seconds"], 2)
