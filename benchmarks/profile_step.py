"""Where a training step's CPU time goes: torch.profiler over a few bf16 steps of a preset's model.

Prints the step time, the self-CPU time grouped into kinds of op (convolutions forward / backward,
matrix products, pooling and resizing, normalisation, elementwise and copies, the rest) and the
top ops. Same step as ``scenedecomp benchmark step``'s ``bf16-tuned`` variant (random batch, Adam).

    python benchmarks/profile_step.py --config monet-demo --image-size 32 --batch-size 32 [key=value ...]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from scenedecomp.bench.monet_step import build_training_step
from scenedecomp.hardware import tune_malloc

KINDS = {  # first matching substring of the aten op name wins
    "convolution backward": ("convolution_backward",),
    "convolution forward": ("mkldnn_convolution", "convolution"),
    "matrix products": ("addmm", "aten::mm", "bmm", "linear"),
    "pooling / resize": ("pool", "upsample"),
    "normalisation": ("batch_norm", "instance_norm", "layer_norm"),
    "elementwise / copies": ("threshold", "relu", "clamp", "copy", "fill", "add", "mul", "sub", "div", "exp",
                             "log", "sigmoid", "sum", "mean", "cat", "stack", "where", "neg", "sqrt", "pow",
                             "clone", "contiguous", "to_copy"),
}


def kind_of(name: str) -> str:
    for kind, needles in KINDS.items():
        if any(n in name for n in needles):
            return kind
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="monet-demo")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    tune_malloc()
    torch.set_num_threads(args.threads)
    _, _, step = build_training_step(args.config, args.overrides, args.image_size, args.batch_size,
                                     torch.device("cpu"), bf16=True)

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    print(f"step {(time.perf_counter() - start) / args.steps * 1e3:.1f} ms ({args.threads} thread(s), bf16)")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    by_kind: dict[str, float] = defaultdict(float)
    for e in events:
        by_kind[kind_of(e.key)] += e.self_cpu_time_total
    print("| kind of op | share of aten self-CPU time |\n|---|---|")
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {100 * t / total:.1f} % |")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
