"""The efficiency benchmark on tiny settings: numbers, ratios and output files."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from scenedecomp.bench.efficiency import run_efficiency
from scenedecomp.bench.efficiency_measure import _Entry, resolve_bench_precision
from scenedecomp.cli.benchmark import add_efficiency_parser
from scenedecomp.hardware import cpu_has_fast_bf16


def test_run_efficiency_tiny(tmp_path):
    report = run_efficiency([2, 4], image_size=32, batch_size=2, models=["monet", "rn50star"], repeats=1,
                            out_dir=tmp_path, device="cpu", backbone="resnet18", warmup=0, log=None)
    for name in ("efficiency.json", "efficiency.md", "efficiency.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "efficiency.json").read_text())
    assert len(saved["results"]) == 4
    by = {(r["model"], r["num_slots"]): r for r in report["results"]}
    # MONet's attention runs K-1 U-Net passes: FLOPs exactly proportional to K-1
    monet = [by["monet", k]["flops_per_image"]["attention"] for k in (2, 4)]
    assert monet[1] == 3 * monet[0]
    # one-pass attention: only the 1x1 head grows with K
    rn = [by["rn50star", k]["flops_per_image"]["attention"] for k in (2, 4)]
    assert 0 < (rn[1] - rn[0]) / rn[0] < 0.01
    # the component VAE is the same module in both and scales with K
    assert by["monet", 4]["flops_per_image"]["component"] == by["rn50star", 4]["flops_per_image"]["component"]
    for r in report["results"]:
        assert r["params"]["total"] == r["params"]["attention"] + r["params"]["component"]
        assert r["step_time_s"]["median"] > 0
        assert r["memory"]["peak_bytes"] > r["memory"]["static_bytes"] > 0
    summary = report["summary"]
    assert summary["attention_flops_linear_fit"]["monet"]["max_rel_residual"] < 1e-6
    assert set(summary["step_time_ratio_vs_monet"]["rn50star/monet"]) == {"2", "4"}


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_step_runs_in_the_requested_precision(precision, dtype):
    entry = _Entry("monet", 3, 32, 2, torch.device("cpu"), "resnet18", 0, precision)
    seen = []
    entry.model.attention.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    conv = next(m for m in entry.model.attention.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    entry.step()
    assert seen[0] == dtype  # the first U-Net conv: bf16 under autocast
    assert seen[-1] == torch.float32  # the log masks are accumulated in fp32 either way


def test_precision_is_resolved_and_recorded(tmp_path):
    report = run_efficiency([2], image_size=32, batch_size=2, models=["monet"], repeats=1, out_dir=tmp_path,
                            device="cpu", warmup=0, memory=False, plot=False, precision="bf16", malloc=True,
                            log=None)
    assert report["config"]["precision"] == "bf16"
    assert "bf16" in (tmp_path / "efficiency.md").read_text().splitlines()[0]
    auto = resolve_bench_precision("auto", torch.device("cpu"))
    assert auto == ("bf16" if cpu_has_fast_bf16() else "fp32")
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_bench_precision("fp8", torch.device("cpu"))


def test_efficiency_subcommand_parses():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_efficiency_parser(sub)
    args = parser.parse_args(["efficiency", "--slots", "3,7", "--image-size", "32", "--models", "monet,rn50"])
    assert args.slots == [3, 7] and args.image_size == 32 and args.models == ["monet", "rn50"]
    assert callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["efficiency", "--models", "monet,unknown"])
