"""Training-step throughput of a model against the machine's fp32 matmul rate, measured in one run.

JSON fields: ``images_per_s`` (training, forward+backward+optimiser), ``flops_per_step`` (forward+backward,
``torch.utils.flop_counter``), ``achieved_gflops`` (flops_per_step / step time), ``matmul_gflops`` (a
large fp32 matmul on the same device and threads), and ``fraction_of_matmul_peak``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ..models import build_model
from ..training.config import load_config


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` fp32 GFLOP/s of a ``size x size`` matmul."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def step_flops(model: torch.nn.Module, images: torch.Tensor) -> int:
    """Forward+backward FLOPs of one training step."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(images).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def run_step_benchmark(preset: str | None = None, overrides: tuple[str, ...] = (), image_size: int = 64,
                       num_slots: int = 7, batch_size: int = 64, steps: int = 10, warmup: int = 2,
                       compile: bool = False, device: str = "auto", threads: int | None = None) -> dict:
    """Measure training throughput (paper MONet config by default: 64x64, K=7, batch 64)."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    cfg = load_config(preset, [f"model.num_slots={num_slots}", f"data.image_size={image_size}", *overrides])
    torch.manual_seed(0)
    model = build_model(cfg.model, 3, image_size).to(dev)
    images = torch.rand(batch_size, 3, image_size, image_size, device=dev)
    flops = step_flops(model, images)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=cfg.optim.lr)
    forward = torch.compile(model) if compile else model

    def step():
        optimizer.zero_grad(set_to_none=True)
        forward(images).loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    _sync(dev)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        _sync(dev)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    peak = matmul_gflops(dev)
    achieved = flops / median / 1e9
    return {
        "benchmark": "train_step",
        "model": cfg.model.name,
        "attention": cfg.model.attention.type,
        "preset": preset,
        "image_size": image_size,
        "num_slots": num_slots,
        "batch_size": batch_size,
        "compile": compile,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "steps_timed": steps,
        "step_seconds_median": round(median, 4),
        "step_seconds_all": [round(t, 4) for t in times],
        "images_per_s": round(batch_size / median, 2),
        "flops_per_step": flops,
        "achieved_gflops": round(achieved, 2),
        "matmul_gflops": round(peak, 2),
        "fraction_of_matmul_peak": round(achieved / peak, 4),
        "torch": torch.__version__,
    }


def add_step_parser(subparsers) -> None:
    p = subparsers.add_parser("step", help="training images/s and GFLOP/s vs the matmul peak", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="preset to start from (default: the paper MONet config)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--slots", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_cmd_step)


def _cmd_step(args) -> int:
    result = run_step_benchmark(args.config, tuple(args.overrides), args.image_size, args.slots, args.batch_size,
                                args.steps, compile=args.compile, device=args.device, threads=args.threads)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from pathlib import Path

        from ..training.run import write_json

        write_json(Path(args.out), result)
    return 0
