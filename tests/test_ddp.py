"""Data parallelism on CPU: a real 2-process DDP (gloo) training run through the command line, whose
validation metrics (sharded, reduced as sums of per-image values) equal a single-process evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from test_cli import TINY

from scenedecomp.data.samplers import ResumableSampler, ShardSampler

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


def test_shards_are_disjoint_and_cover_the_data():
    train = [ResumableSampler(23, seed=1, batch_size=4) for _ in range(2)]
    val = [ShardSampler(23) for _ in range(2)]
    for rank in range(2):
        train[rank].set_shard(rank, 2)
        val[rank].set_shard(rank, 2)
    a, b = list(train[0]), list(train[1])
    assert len(a) == len(b) == len(train[0]) == 11, "equal steps on every rank"
    assert not set(a) & set(b) and set(a) | set(b) <= set(range(23))
    single = ResumableSampler(23, seed=1, batch_size=4).order(0).tolist()
    assert a == single[0::2][:11] and b == single[1::2][:11]
    assert sorted(list(val[0]) + list(val[1])) == list(range(23)), "every image evaluated exactly once"
    train[1].resume_at(0, consumed_batches=2)
    assert list(train[1]) == b[8:], "resume skips this rank's consumed batches"


def _run(args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "scenedecomp.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600, **kwargs)


def test_two_process_ddp_run_equals_single_process_evaluation(tmp_path):
    # 16 validation images in batches of 5 on 2 ranks: shards of 8 (5 + 3), so an average of batch or rank
    # averages would differ from the per-image mean
    result = _run(["train", "--config", "monet-demo", "--quiet", f"out_dir={tmp_path}", "name=ddp", *TINY,
                   "trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.num_threads=1",
                   "trainer.precision=32-true", "data.eval_batch_size=5", "trainer.val_batches=null",
                   f"data.options.cache_dir={tmp_path / 'cache'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "ddp"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_steps"] == 4
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history] == [2, 4], "one history row per validation, from rank 0 only"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4

    single = _run(["evaluate", str(run), "--split", "val", "--json", "--quiet"])
    assert single.returncode == 0, single.stderr[-3000:]
    reference = json.loads(single.stdout)
    assert reference["num_images"] == 16
    for key in ("mse", "ari", "fg_ari", "msc", "sc"):
        assert history[-1][key] == pytest.approx(reference[key], rel=1e-5, abs=1e-6), key
