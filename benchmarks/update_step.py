"""The per-step work outside forward and backward, which grows with the parameter count: the Adam update
(per-tensor loop or the fused kernel), gradient clipping, the divergence guard's finiteness check (tensor by
tensor or one fused norm) and the weight average's update (tensor by tensor or one foreach lerp).
Milliseconds per step, measured in one process on the same threads, variants interleaved; ``before_ms`` /
``after_ms`` sum the per-tensor and the fused/foreach forms with the clipping. JSON out.

    python benchmarks/update_step.py --threads 1 --out benchmarks/results/update_step_1thread.json \
        monet-demo monet-rn18star-sprites64-cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from scenedecomp.config import load_config
from scenedecomp.models import build_model
from scenedecomp.safeio import atomic_write_text
from scenedecomp.training.callbacks import ema_multi_avg_fn


def _variants(params: list[torch.nn.Parameter], module: torch.nn.Module) -> dict:
    """name -> a callable doing that piece of one training step's update on ``params``' gradients."""
    single = torch.optim.Adam(params, lr=1e-4, foreach=False)
    fused = torch.optim.Adam(params, lr=1e-4, fused=True)
    per_tensor = AveragedModel(module, avg_fn=get_ema_avg_fn(0.999), use_buffers=True)
    foreach = AveragedModel(module, multi_avg_fn=ema_multi_avg_fn(0.999), use_buffers=True)
    grads = [p.grad for p in params]
    return {
        "adam_per_tensor": single.step,
        "adam_fused": fused.step,
        "clip_grad_norm": lambda: torch.nn.utils.clip_grad_norm_(params, 1e9),
        "finite_check_per_tensor": lambda: [bool(torch.isfinite(g).all()) for g in grads],
        "finite_check_total_norm": lambda: bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))),
        "weight_average_per_tensor": lambda: per_tensor.update_parameters(module),
        "weight_average_foreach": lambda: foreach.update_parameters(module),
    }


def measure(preset: str, repeats: int) -> dict:
    cfg = load_config(preset)
    torch.manual_seed(0)
    model = build_model(cfg.model, 3, cfg.data.image_size)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    fns = _variants(params, model)
    for fn in fns.values():  # allocate the optimiser states and warm up
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    ms = {name: round(statistics.median(t), 2) for name, t in times.items()}
    return {"parameters": sum(p.numel() for p in params), "parameter_tensors": len(params), "ms_median": ms,
            "adam_fused_speedup": round(ms["adam_per_tensor"] / ms["adam_fused"], 2),
            "finite_check_speedup": round(ms["finite_check_per_tensor"] / ms["finite_check_total_norm"], 2),
            "weight_average_speedup": round(ms["weight_average_per_tensor"] / ms["weight_average_foreach"], 2),
            "before_ms": round(ms["adam_per_tensor"] + ms["finite_check_per_tensor"] + ms["weight_average_per_tensor"]
                               + ms["clip_grad_norm"], 2),
            "after_ms": round(ms["adam_fused"] + ms["finite_check_total_norm"] + ms["weight_average_foreach"]
                              + ms["clip_grad_norm"], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="+")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
              "presets": {preset: measure(preset, args.repeats) for preset in args.presets}}
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
