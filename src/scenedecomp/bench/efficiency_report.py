"""Reporting efficiency measurements: the ratios the thesis claims (``summarize``), the thesis' numbers,
the two-panel figure and the markdown tables."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .efficiency_measure import MODELS

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


def _value(results: list[dict], model: str, k: int, getter: Callable[[dict], float]) -> float | None:
    for r in results:
        if r["model"] == model and r["num_slots"] == k:
            return getter(r)
    return None


def summarize(results: list[dict], slots: Sequence[int]) -> dict[str, Any]:
    """Ratios against the thesis' claims: FLOP flatness/linearity in K and step-time ratios vs MONet."""
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
        f"{report['environment']['device']}, {cfg.get('precision', 'fp32')}"
        f"{', tuned malloc' if cfg.get('malloc_tuned') else ''}, median of {cfg['repeats']} steps)",
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
