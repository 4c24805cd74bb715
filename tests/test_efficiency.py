"""The efficiency benchmark on tiny settings: numbers, ratios and output files."""

from __future__ import annotations

import argparse
import json

import pytest

from scenedecomp.bench.efficiency import add_efficiency_parser, run_efficiency


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


def test_efficiency_subcommand_parses():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_efficiency_parser(sub)
    args = parser.parse_args(["efficiency", "--slots", "3,7", "--image-size", "32", "--models", "monet,rn50"])
    assert args.slots == [3, 7] and args.image_size == 32 and args.models == ["monet", "rn50"]
    assert callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["efficiency", "--models", "monet,unknown"])
