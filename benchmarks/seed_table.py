"""Markdown rows of seed tables: one row per ``summary.json`` written by ``scenedecomp seeds``.

    python benchmarks/seed_table.py benchmarks/results/seeds/monet-demo/summary.json ... \
        --metrics fg_ari,ari,msc,mse,decoded_msc,probe_mlp_x --labels "MONet,Slot Attention"

Each cell is ``mean ± std`` (sample std over the seeds that finished); the last columns give the steps
(mean), the seeds and the failed seeds under the table's criterion.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cell(stats: dict | None, digits: int) -> str:
    if not stats:
        return "-"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def rows(paths: list[str], metrics: list[str], labels: list[str]) -> list[str]:
    lines = ["| model | " + " | ".join(metrics) + " | steps | seeds | failed |",
             "|---" * (len(metrics) + 4) + "|"]
    for path, label in zip(paths, labels):
        summary = json.loads(Path(path).read_text())
        table = summary["metrics"]
        cells = [cell(table.get(m), 5 if "mse" in m else 3) for m in metrics]
        steps = table.get("train_steps")
        steps_cell = f"{steps['mean']:,.0f}" if steps else "-"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {steps_cell} | {summary['num_seeds']} | "
                     f"{summary['num_failed']} ({summary['criterion']}) |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summaries", nargs="+", help="summary.json files of `scenedecomp seeds`")
    parser.add_argument("--metrics", default="fg_ari,ari,msc,mse", help="comma-separated metric names")
    parser.add_argument("--labels", default=None, help="comma-separated row labels (default: the presets)")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [
        json.loads(Path(p).read_text())["preset"] for p in args.summaries]
    if len(labels) != len(args.summaries):
        print(f"--labels: {len(labels)} labels for {len(args.summaries)} tables", file=sys.stderr)
        return 2
    print("\n".join(rows(args.summaries, args.metrics.split(","), labels)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
