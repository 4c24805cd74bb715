"""The ``scenedecomp`` command: train, evaluate, visualize, data, benchmark, presets."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .version import __version__


def _cmd_train(args) -> int:
    from .training.config import load_config
    from .training.train import train

    cfg = load_config(args.config, args.overrides)
    metrics = train(cfg, overwrite=args.overwrite, resume=args.resume, quiet=args.quiet)
    _print_summary(metrics, f"{cfg.out_dir}/{cfg.name}")
    return 0


def _print_summary(metrics: dict, where: str) -> None:
    keys = ["fg_ari", "ari", "msc", "sc", "mse", "count_accuracy"]
    parts = []
    for key in keys:
        value = metrics.get(key)
        if value is not None and value == value:
            parts.append(f"{key.upper() if key != 'count_accuracy' else 'count acc'} {value:.4f}"
                         if key != "mse" else f"MSE {value:.2e}")
    if "train_seconds" in metrics:
        parts.append(f"train {metrics['train_seconds'] / 60:.1f} min ({metrics.get('train_steps', '?')} steps")
        if "train_images_per_s" in metrics:
            parts[-1] += f", {metrics['train_images_per_s']:.0f} images/s, {metrics.get('precision', '?')}"
        parts[-1] += ")"
    print(f"[{metrics.get('split', 'test')}, {metrics.get('num_images', '?')} images] " + ", ".join(parts))
    if "_path" in metrics:
        print(f"metrics written to {metrics['_path']}; run directory: {where}")


def _cmd_evaluate(args) -> int:
    from .training.evaluate import evaluate

    metrics = evaluate(args.run, split=args.split, num_slots=args.num_slots, batch_size=args.batch_size,
                       out=args.out, progress=not args.quiet)
    if args.disentanglement:
        from .training.disentangle import evaluate_disentanglement

        metrics["disentanglement"] = d = evaluate_disentanglement(
            args.run, metrics["_path"], args.split, args.num_slots, args.batch_size)
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("_")}, indent=2))
    else:
        _print_summary(metrics, args.run)
        if args.disentanglement:
            print(f"disentanglement ({d['num_objects']} matched objects): DCI D {d['dci_disentanglement']:.3f}, "
                  f"C {d['dci_completeness']:.3f}, I {d['dci_informativeness']:.3f}; MIG {d['mig']:.3f}; "
                  f"probe R2/acc linear {d['informativeness_linear']:.3f}, MLP {d['informativeness_mlp']:.3f}; "
                  f"figure {d['figure']}")
    return 0


def _cmd_visualize(args) -> int:
    from .training.evaluate import visualize

    if args.traversals:
        from .training.traversals import write_traversals

        for path in write_traversals(args.run, args.out, split=args.split, image=args.image, slot=args.slot,
                                     top=args.top, num_slots=args.num_slots, sigma=args.sigma):
            print(path)
        return 0

    for path in visualize(args.run, args.out, split=args.split, num_images=args.num_images,
                          num_slots=args.num_slots):
        print(path)
    return 0


def _cmd_presets(args) -> int:
    from .training.presets import list_presets, preset_path, read_yaml

    for name in list_presets():
        notes = str(read_yaml(preset_path(name)).get("notes", "") or "")
        print(f"{name:34s} {notes.strip().splitlines()[0] if notes.strip() else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scenedecomp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"scenedecomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a preset", description=(
        "Train a model. The run directory <out_dir>/<name> receives the resolved config, versions, "
        "checkpoints, TensorBoard logs, the validation history, test metrics and figures."))
    p.add_argument("--config", required=True, help="preset name (see `scenedecomp presets`) or YAML path")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. trainer.max_steps=100 model.num_slots=5")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoints/last.ckpt")
    p.add_argument("--quiet", action="store_true", help="no progress bar or model summary")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run on a split", description=(
        "Evaluate a run directory or checkpoint; writes metrics.json (test split) or metrics_<split>.json "
        "in the run directory (or --out) with ari, fg_ari, msc, sc, mse, num_images and their spreads."))
    p.add_argument("run", help="run directory or .ckpt file")
    from .data.sprites import OOD_SPLITS

    p.add_argument("--split", default="test", choices=("train", "val", "test", *OOD_SPLITS),
                   help="a split, or an out-of-distribution test split of multi_sprites: " + "; ".join(
                       f"{name}: {what}" for name, what in OOD_SPLITS.items()))
    p.add_argument("--num-slots", type=int, default=None, help="K at inference (recurrent attention only)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--out", default=None, help="write the metrics JSON here instead")
    p.add_argument("--json", action="store_true", help="print the full metrics JSON")
    p.add_argument("--disentanglement", action="store_true", help=(
        "also match slots to ground-truth objects and score the latents against the objects' factors "
        "(probes, DCI, MIG; needs per-object factors, e.g. multi_sprites); adds 'disentanglement' to the "
        "metrics JSON and draws figures/disentanglement_<split>.png"))
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("visualize", help="draw decomposition figures", description=(
        "Draw decomposition figures (input, reconstruction, segmentation, per-slot reconstructions) "
        "and, for AIR, the attention boxes."))
    p.add_argument("run", help="run directory or .ckpt file")
    p.add_argument("--out", required=True, help="output directory for PNG files")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--num-slots", type=int, default=None)
    p.add_argument("--traversals", action="store_true", help=(
        "instead: latent traversals of one slot (rows = latent dimensions, -3..+3 sigma around the posterior "
        "mean; slot component and recomposed scene) and the component-VAE figure; AIR: z_what glimpses"))
    p.add_argument("--image", default="0", help="--traversals: index into --split, or an image file (default 0)")
    p.add_argument("--slot", type=int, default=None, help="--traversals: slot (default: largest foreground slot)")
    p.add_argument("--top", type=int, default=None, help="--traversals: only the top N dimensions by KL")
    p.add_argument("--sigma", default="prior", choices=("prior", "posterior"),
                   help="--traversals: step unit, the prior std 1 (default) or the slot's posterior std")
    p.set_defaults(func=_cmd_visualize)

    p = sub.add_parser("presets", help="list the YAML presets")
    p.set_defaults(func=_cmd_presets)

    from .decomposition import add_decompose_parser

    add_decompose_parser(sub)
    from .report import add_report_parser

    add_report_parser(sub)

    from .bench import add_benchmark_commands

    add_benchmark_commands(sub)
    from .data.commands import add_data_commands

    add_data_commands(sub)
    from .training.seeds import add_seeds_parser

    add_seeds_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .data import BatchError, DatasetError
    from .training.config import ConfigError
    from .training.run_dir import RunError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `train --config X a=b --resume c=d`: overrides may come before and after the flags
    if getattr(args, "overrides", None) is not None and extra and all("=" in e and not e.startswith("-")
                                                                       for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
        return code
    except BrokenPipeError:  # the reader stopped early (`scenedecomp presets | head -1`): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 0
    except (ConfigError, DatasetError, BatchError, RunError, FileNotFoundError) as err:
        print(f"scenedecomp: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scenedecomp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
