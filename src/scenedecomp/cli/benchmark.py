"""``scenedecomp benchmark step`` (training-step throughput, :mod:`scenedecomp.bench.monet_step`) and
``scenedecomp benchmark efficiency`` (FLOPs, time and memory vs K, :mod:`scenedecomp.bench.efficiency`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import torch

from ..bench import efficiency, monet_step
from ..bench.efficiency import run_efficiency
from ..bench.efficiency_measure import DEFAULT_MODELS, DEFAULT_SLOTS, MODELS, PRECISIONS
from ..bench.monet_step import DEFAULT_VARIANTS, VARIANTS, format_table, run_step_benchmark
from ..errors import BadInput
from ..safeio import MAX_BATCH_SIZE, MAX_IMAGE_SIZE, MAX_SLOTS, check_bound


def add_parsers(subparsers) -> None:
    parser = subparsers.add_parser("benchmark", help="throughput and efficiency benchmarks (JSON)")
    sub = parser.add_subparsers(dest="benchmark", required=True)
    add_step_parser(sub)
    add_efficiency_parser(sub)


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
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32, bf16 (autocast) or auto (bf16 where training would use it); default fp32")
    parser.add_argument("--tune-malloc", action="store_true",
                        help="raise glibc's mmap/trim thresholds first, as scenedecomp train does")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--out-dir", default="runs/benchmarks/efficiency", help="where the JSON/PNG/MD go")


def run_from_args(args: argparse.Namespace) -> int:
    """Handler for the parsed ``efficiency`` sub-command; returns an exit code."""
    check_bound("--batch-size", args.batch_size, 1, MAX_BATCH_SIZE)
    check_bound("--image-size", args.image_size, 8, MAX_IMAGE_SIZE)
    if args.image_size % 32:
        raise BadInput(f"--image-size must be a multiple of 32 (ResNet stride), got {args.image_size}")
    if args.repeats < 1:
        raise BadInput(f"--repeats must be at least 1, got {args.repeats}")
    for k in args.slots:
        check_bound("--slots", k, 2, MAX_SLOTS)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = run_efficiency(args.slots, args.image_size, args.batch_size, args.models, args.repeats,
                                args.out_dir, args.device, backbone=args.backbone, warmup=args.warmup,
                                memory=not args.no_memory, plot=not args.no_plot, precision=args.precision,
                                malloc=args.tune_malloc)
    except ValueError as err:  # a bad choice of slots, sizes or models: one line on stderr, exit 2
        raise BadInput(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    summary = report["summary"]
    print(json.dumps({k: summary[k] for k in ("attention_flops_change", "step_time_ratio_vs_monet",
                                              "targets_met")}, indent=2))
    return 0


def add_efficiency_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``efficiency`` sub-command (``scenedecomp benchmark efficiency``) to ``subparsers``."""
    parser = subparsers.add_parser(
        "efficiency",
        help="FLOPs, parameters, step time and memory of MONet vs MONet-RN50/RN50* as K grows",
        description=efficiency.__doc__.split("\n\n")[0],
    )
    add_arguments(parser)
    parser.set_defaults(func=run_from_args)
    return parser


def efficiency_main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python benchmarks/efficiency.py``)."""
    parser = argparse.ArgumentParser(prog="efficiency", description=efficiency.__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def add_step_parser(subparsers) -> None:
    p = subparsers.add_parser("step", help="training images/s of fp32 / bf16 / compiled / allocator variants",
                              description=monet_step.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="preset to start from (default: the paper MONet config)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--slots", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--baseline-overrides", default="",
                   help="comma-separated key=value applied to the fp32 variant only (the model as it was)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_cmd_step)


def _cmd_step(args) -> int:
    from ..config import ConfigError

    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ConfigError(f"--variants: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(VARIANTS)}")
    if args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {args.steps}")
    from ..safeio import MAX_BATCH_SIZE, MAX_IMAGE_SIZE, MAX_SLOTS, check_bound

    check_bound("--batch-size", args.batch_size, 1, MAX_BATCH_SIZE)
    if args.out:  # before measuring: the result may not replace a checkpoint, config or data file
        from ..safeio import check_output_file

        check_output_file(args.out, "benchmark result", (".json",))
    check_bound("--image-size", args.image_size, 8, MAX_IMAGE_SIZE)
    check_bound("--slots", args.slots, 2, MAX_SLOTS)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: no CUDA device is available")
    from ..config import load_config

    baseline = tuple(item.strip() for item in args.baseline_overrides.split(",") if item.strip())
    for extra in ((), baseline):  # refuse a bad config before starting subprocesses
        load_config(args.config, [f"model.num_slots={args.slots}", f"data.image_size={args.image_size}",
                                  *args.overrides, *extra])
    result = run_step_benchmark(args.config, tuple(args.overrides), args.image_size, args.slots, args.batch_size,
                                args.steps, variants=variants, device=args.device, threads=args.threads,
                                baseline_overrides=baseline)
    print(format_table(result))
    if args.out:
        from pathlib import Path

        from ..safeio import write_json

        write_json(Path(args.out), result)
        print(f"JSON written to {args.out}")
    else:
        print(json.dumps(result, indent=2))
    return 0
