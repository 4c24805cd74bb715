"""Training-step throughput of a model (any model a preset names: MONet, AIR, Slot Attention), in several
execution settings side by side, in one run.

Each *variant* is measured in a fresh Python subprocess (the allocator setting cannot be undone inside
a process, and a compiled model should not share caches with an eager one):

========== ========= ======= ================ ===============
variant    precision compile decoder layout   glibc malloc
========== ========= ======= ================ ===============
fp32       fp32      no      default (NCHW)   default
fp32-tuned fp32      no      channels-last    tuned thresholds
bf16       bf16      no      channels-last    default
bf16-tuned bf16      no      channels-last    tuned thresholds
compiled   bf16      yes     channels-last    tuned thresholds
========== ========= ======= ================ ===============

``fp32`` is the training step as it was before the speed work (with ``--baseline-overrides`` also the
model settings it had, e.g. ``model.component.decoder_channels=32`` for the old demo preset);
``bf16-tuned`` is what ``scenedecomp train`` does by default on a CPU with AMX/AVX512-BF16. A step is
forward + backward + Adam update of the preset's model on a fixed random batch (bf16 variants under
``torch.autocast``). Per variant the
JSON has ``images_per_s``, ``step_seconds_median`` and ``achieved_gflops`` (forward+backward FLOPs from
``torch.utils.flop_counter`` divided by the step time); compiled variants add ``compile_seconds`` (the
first step, with the inductor cache as found) for a cold and a warm cache. The parent measures the
fp32 and bf16 matmul peaks on the same threads, so ``fraction_of_bf16_peak`` and ``speedup`` (images/s
over the ``fp32`` variant) are ratios taken in one run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

VARIANTS = {
    "fp32": {"precision": "fp32", "compile": False, "channels_last": False, "malloc": False},
    "fp32-tuned": {"precision": "fp32", "compile": False, "channels_last": True, "malloc": True},
    "bf16": {"precision": "bf16", "compile": False, "channels_last": True, "malloc": False},
    "bf16-tuned": {"precision": "bf16", "compile": False, "channels_last": True, "malloc": True},
    "compiled": {"precision": "bf16", "compile": True, "channels_last": True, "malloc": True},
}
DEFAULT_VARIANTS = ("fp32", "fp32-tuned", "bf16", "bf16-tuned")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 5,
                  dtype: torch.dtype = torch.float32) -> float:
    """Best-of-``repeats`` GFLOP/s of a ``size x size`` matmul in ``dtype``."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
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
    """Forward+backward FLOPs of one training step (counted in fp32; the same count in bf16)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(images).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def build_training_step(preset: str | None, overrides: list[str] | tuple[str, ...], image_size: int,
                        batch_size: int, device: torch.device, bf16: bool):
    """The benchmarked training step: the preset's model (seed 0), a fixed random batch
    ``[batch_size,3,image_size,image_size]`` and Adam (lr 1e-4); the forward under bf16 autocast if ``bf16``.

    Returns ``(model, images, step)`` where ``step()`` runs forward + backward + update once (compiling
    ``model`` in place afterwards makes ``step`` use the compiled forward).
    """
    from ..config import load_config
    from ..models import build_model

    cfg = load_config(preset, [f"data.image_size={image_size}", *overrides])
    torch.manual_seed(0)
    model = build_model(cfg.model, 3, image_size).to(device)
    images = torch.rand(batch_size, 3, image_size, image_size, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(images)
        out.loss.backward()
        optimizer.step()

    return model, images, step


def channels_last_key(preset: str | None, overrides: tuple[str, ...] | list[str]) -> str:
    """The config key of the model's decoder memory layout (MONet's component decoder or Slot Attention's)."""
    from ..config import load_config

    name = load_config(preset, list(overrides)).model.name
    return "model.slot_attention.channels_last" if name == "slot_attention" else "model.component.channels_last"


def measure_variant(variant: str, preset: str | None, overrides: tuple[str, ...], image_size: int, num_slots: int,
                    batch_size: int, steps: int, warmup: int, device: str, threads: int | None) -> dict:
    """Time one variant in this process (call it in a fresh process: it may tune malloc)."""
    from ..hardware import tune_malloc

    spec = VARIANTS[variant]
    malloc_ok = tune_malloc() if spec["malloc"] else False
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    layout = f"{channels_last_key(preset, overrides)}={spec['channels_last']}"
    model, images, step = build_training_step(preset, [f"model.num_slots={num_slots}", layout, *overrides],
                                              image_size, batch_size, dev, spec["precision"] == "bf16")
    flops = step_flops(model, images)
    if spec["compile"]:
        model.compile()  # in place: ``step`` calls the compiled forward

    start = time.perf_counter()
    step()
    _sync(dev)
    first = time.perf_counter() - start
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
    result = {**spec, "variant": variant, "malloc_tuned": malloc_ok, "first_step_seconds": round(first, 2),
              "step_seconds_median": round(median, 4), "step_seconds_all": [round(t, 4) for t in times],
              "images_per_s": round(batch_size / median, 2), "flops_per_step": flops,
              "achieved_gflops": round(flops / median / 1e9, 2)}
    return result


