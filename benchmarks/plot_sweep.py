"""Held-out metrics against one swept setting (e.g. the KL weight beta): one point per run, the mean per value.

    python benchmarks/plot_sweep.py --param beta RUN=VALUE [RUN=VALUE ...] --out docs/img/sweep.png [--json out.json]

A RUN is a folder holding a ``metrics.json`` written by ``scenedecomp evaluate --disentanglement`` (a run
folder or a copy of its results). Panels: attention FG-ARI and MSC, decoded-mask MSC, DCI disentanglement and
MIG, and the MLP probes' R^2 for x, scale and colour (mean of the channels). ``--json`` writes the plotted
numbers per run; ``--table`` prints one markdown row per value (mean +- sample std over its runs);
``--mig-table`` one markdown row per run with MIG per factor (which factors have a dimension of their own).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = {
    "segmentation (attention masks)": ("fg_ari", "msc"),
    "decoded masks": ("decoded_msc",),
    "axis alignment": ("dci_disentanglement", "mig"),
    "MLP probe R²": ("probe_x", "probe_scale", "probe_colour"),
}


def read(folder: Path) -> dict[str, float]:
    path = folder / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{folder}: no metrics.json")
    m = json.loads(path.read_text())
    d = m.get("disentanglement")
    if not d:
        raise SystemExit(f"{path}: no disentanglement result (run scenedecomp evaluate --disentanglement)")
    mlp = d["informativeness"]["mlp"]
    colour = [v for k, v in mlp.items() if k.startswith("color")]
    colour = sum(colour) / len(colour) if colour else math.nan
    return {"fg_ari": m["fg_ari"], "msc": m["msc"], "decoded_msc": m.get("decoded_msc", math.nan),
            "generative_mse": m.get("generative_mse", math.nan),
            "dci_disentanglement": d["dci_disentanglement"], "mig": d["mig"],
            **{f"probe_{k}": mlp.get(k, math.nan) for k in ("x", "y", "scale", "shape")}, "probe_colour": colour,
            "train_steps": m.get("train_steps"), "mig_per_factor": d.get("mig_per_factor", {})}


TABLE = ("fg_ari", "msc", "decoded_msc", "generative_mse", "probe_x", "probe_y", "probe_scale", "probe_colour",
         "probe_shape", "dci_disentanglement", "mig")


def table(param: str, by_value: dict[float, list[dict]]) -> str:
    """Markdown: one row per value, each cell the mean +- sample std over the value's runs."""
    lines = [f"| {param} | runs | " + " | ".join(TABLE) + " |", "|---" * (len(TABLE) + 2) + "|"]
    for value in sorted(by_value):
        runs = by_value[value]
        cells = []
        for key in TABLE:
            xs = np.array([r[key] for r in runs], dtype=float)
            mean = xs.mean()
            digits = 4 if key == "generative_mse" else 3
            std = f" ± {xs.std(ddof=1):.{digits}f}" if len(xs) > 1 else ""
            cells.append(f"{mean:.{digits}f}{std}")
        lines.append(f"| {value:g} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


MIG_FACTORS = ("x", "y", "scale", "color[0]", "color[1]", "color[2]", "shape", "orientation")


def mig_table(param: str, points: list[dict]) -> str:
    """Markdown: one row per run (in the given order), MIG and its per-factor gaps."""
    lines = [f"| run | {param} | MIG | " + " | ".join(MIG_FACTORS) + " |", "|---" * (len(MIG_FACTORS) + 3) + "|"]
    for p in points:
        cells = [f"{p['mig_per_factor'][k]:.2f}" if k in p["mig_per_factor"] else "" for k in MIG_FACTORS]
        lines.append(f"| {p['run']} | {p['value']:g} | {p['mig']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="RUN=VALUE pairs")
    parser.add_argument("--param", required=True, help="the swept setting's name (axis label)")
    parser.add_argument("--log", action="store_true", help="logarithmic x axis")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--json", default=None, type=Path)
    parser.add_argument("--table", action="store_true", help="print a markdown table of the means per value")
    parser.add_argument("--mig-table", action="store_true", help="print a markdown table of MIG per factor per run")
    args = parser.parse_args(argv)
    points = []
    for item in args.runs:
        run, sep, value = item.rpartition("=")
        try:
            x = float(value)
        except ValueError:
            x = None
        if not sep or x is None:
            parser.error(f"{item!r}: expected RUN=VALUE with a number after '='")
        points.append({"run": Path(run).name, "value": x, **read(Path(run))})
    by_value: dict[float, list[dict]] = defaultdict(list)
    for p in points:
        by_value[p["value"]].append(p)
    values = sorted(by_value)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.8))
    colours = plt.get_cmap("tab10").colors
    for ax, (title, keys) in zip(axes, PANELS.items()):
        for i, key in enumerate(keys):
            xs = [p["value"] for p in points]
            ax.scatter(xs, [p[key] for p in points], color=colours[i], s=14, alpha=0.6)
            means = [sum(p[key] for p in by_value[v]) / len(by_value[v]) for v in values]
            ax.plot(values, means, color=colours[i], marker="o", label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(args.param)
        if args.log:
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"held-out test against {args.param} (dots: runs; lines: mean per value)", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    if args.json:
        args.json.write_text(json.dumps({"param": args.param, "points": points}, indent=1) + "\n")
    if args.mig_table:
        print(mig_table(args.param, points))
    print(table(args.param, by_value) if args.table else args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
