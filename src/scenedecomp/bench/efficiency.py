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

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..hardware import tune_malloc
from .efficiency_measure import (
    DEFAULT_MODELS,
    DEFAULT_SLOTS,
    MODELS,
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
        raise ValueError(f"image_size must be a multiple of 32 (ResNet stride), got {image_size}")
    if repeats < 1 or batch_size < 1:
        raise ValueError(f"repeats and batch_size must be at least 1, got {repeats} and {batch_size}")
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