def _run_child(variant: str, args: dict, env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "scenedecomp.bench.monet_step", "--child", variant, json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"benchmark variant {variant} failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_step_benchmark(preset: str | None = None, overrides: tuple[str, ...] = (), image_size: int = 64,
                       num_slots: int = 7, batch_size: int = 64, steps: int = 10, warmup: int = 2,
                       variants: tuple[str, ...] = DEFAULT_VARIANTS, device: str = "auto",
                       threads: int | None = None, baseline_overrides: tuple[str, ...] = ()) -> dict:
    """Measure every variant in its own process; return one JSON-able dict (paper config by default)."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    args = {"preset": preset, "overrides": list(overrides), "image_size": image_size, "num_slots": num_slots,
            "batch_size": batch_size, "steps": steps, "warmup": warmup, "device": str(dev),
            "threads": torch.get_num_threads()}
    results = []
    for variant in variants:
        if VARIANTS[variant]["compile"]:
            with tempfile.TemporaryDirectory() as cache:  # first a cold inductor cache, then warm
                env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
                cold = _run_child(variant, args, env)
                warm = _run_child(variant, args, env)
            warm.update(compile_seconds_cold=cold["first_step_seconds"],
                        compile_seconds_warm=warm["first_step_seconds"])
            results.append(warm)
        elif variant == "fp32" and baseline_overrides:
            results.append({**_run_child(variant, {**args, "overrides": [*overrides, *baseline_overrides]}),
                            "baseline_overrides": list(baseline_overrides)})
        else:
            results.append(_run_child(variant, args))
    fp32_peak = matmul_gflops(dev)
    bf16_peak = matmul_gflops(dev, dtype=torch.bfloat16)
    base = next((r["images_per_s"] for r in results if r["variant"] == "fp32"), None)
    for r in results:
        r["fraction_of_bf16_peak"] = round(r["achieved_gflops"] / bf16_peak, 4)
        r["fraction_of_fp32_peak"] = round(r["achieved_gflops"] / fp32_peak, 4)
        if base:
            r["speedup"] = round(r["images_per_s"] / base, 2)
    return {"benchmark": "train_step", "preset": preset, "overrides": list(overrides),
            "baseline_overrides": list(baseline_overrides), "image_size": image_size,
            "num_slots": num_slots, "batch_size": batch_size, "device": str(dev), "threads": args["threads"],
            "steps_timed": steps, "matmul_gflops_fp32": round(fp32_peak, 1), "matmul_gflops_bf16": round(bf16_peak, 1),
            "torch": torch.__version__, "variants": results}


def format_table(result: dict) -> str:
    """A plain-text table of the variants."""
    baseline = f" (fp32 row with {' '.join(result['baseline_overrides'])})" if result.get("baseline_overrides") else ""
    lines = [f"{result['preset'] or 'paper MONet'}{baseline}: {result['image_size']}x{result['image_size']}, "
             f"K={result['num_slots']}, batch {result['batch_size']}, {result['threads']} threads on "
             f"{result['device']}; matmul peak fp32 {result['matmul_gflops_fp32']} / bf16 "
             f"{result['matmul_gflops_bf16']} GFLOP/s",
             f"{'variant':11s} {'step s':>7s} {'img/s':>8s} {'speedup':>7s} {'GFLOP/s':>8s} {'%bf16pk':>7s}"
             f" {'compile s (cold/warm)':>21s}"]
    for r in result["variants"]:
        compile_s = (f"{r['compile_seconds_cold']:.0f} / {r['compile_seconds_warm']:.0f}"
                     if "compile_seconds_cold" in r else "-")
        lines.append(f"{r['variant']:11s} {r['step_seconds_median']:7.3f} {r['images_per_s']:8.1f} "
                     f"{r.get('speedup', float('nan')):7.2f} {r['achieved_gflops']:8.1f} "
                     f"{100 * r['fraction_of_bf16_peak']:6.1f}% {compile_s:>21s}")
    return "\n".join(lines)


if __name__ == "__main__":  # a child process measuring one variant
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        options = json.loads(sys.argv[3])
        print(json.dumps(measure_variant(sys.argv[2], options["preset"], tuple(options["overrides"]),
                                         options["image_size"], options["num_slots"], options["batch_size"],
                                         options["steps"], options["warmup"], options["device"],
                                         options["threads"])))
