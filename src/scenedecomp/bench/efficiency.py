"""Efficiency of MONet's recurrent attention vs the one-pass MONet-RN50 / RN50* attention, as K grows.

``scenedecomp benchmark efficiency [--slots 3,5,7,11,14,18] [--image-size 64] [--batch-size 8] ...``
(or ``python benchmarks/efficiency.py ...``) measures, for every model and every K, the FLOPs of one
forward pass per image, the parameters, the training-step time and the peak memory of a training step
(:mod:`.efficiency_measure` says how each is measured; :mod:`.efficiency_report` summarises them).

Outputs in ``out_dir``: ``efficiency.json`` (all numbers, the environment and a ``summary`` with the
targets from the thesis' claims), ``efficiency.png`` (two panels like the thesis' Figure 5.12: attention
FLOPs vs K and step time vs K) and ``efficiency.md`` (tables like the thesis' Table 5.5).

Models (``--models``): ``monet`` (the paper's U-Net, channels (32,32,64,64,64), 6 blocks
(32,32,32,64,64,64) at 128x128), ``monet_wide`` (the U-Net width the thesis' 13.9M attention parameters
correspond to: baudm's ngf=64 widths (64,128,256,512,512), plus a 512 block at 128x128), ``rn50``
(``attention.type=resnet``) and ``rn50star`` (``resnet_skip``); ``--backbone`` picks the ResNet depth of
the last two (resnet50 as in the thesis; resnet18 for a quick CPU run).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput
from ..safeio import MAX_BATCH_SIZE, MAX_IMAGE_SIZE, MAX_SLOTS, check_bound
from ..training.hardware import tune_malloc
from .efficiency_measure import (
    DEFAULT_MODELS,
    DEFAULT_SLOTS,
    MODELS,
    PRECISIONS,
    benchmark_slots,
    environment,
    resolve_bench_precision,
    resolve_device,
)
from .efficiency_report import THESIS, format_tables, plot_efficiency, summarize


def run_efficiency(slots: Sequence[int] = DEFAULT_SLOTS, image_size: int = 64, batch_size: int = 8,
                   models: Sequence[str] = DEFAULT_MODELS, repeats: int = 5,
                   out_dir: str | Path | None = "runs/benchmarks/efficiency", device: str | None = "auto", *,
                   backbone: str = "resnet50", warmup: int = 2, memory: bool = True, plot: bool = True,
                   precision: str = "fp32", malloc: bool = False,
                   log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the benchmark and write ``efficiency.json``/``.png``/``.md`` to ``out_dir`` (if given).

    ``precision``: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 where ``scenedecomp train`` would use
    it); ``malloc``: raise glibc's mmap/trim thresholds first, as ``scenedecomp train`` does.

    Returns the JSON-able result dict (``config``, ``environment``, ``results`` per (model, K),
    ``summary``, ``thesis``).
    """
    for m in models:
        if m not in MODELS:
            raise ValueError(f"unknown benchmark model {m!r}; expected some of {', '.join(MODELS)}")
    if image_size % 32:
        raise ValueError(f"--image-size must be a multiple of 32 (ResNet stride), got {image_size}")
    if repeats < 1 or batch_size < 1:
        raise ValueError("--repeats and --batch-size must be at least 1")
    if any(k < 2 for k in slots):
        raise ValueError(f"every K must be at least 2, got {list(slots)}")
    dev = resolve_device(device)
    precision = resolve_bench_precision(precision, dev)
    malloc_tuned = tune_malloc() if malloc else False
    slots = sorted(set(int(k) for k in slots))
    env = environment(dev)
    results = []
    started = time.time()
    for k in slots:  # K-major: all models at one K (timed steps interleaved), then the next K
        for r in benchmark_slots(models, k, image_size, batch_size, repeats, dev, backbone, warmup, memory,
                                 precision=precision):
            results.append(r)
            if log:
                mem = r.get("memory", {}).get("peak_bytes")
                mem_text = f", peak mem {mem / 2**20:.0f} MiB" if mem else ""
                log(f"K={k:2d} {r['label']:<22} attn {r['flops_per_image']['attention'] / 1e9:7.3f} GFLOPs, "
                    f"comp {r['flops_per_image']['component'] / 1e9:6.3f} GFLOPs, "
                    f"step {r['step_time_s']['median'] * 1e3:8.1f} ms{mem_text}")
    env["load_average_after"] = env.get("load_average") and os.getloadavg()
    report = {
        "config": {"slots": slots, "image_size": image_size, "batch_size": batch_size, "models": list(models),
                   "backbone": backbone, "repeats": repeats, "warmup": warmup, "optimizer": "RMSprop lr=1e-4",
                   "precision": precision, "malloc_tuned": malloc_tuned,
                   "wall_time_s": time.time() - started},
        "environment": env,
        "results": results,
        "summary": summarize(results, slots),
        "thesis": THESIS,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "efficiency.json").write_text(json.dumps(report, indent=2))
        (out / "efficiency.md").write_text(format_tables(report))
        if plot:
            plot_efficiency(report, out / "efficiency.png")
        if log:
            png = ", efficiency.png" if plot else ""
            log(f"wrote {out / 'efficiency.json'}, {out / 'efficiency.md'}{png}")
    return report


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _name_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in MODELS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(bad)}; expected some of {', '.join(MODELS)}"
        )
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slots", type=_int_list, default=list(DEFAULT_SLOTS),
                        help="comma-separated K values (default 3,5,7,11,14,18)")
    parser.add_argument("--image-size", type=int, default=64, help="square image side, multiple of 32")
    parser.add_argument("--batch-size", type=int, default=8, help="training batch (default 8; thesis: 64)")
    parser.add_argument("--models", type=_name_list, default=list(DEFAULT_MODELS),
                        help=f"comma-separated, from {', '.join(MODELS)} (default monet,rn50,rn50star)")
    parser.add_argument("--backbone", default="resnet50", choices=["resnet18", "resnet34", "resnet50"],
                        help="ResNet depth of rn50/rn50star (default resnet50, as in the thesis)")
    parser.add_argument("--repeats", type=int, default=5, help="timed training steps per config (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32, bf16 (autocast) or auto (bf16 where training would use it); default fp32")
    parser.add_argument("--tune-malloc", action="store_true",
                        help="raise glibc's mmap/trim thresholds first, as scenedecomp train does")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--out-dir", default="runs/benchmarks/efficiency", help="where the JSON/PNG/MD go")


