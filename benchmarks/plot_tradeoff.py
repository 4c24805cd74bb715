"""Segmentation against representation: each run's validation path in the plane (attention FG-ARI,
decoded-mask MSC), and both against training steps.

    python benchmarks/plot_tradeoff.py RUN [RUN ...] --labels "A,B" --out docs/img/tradeoff.png [--json out.json]

A RUN is a run folder (its ``history.jsonl`` and, when present, ``metrics.json``) or a folder holding those
two files (e.g. ``benchmarks/results/demo``). The held-out test point of each run (from ``metrics.json``)
is drawn as a star. ``--json`` writes the plotted numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_run(run: Path) -> dict:
    history = run / "history.jsonl"
    if not history.is_file():
        raise SystemExit(f"{run}: no history.jsonl")
    rows = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("decoded_msc") is not None]
    if not rows:
        raise SystemExit(f"{history}: no validation rows with decoded_msc")
    metrics = run / "metrics.json"
    test = json.loads(metrics.read_text()) if metrics.is_file() else {}
    return {"steps": [r["step"] for r in rows], "fg_ari": [r["fg_ari"] for r in rows],
            "decoded_msc": [r["decoded_msc"] for r in rows],
            "test": {k: test[k] for k in ("fg_ari", "decoded_msc", "msc", "train_steps") if k in test}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--labels", default=None, help="comma-separated labels (default: folder names)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--json", default=None, type=Path)
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit("--labels: give one label per run")
    data = {label: read_run(run) for label, run in zip(labels, args.runs)}
    fig, (plane, curves) = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = plt.get_cmap("tab10").colors
    for i, (label, run) in enumerate(data.items()):
        colour = colours[i % len(colours)]
        plane.plot(run["fg_ari"], run["decoded_msc"], marker=".", color=colour, label=label, alpha=0.8)
        plane.annotate(f"{run['steps'][-1]:,}", (run["fg_ari"][-1], run["decoded_msc"][-1]), fontsize=7,
                       color=colour, textcoords="offset points", xytext=(3, 3))
        if "fg_ari" in run["test"] and "decoded_msc" in run["test"]:
            plane.plot(run["test"]["fg_ari"], run["test"]["decoded_msc"], marker="*", markersize=13,
                       color=colour, markeredgecolor="black")
        curves.plot(run["steps"], run["fg_ari"], color=colour, label=f"{label}: FG-ARI")
        curves.plot(run["steps"], run["decoded_msc"], color=colour, linestyle="--", label=f"{label}: decoded MSC")
    plane.axvline(0.85, color="grey", linewidth=0.8, linestyle=":")
    plane.axhline(0.75, color="grey", linewidth=0.8, linestyle=":")
    plane.set_xlabel("attention FG-ARI (validation; star: held-out test)")
    plane.set_ylabel("decoded-mask MSC")
    plane.set_title("segmentation vs decoded masks (dotted: the targets)")
    curves.set_xlabel("training steps")
    curves.set_ylabel("validation FG-ARI (solid), decoded MSC (dashed)")
    for ax in (plane, curves):
        ax.grid(alpha=0.3)
    plane.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
