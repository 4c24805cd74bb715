"""``scenedecomp seeds``: train a preset for several seeds (:mod:`scenedecomp.training.seeds`)."""

from __future__ import annotations

from pathlib import Path

from ..config import load_config
from ..training.seeds import criterion_for, format_record, format_summary, parse_seeds, run_seeds


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("seeds", help="train a preset for several seeds; per-seed JSON and a summary",
                       description=(
                           "Train PRESET once per seed (--parallel processes at a time, --threads torch threads "
                           "each) and write <out>/seed<N>.json with each seed's test metrics and <out>/summary.json "
                           "with mean, std (n - 1), min, max and the number of failed seeds: count_accuracy < 0.9 "
                           "for AIR, fg_ari < 0.5 for the segmentation models (or --metric/--fail-below)."))
    p.add_argument("preset", help="preset name (see `scenedecomp presets`) or YAML path")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides for every seed, e.g. trainer.max_minutes=5 (not seed, name, out_dir)")
    p.add_argument("--seeds", default="0-4", help="seeds, e.g. 0-9 or 0,2,5-7 (default 0-4)")
    p.add_argument("--out", required=True, help="folder for seed<N>.json and summary.json")
    p.add_argument("--runs-dir", default=None, help="folder for the run directories (default <out>/runs)")
    p.add_argument("--parallel", type=int, default=2, help="runs at a time (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--metric", default=None, help="failure criterion's metric (default by model, see above)")
    p.add_argument("--fail-below", type=float, default=None, help="failure criterion's threshold")
    p.add_argument("--overwrite", action="store_true", help="replace existing run directories")
    p.set_defaults(func=run)


def run(args) -> int:
    criterion = None
    if args.metric is not None or args.fail_below is not None:
        cfg = load_config(args.preset, args.overrides)
        default = criterion_for(cfg.model.name)
        criterion = (args.metric or default[0], default[1] if args.fail_below is None else args.fail_below)
    summary = run_seeds(args.preset, parse_seeds(args.seeds), args.out, args.overrides, runs_dir=args.runs_dir,
                        parallel=args.parallel, threads=args.threads, criterion=criterion,
                        overwrite=args.overwrite, report=lambda record: print(format_record(record), flush=True))
    print(format_summary(summary))
    print(f"seed table written to {Path(args.out) / 'summary.json'}")
    return 1 if summary["errors"] else 0
