"""``scenedecomp seeds``: train a preset for several seeds (:mod:`scenedecomp.training.seeds`)."""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, load_config
from ..training.seeds import criterion_for, format_record, format_summary, run_seeds


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
    p.add_argument("--disentanglement", action="store_true",
                   help="also score each seed's latents (evaluate --disentanglement): probe R2 per factor, DCI, MIG")
    p.add_argument("--collect", action="store_true",
                   help="train nothing: rebuild the table from the existing run directories")
    p.set_defaults(func=run)


def run(args) -> int:
    seeds = parse_seeds(args.seeds)
    if args.parallel < 1 or args.threads < 1:
        raise ConfigError(f"--parallel {args.parallel} / --threads {args.threads}: both must be at least 1")
    criterion = None
    if args.metric is not None or args.fail_below is not None:
        cfg = load_config(args.preset, args.overrides)
        default = criterion_for(cfg.model.name)
        criterion = (args.metric or default[0], default[1] if args.fail_below is None else args.fail_below)
    summary = run_seeds(args.preset, seeds, args.out, args.overrides, runs_dir=args.runs_dir,
                        parallel=args.parallel, threads=args.threads, criterion=criterion,
                        overwrite=args.overwrite, disentanglement=args.disentanglement, collect=args.collect,
                        report=lambda record: print(format_record(record), flush=True))
    print(format_summary(summary))
    print(f"seed table written to {Path(args.out) / 'summary.json'}")
    return 1 if summary["errors"] else 0


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"3"``, ``"0,2,5-7"`` -> sorted distinct seeds; anything else raises :class:`ConfigError`."""
    seeds: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            raise ConfigError(f"--seeds {text!r}: expected seeds like 0-9 or 0,2,5-7") from None
        if first < 0 or last < first:
            raise ConfigError(f"--seeds {text!r}: {part!r} is not a range of non-negative seeds")
        seeds.update(range(first, last + 1))
    return sorted(seeds)
