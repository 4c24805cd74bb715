"""Plot validation curves (FG-ARI, MSC, MSE) of several runs against steps and against minutes.

    python benchmarks/plot_curves.py runs/a runs/b --labels "A,B" --out docs/img/curves.png [--json out.json]
    python benchmarks/plot_curves.py --from-json docs/img/old.json runs/c --labels "C" --out new.png --json new.json

Reads each run's ``history.jsonl`` (and ``metrics.json`` for the held-out test numbers, when present) and
draws one row per metric with two panels: against training steps and against wall-clock minutes. Runs
whose labels differ only in a trailing seed (`"RN18* s0"`, `"RN18* s1"`) share a colour and differ in line
style (solid, dashed, dotted).
``--json`` also writes the curves and test numbers as one JSON file; ``--from-json`` reads such a file back,
so runs whose folders are gone can be drawn again beside new ones (theirs first, under their stored labels).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = (("fg_ari", "FG-ARI"), ("msc", "MSC"), ("mse", "MSE"))


def read_run(run: Path) -> dict:
    history = run / "history.jsonl"
    if not history.is_file():
        raise SystemExit(f"{run}: no history.jsonl")
    rows = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    metrics_file = run / "metrics.json"
    test = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return {"rows": rows, "test": {k: test.get(k) for k in ("fg_ari", "msc", "mse", "ari", "train_steps",
                                                            "train_seconds", "train_images_per_s", "precision")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--from-json", action="append", default=[], type=Path,
                        help="a JSON file written by --json: draw its runs too (repeatable)")
    parser.add_argument("--keep", default=None,
                        help="comma-separated labels: of the --from-json runs draw only these")
    parser.add_argument("--labels", default=None, help="comma-separated labels (default: run folder names)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--json", default=None, type=Path)
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit("--labels: give one label per run")
    data: dict[str, dict] = {}
    for stored in args.from_json:
        if not stored.is_file():
            raise SystemExit(f"{stored}: no such file")
        data.update(json.loads(stored.read_text()))
    if args.keep is not None:
        keep = args.keep.split(",")
        missing = [label for label in keep if label not in data]
        if missing:
            raise SystemExit(f"--keep: no run labelled {', '.join(map(repr, missing))} in --from-json")
        data = {label: data[label] for label in keep}
    for label, run in zip(labels, args.runs):
        if label in data:
            raise SystemExit(f"--labels: {label!r} is already a run of --from-json")
        data[label] = read_run(run)
    if not data:
        raise SystemExit("give run folders or --from-json")
    labels = list(data)
    stems = [re.sub(r"\s+s\d+$", "", label) for label in labels]
    unique = list(dict.fromkeys(stems))
    palette = plt.get_cmap("tab10" if len(unique) <= 10 else "tab20").colors
    styles, seeds_drawn = {}, dict.fromkeys(unique, 0)
    for label, stem in zip(labels, stems):
        styles[label] = (palette[unique.index(stem) % len(palette)], ("-", "--", ":", "-.")[seeds_drawn[stem] % 4])
        seeds_drawn[stem] += 1
    fig, axes = plt.subplots(len(METRICS), 2, figsize=(11, 3.2 * len(METRICS)), squeeze=False)
    for label, run in data.items():
        colour, linestyle = styles[label]
        rows = run["rows"]
        steps = [r["step"] for r in rows]
        minutes = [r["seconds"] / 60 for r in rows]
        for i, (key, name) in enumerate(METRICS):
            values = [r.get(key) for r in rows]
            for ax, x in ((axes[i][0], steps), (axes[i][1], minutes)):
                ax.plot(x, values, marker=".", label=label, color=colour, linestyle=linestyle)
            axes[i][0].set_ylabel(name)
    for i, (key, _) in enumerate(METRICS):
        for j, xlabel in enumerate(("training steps", "wall-clock minutes")):
            axes[i][j].grid(alpha=0.3)
            axes[i][j].set_xlabel(xlabel)
            if key == "mse":
                axes[i][j].set_yscale("log")
    axes[0][1].legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
