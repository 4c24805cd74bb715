"""Efficiency of MONet's recurrent attention vs the one-pass MONet-RN50 / RN50* attention, as K grows.

``scenedecomp benchmark efficiency [--slots 3,5,7,11,14,18] [--image-size 64] [--batch-size 8] ...``
(or ``python benchmarks/efficiency.py ...``) measures, for every model and every K:

- **FLOPs** of one forward pass per image (batch of 1, eval mode, no grad), counted with
  :class:`torch.utils.flop_counter.FlopCounterMode` separately for the attention module
  (``model.attention(image, K)``) and the component module (``component.encode`` on the K
  ``[image, log mask]`` inputs plus ``component.decode``). The counter counts matrix products and
  convolutions (2 FLOPs per multiply-add); elementwise ops, norms and the loss are not counted.
- **Parameters**: attention, component and total.
- **Training-step time**: one full MONet step (forward, loss, backward, RMSprop step) on the same random
  batch, ``warmup`` untimed steps, then the median (and min / all) of ``repeats`` timed steps
  (``torch.cuda.synchronize`` around each on a GPU). All models for one K are built together and their
  timed steps interleaved (one step of each model per round), so load from other processes on a shared
  machine hits all models alike and the ratios stay meaningful; report the median.
- **Peak memory of a training step**. On CUDA: ``torch.cuda.max_memory_allocated`` over one step after
  ``reset_peak_memory_stats`` (tensor memory, as the thesis' GPU numbers). On CPU, where PyTorch keeps no
  allocator statistics: one extra step runs under ``torch.profiler`` with ``profile_memory=True``; its
  allocation/free events through PyTorch's CPU allocator are replayed in time order, and the peak of
  the running sum is added to the bytes alive at the start of the step (parameters, buffers, optimiser
  state and the batch, summed over unique storages; the previous step's gradients are released first,
  because the profiler cannot size the free of a block allocated before it started). This is the CPU
  analogue of ``max_memory_allocated``: tensor memory only, no allocator caching, no scratch memory
  that oneDNN allocates outside PyTorch's allocator, no Python/library overhead.

Outputs in ``out_dir``: ``efficiency.json`` (all numbers, the environment and a ``summary`` with the
issue's targets), ``efficiency.png`` (two panels like the thesis' Figure 5.12: attention FLOPs vs K and
step time vs K) and ``efficiency.md`` (tables like the thesis' Table 5.5).

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
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..models import build_model
from ..training.config import load_config

MODELS = ("monet", "monet_wide", "rn50", "rn50star")
DEFAULT_MODELS = ("monet", "rn50", "rn50star")
DEFAULT_SLOTS = (3, 5, 7, 11, 14, 18)

# Thesis (2022) reference numbers, for the report.
THESIS = {
    "attention_params_millions": {"monet": 13.9, "rn50": 54.0, "rn50star": 55.8},
    "train_memory_batch1_gb": {"monet": 3.80, "rn50": 4.17, "rn50star": 2.59},
    "epoch_time_saving_rn50star_vs_monet": {"7": 0.30, "18": 0.60},
}
TARGETS = {
    "rn50star_attention_flops_change_max": 0.05,  # K=7 -> K=18
    "step_time_ratio_rn50star_monet_max": {"7": 0.7, "18": 0.4},
}


def model_overrides(model: str, image_size: int, backbone: str = "resnet50") -> list[str]:
    """Config overrides that select benchmark model ``model`` at ``image_size``."""
    deep = image_size >= 128  # 6 U-Net blocks at 128x128 (CLEVR), 5 at 64x64
    if model == "monet":
        channels = [32, 32, 32, 64, 64, 64] if deep else [32, 32, 64, 64, 64]
        return ["model.attention.type=unet_recurrent", f"model.attention.channels={channels}"]
    if model == "monet_wide":
        channels = [64, 128, 256, 512, 512, 512] if deep else [64, 128, 256, 512, 512]
        return ["model.attention.type=unet_recurrent", f"model.attention.channels={channels}"]
    if model in ("rn50", "rn50star"):
        kind = "resnet" if model == "rn50" else "resnet_skip"
        return [f"model.attention.type={kind}", f"model.attention.backbone={backbone}"]
    raise ValueError(f"unknown benchmark model {model!r}; expected one of {', '.join(MODELS)}")


def model_label(model: str, backbone: str = "resnet50") -> str:
    depth = backbone.removeprefix("resnet")
    return {
        "monet": "MONet",
        "monet_wide": "MONet (ngf=64 U-Net)",
        "rn50": f"MONet-RN{depth}",
        "rn50star": f"MONet-RN{depth}*",
    }[model]


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(fn: Callable[[], Any]) -> int:
    """Forward FLOPs of ``fn()`` (matmuls and convolutions, 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@torch.no_grad()
def module_flops(model: nn.Module, image: Tensor, num_slots: int) -> dict[str, int]:
    """Per-image forward FLOPs of ``model.attention`` and ``model.component`` (batch of 1, eval mode)."""
    was_training = model.training
    model.eval()
    try:
        image = image[:1]
        _, c, h, w = image.shape
        attention_flops = count_flops(lambda: model.attention(image, num_slots))
        log_masks = model.attention(image, num_slots)
        k = log_masks.shape[1]
        flat_image = image.expand(k, c, h, w)
        flat_masks = log_masks.reshape(k, 1, h, w)

        def component() -> None:
            mean, _ = model.component.encode(flat_image, flat_masks)
            model.component.decode(mean)

        component_flops = count_flops(component)
        total_flops = count_flops(lambda: model(image, num_slots))
    finally:
        model.train(was_training)
    return {"attention": attention_flops, "component": component_flops, "model": total_flops}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _alive_bytes(tensors: list[Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _static_tensors(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Tensor) -> list[Tensor]:
    tensors = [batch, *model.parameters(), *model.buffers()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    for state in optimizer.state.values():
        tensors += [v for v in state.values() if torch.is_tensor(v)]
    return tensors


def cpu_step_peak_memory(step: Callable[[], None], model: nn.Module, optimizer: torch.optim.Optimizer,
                         batch: Tensor) -> dict[str, int]:
    """Peak tensor bytes during ``step()`` on CPU: alive-at-start + peak of the profiler's alloc/free sum.

    The profiler reports the free of a block allocated before profiling started without its size, so
    such frees would be missed; the previous step's gradients (the only such tensors a step frees) are
    therefore released before the snapshot, and ``step()`` starts with no gradients, as it would anyway
    after its own ``zero_grad(set_to_none=True)``.
    """
    from torch.profiler import ProfilerActivity, profile

    optimizer.zero_grad(set_to_none=True)
    model.zero_grad(set_to_none=True)
    static = _alive_bytes(_static_tensors(model, optimizer, batch))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for event in events:
        if event.device_type() != torch.autograd.DeviceType.CPU:
            continue
        running += event.nbytes()
        peak = max(peak, running)
    return {"peak_bytes": static + peak, "static_bytes": static, "step_peak_delta_bytes": peak}


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _Entry:
    """One model built for one K, with its batch, optimiser and training step."""

    def __init__(self, model_name: str, num_slots: int, image_size: int, batch_size: int,
                 device: torch.device, backbone: str, seed: int):
        overrides = model_overrides(model_name, image_size, backbone) + [
            f"model.num_slots={num_slots}", f"data.image_size={image_size}", f"data.batch_size={batch_size}",
        ]
        self.cfg = load_config(None, overrides)
        self.name = model_name
        self.num_slots = num_slots
        torch.manual_seed(seed)
        self.model = build_model(self.cfg.model, 3, image_size).to(device)
        generator = torch.Generator().manual_seed(seed)
        self.batch = torch.rand(batch_size, 3, image_size, image_size, generator=generator).to(device)
        self.optimizer = torch.optim.RMSprop(self.model.parameters(), lr=1e-4)
        self.device = device
        self.times: list[float] = []

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(self.batch, self.num_slots)
        out.loss.backward()
        self.optimizer.step()

    def timed_step(self) -> None:
        _sync(self.device)
        start = time.perf_counter()
        self.step()
        _sync(self.device)
        self.times.append(time.perf_counter() - start)

    def memory(self) -> dict[str, Any]:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.step()
            _sync(self.device)
            return {"peak_bytes": int(torch.cuda.max_memory_allocated(self.device)),
                    "method": "torch.cuda.max_memory_allocated over one training step"}
        try:
            mem: dict[str, Any] = cpu_step_peak_memory(self.step, self.model, self.optimizer, self.batch)
            mem["method"] = "torch.profiler CPU allocator events over one training step + alive tensors"
        except Exception as err:  # profiler internals changed: report, do not fail the benchmark
            mem = {"peak_bytes": None, "method": f"unavailable ({type(err).__name__}: {err})"}
        return mem


def benchmark_slots(model_names: Sequence[str], num_slots: int, image_size: int, batch_size: int,
                    repeats: int, device: torch.device, backbone: str = "resnet50", warmup: int = 2,
                    memory: bool = True, seed: int = 0) -> list[dict[str, Any]]:
    """All measurements for every model at one K.

    The timed steps are interleaved (one step of each model per round, ``repeats`` rounds) so that load
    from other processes on a shared machine affects all models alike and their ratio stays meaningful.
    """
    entries = [_Entry(m, num_slots, image_size, batch_size, device, backbone, seed) for m in model_names]
    results = []
    for e in entries:
        results.append({
            "model": e.name,
            "label": model_label(e.name, backbone),
            "num_slots": num_slots,
            "attention_type": e.cfg.model.attention.type,
            "params": {
                "attention": count_params(e.model.attention),
                "component": count_params(e.model.component),
                "total": count_params(e.model),
            },
            "flops_per_image": module_flops(e.model, e.batch, num_slots),
        })
        e.model.train()
        for _ in range(warmup):
            e.step()
    for _ in range(repeats):
        for e in entries:
            e.timed_step()
    for e, r in zip(entries, results):
        r["step_time_s"] = {"median": statistics.median(e.times), "min": min(e.times), "all": e.times}
        if memory:
            r["memory"] = e.memory()
    return results


def _value(results: list[dict], model: str, k: int, getter: Callable[[dict], float]) -> float | None:
    for r in results:
        if r["model"] == model and r["num_slots"] == k:
            return getter(r)
    return None


def summarize(results: list[dict], slots: Sequence[int]) -> dict[str, Any]:
    """Ratios the issue targets: FLOP flatness/linearity in K and step-time ratios vs MONet."""
    slots = sorted(slots)
    k_lo = 7 if 7 in slots else slots[0]
    k_hi = 18 if 18 in slots else slots[-1]
    models = sorted({r["model"] for r in results}, key=MODELS.index)
    summary: dict[str, Any] = {"k_lo": k_lo, "k_hi": k_hi, "attention_flops_change": {},
                               "attention_flops_linear_fit": {}, "step_time_ratio_vs_monet": {},
                               "step_time_ratio_vs_monet_min": {}}

    def attn(r: dict) -> float:
        return r["flops_per_image"]["attention"]

    def step(r: dict) -> float:
        return r["step_time_s"]["median"]

    def step_min(r: dict) -> float:
        return r["step_time_s"]["min"]

    for m in models:
        lo, hi = _value(results, m, k_lo, attn), _value(results, m, k_hi, attn)
        if lo and hi:
            summary["attention_flops_change"][m] = (hi - lo) / lo
        ks = [k for k in slots if _value(results, m, k, attn) is not None]
        if len(ks) >= 2:
            ys = [_value(results, m, k, attn) for k in ks]
            k_mean, y_mean = sum(ks) / len(ks), sum(ys) / len(ys)
            var = sum((k - k_mean) ** 2 for k in ks)
            slope = sum((k - k_mean) * (y - y_mean) for k, y in zip(ks, ys)) / var
            intercept = y_mean - slope * k_mean
            resid = max(abs(y - (intercept + slope * k)) / y for k, y in zip(ks, ys))
            summary["attention_flops_linear_fit"][m] = {
                "gflops_per_slot": slope / 1e9,
                "gflops_intercept": intercept / 1e9,
                "max_rel_residual": resid,
            }
    for base in ("monet", "monet_wide"):
        if base not in models:
            continue
        for m in models:
            if m == base:
                continue
            for key, getter in (("step_time_ratio_vs_monet", step),
                                ("step_time_ratio_vs_monet_min", step_min)):
                ratios = {}
                for k in slots:
                    num, den = _value(results, m, k, getter), _value(results, base, k, getter)
                    if num is not None and den:
                        ratios[str(k)] = num / den
                summary[key][f"{m}/{base}"] = ratios

    checks: dict[str, Any] = {}
    change = summary["attention_flops_change"].get("rn50star")
    if change is not None and (k_lo, k_hi) == (7, 18):
        checks["rn50star_attention_flops_change_le_5pct"] = abs(change) <= TARGETS[
            "rn50star_attention_flops_change_max"]
    fit = summary["attention_flops_linear_fit"].get("monet")
    if fit is not None:
        checks["monet_attention_flops_linear_in_K"] = fit["max_rel_residual"] < 0.01
    for base in ("monet", "monet_wide"):
        for k, limit in TARGETS["step_time_ratio_rn50star_monet_max"].items():
            ratio = summary["step_time_ratio_vs_monet"].get(f"rn50star/{base}", {}).get(k)
            if ratio is not None:
                checks[f"step_time_rn50star_over_{base}_le_{limit}_at_K{k}"] = ratio <= limit
    summary["targets_met"] = checks
    return summary


def _environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    try:
        env["load_average"] = os.getloadavg()
    except OSError:
        pass
    return env


def run_efficiency(slots: Sequence[int] = DEFAULT_SLOTS, image_size: int = 64, batch_size: int = 8,
                   models: Sequence[str] = DEFAULT_MODELS, repeats: int = 5,
                   out_dir: str | Path | None = "runs/benchmarks/efficiency", device: str | None = "auto", *,
                   backbone: str = "resnet50", warmup: int = 2, memory: bool = True, plot: bool = True,
                   log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the benchmark and write ``efficiency.json``/``.png``/``.md`` to ``out_dir`` (if given).

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
    dev = _resolve_device(device)
    slots = sorted(set(int(k) for k in slots))
    env = _environment(dev)
    results = []
    started = time.time()
    for k in slots:  # K-major: all models at one K (timed steps interleaved), then the next K
        for r in benchmark_slots(models, k, image_size, batch_size, repeats, dev, backbone, warmup, memory):
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


def plot_efficiency(report: dict[str, Any], path: str | Path) -> None:
    """Two panels like the thesis' Figure 5.12: attention FLOPs vs K, training-step time vs K."""
    from matplotlib.figure import Figure

    results = report["results"]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_flops, ax_time = fig.subplots(1, 2)
    for m in report["config"]["models"]:
        rows = sorted((r for r in results if r["model"] == m), key=lambda r: r["num_slots"])
        ks = [r["num_slots"] for r in rows]
        label = rows[0]["label"] if rows else m
        ax_flops.plot(ks, [r["flops_per_image"]["attention"] / 1e9 for r in rows], marker="o", label=label)
        ax_time.plot(ks, [r["step_time_s"]["median"] * 1e3 for r in rows], marker="o", label=label)
    first = report["config"]["models"][0]
    comp = sorted((r for r in results if r["model"] == first), key=lambda r: r["num_slots"])
    ax_flops.plot([r["num_slots"] for r in comp], [r["flops_per_image"]["component"] / 1e9 for r in comp],
                  color="gray", linestyle="--", label="component VAE (all models)")
    cfg = report["config"]
    ax_flops.set(xlabel="K (slots)", ylabel="GFLOPs per image (forward)", title="Attention FLOPs vs K")
    device = report["environment"]["device"]
    ax_time.set(xlabel="K (slots)", ylabel="ms per training step (median)",
                title=f"Training-step time vs K (batch {cfg['batch_size']}, {device})")
    for ax in (ax_flops, ax_time):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Efficiency at {cfg['image_size']}x{cfg['image_size']}")
    fig.savefig(path, dpi=120)


def _memory_cell(r: dict[str, Any]) -> str:
    peak = r.get("memory", {}).get("peak_bytes")
    return "-" if not peak else f"{peak / 2**20:.0f}"


def format_tables(report: dict[str, Any]) -> str:
    """Markdown tables like the thesis' Table 5.5 plus per-K FLOPs and step times."""
    cfg, results, summary = report["config"], report["results"], report["summary"]
    models = cfg["models"]
    k_ref = summary["k_lo"]
    thesis_params = THESIS["attention_params_millions"]
    lines = [
        f"# Efficiency ({cfg['image_size']}x{cfg['image_size']}, batch {cfg['batch_size']}, "
        f"{report['environment']['device']}, median of {cfg['repeats']} steps)",
        "",
        f"## Models at K={k_ref}",
        "",
        "| model | attention params | thesis | component params | total params | attention GFLOPs | "
        "component GFLOPs | step time (ms) | peak memory (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        r = next((r for r in results if r["model"] == m and r["num_slots"] == k_ref), None)
        if r is None:
            continue
        p, f = r["params"], r["flops_per_image"]
        mem = r.get("memory", {}).get("peak_bytes")
        thesis = f"{thesis_params[m]:.1f}M" if m in thesis_params else "-"
        if m == "monet_wide":
            thesis = f"{thesis_params['monet']:.1f}M"
        lines.append(
            f"| {r['label']} | {p['attention'] / 1e6:.2f}M | {thesis} | {p['component'] / 1e6:.2f}M | "
            f"{p['total'] / 1e6:.2f}M | {f['attention'] / 1e9:.3f} | {f['component'] / 1e9:.3f} | "
            f"{r['step_time_s']['median'] * 1e3:.1f} | {'-' if mem is None else f'{mem / 2**20:.0f}'} |"
        )
    slots = cfg["slots"]
    header = "| model | " + " | ".join(f"K={k}" for k in slots) + " |"
    rule = "|---|" + "---|" * len(slots)
    for title, getter in (
        ("Attention GFLOPs per image", lambda r: f"{r['flops_per_image']['attention'] / 1e9:.3f}"),
        ("Component GFLOPs per image", lambda r: f"{r['flops_per_image']['component'] / 1e9:.3f}"),
        ("Training-step time (ms, median)", lambda r: f"{r['step_time_s']['median'] * 1e3:.1f}"),
        ("Training-step time (ms, fastest of the repeats)", lambda r: f"{r['step_time_s']['min'] * 1e3:.1f}"),
        ("Peak training memory (MiB)", _memory_cell),
    ):
        lines += ["", f"## {title}", "", header, rule]
        for m in models:
            cells = []
            for k in slots:
                r = next((r for r in results if r["model"] == m and r["num_slots"] == k), None)
                cells.append("-" if r is None else getter(r))
            label = next((r["label"] for r in results if r["model"] == m), m)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Summary", "", "```json", json.dumps(summary, indent=2), "```", ""]
    return "\n".join(lines)


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
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--out-dir", default="runs/benchmarks/efficiency", help="where the JSON/PNG/MD go")


def run_from_args(args: argparse.Namespace) -> int:
    """Handler for the parsed ``efficiency`` sub-command; returns an exit code."""
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = run_efficiency(args.slots, args.image_size, args.batch_size, args.models, args.repeats,
                                args.out_dir, args.device, backbone=args.backbone, warmup=args.warmup,
                                memory=not args.no_memory, plot=not args.no_plot)
    except ValueError as err:
        print(f"error: {err}")
        return 2
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