def run_from_args(args: argparse.Namespace) -> int:
    """Handler for the parsed ``efficiency`` sub-command; returns an exit code."""
    check_bound("--batch-size", args.batch_size, 1, MAX_BATCH_SIZE)
    check_bound("--image-size", args.image_size, 8, MAX_IMAGE_SIZE)
    for k in args.slots:
        check_bound("--slots", k, 2, MAX_SLOTS)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = run_efficiency(args.slots, args.image_size, args.batch_size, args.models, args.repeats,
                                args.out_dir, args.device, backbone=args.backbone, warmup=args.warmup,
                                memory=not args.no_memory, plot=not args.no_plot, precision=args.precision,
                                malloc=args.tune_malloc)
    except ValueError as err:  # a bad choice of slots, sizes or models: one line on stderr, exit 2
        raise BadInput(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    summary = report["summary"]
    print(json.dumps({k: summary[k] for k in ("attention_flops_change", "step_time_ratio_vs_monet",
                                              "targets_met")}, indent=2))
    return 0


def add_efficiency_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``efficiency`` sub-command (``scenedecomp benchmark efficiency``) to ``subparsers``."""
    parser = subparsers.add_parser(
        "efficiency",
        help="FLOPs, parameters, step time and memory of MONet vs MONet-RN50/RN50* as K grows",
        description=__doc__.split("\n\n")[0],
    )
    add_arguments(parser)
    parser.set_defaults(func=run_from_args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python benchmarks/efficiency.py``)."""
    parser = argparse.ArgumentParser(prog="efficiency", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
