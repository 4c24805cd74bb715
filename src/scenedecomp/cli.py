"""The ``scenedecomp`` command: train, evaluate, visualize, data, benchmark, presets."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import threading
import warnings

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
    decoded = [f"{label} {metrics[key]:.4f}" if key != "generative_mse" else f"{label} {metrics[key]:.2e}"
               for key, label in (("decoded_fg_ari", "FG_ARI"), ("decoded_msc", "MSC"),
                                  ("generative_mse", "generative MSE"))
               if isinstance(metrics.get(key), float) and metrics[key] == metrics[key]]
    if decoded:
        parts.append("decoded masks: " + ", ".join(decoded))
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

    extra = {}
    if args.disentanglement:  # scored first, so that a refusal leaves no metrics file behind
        from .training.disentangle import evaluate_disentanglement

        extra["disentanglement"] = d = evaluate_disentanglement(args.run, None, args.split, args.num_slots,
                                                                args.batch_size)
    metrics = evaluate(args.run, split=args.split, num_slots=args.num_slots, batch_size=args.batch_size,
                       out=args.out, progress=not args.quiet, extra=extra)
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("_")}, indent=2))
    else:
        _print_summary(metrics, args.run)
        if args.disentanglement:
            print(f"disentanglement ({d['num_objects']} matched objects): DCI D {d['dci_disentanglement']:.3f}, "
                  f"C {d['dci_completeness']:.3f}, I {d['dci_informativeness']:.3f}; MIG {d['mig']:.3f}; "
                  f"probe R2/acc linear {d['informativeness_linear']:.3f}, MLP {d['informativeness_mlp']:.3f}; "
                  f"figure {d['figure']}")
            mlp = d.get("informativeness", {}).get("mlp", {})
            print("MLP probe per factor (R2; accuracy for categorical): "
                  + ", ".join(f"{name} {value:.3f}" for name, value in mlp.items()))
    return 0


def _cmd_visualize(args) -> int:
    from .training.evaluate import visualize

    if args.traversals:
        from .training.traversals import write_traversals

        for path in write_traversals(args.run, args.out, split=args.split, image=args.image, slot=args.slot,
                                     top=args.top, num_slots=args.num_slots, sigma=args.sigma):
            print(path)
        return 0
    if args.samples:
        from .training.traversals import write_samples

        for path in write_samples(args.run, args.out, split=args.split, num_swaps=args.num_images // 2 or 1,
                                  num_slots=args.num_slots):
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


# commands whose parsers live in other modules (which import torch): added in full only when chosen, so
# `scenedecomp --version`, `--help` and `presets` answer without importing torch
_LAZY = {
    "decompose": ("decompose your own images with a trained run", ".decomposition", "add_decompose_parser"),
    "report": ("write one self-contained report.html for a run", ".report", "add_report_parser"),
    "benchmark": ("throughput and efficiency benchmarks (JSON)", ".bench", "add_benchmark_commands"),
    "data": ("convert and inspect datasets", ".data.commands", "add_data_commands"),
    "export": ("write a run as a model folder (safetensors, no pickle)", ".training.export", "add_export_commands"),
    "pretrained": ("list the models shipped with the package", ".training.export", "add_export_commands"),
    "seeds": ("train a preset for several seeds: per-seed JSON and a summary", ".training.seeds", "add_seeds_parser"),
}
_HERE = ("train", "evaluate", "visualize", "presets")


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The argument parser; ``command`` names the one subcommand to build in full (``"*"``: all of them,
    ``None``: none, only their names and help lines)."""
    parser = argparse.ArgumentParser(prog="scenedecomp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"scenedecomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def full(name: str) -> bool:
        return command == "*" or command == name

    p = sub.add_parser("train", help="train a model from a preset", description=(
        "Train a model. The run directory <out_dir>/<name> receives the resolved config, versions, "
        "checkpoints, TensorBoard logs, the validation history, test metrics and figures."))
    p.add_argument("--config", required=True, help="preset name (see `scenedecomp presets`) or YAML path")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. trainer.max_steps=100 model.num_slots=5")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoints/last.ckpt")
    p.add_argument("--quiet", action="store_true", help="no progress bar, model summary or warnings")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run on a split", description=(
        "Evaluate a run directory or checkpoint; writes metrics.json (test split) or metrics_<split>.json "
        "in the run directory (or --out) with ari, fg_ari, msc, sc, mse, num_images and their spreads. "
        "A checkpoint other than the run's last one writes metrics_<split>_<checkpoint>.json instead."))
    p.add_argument("run", help="run directory, .ckpt file, model folder or pretrained:NAME (a model folder "
                   "writes ./metrics_<NAME>[_<split>].json unless --out is given)")
    if full("evaluate"):
        from .data.sprites import OOD_SPLITS

        p.add_argument("--split", default="test", choices=("train", "val", "test", *OOD_SPLITS),
                       help="a split, or an out-of-distribution test split of multi_sprites: " + "; ".join(
                           f"{name}: {what}" for name, what in OOD_SPLITS.items()))
    p.add_argument("--num-slots", type=int, default=None, help=(
        "K at inference (MONet's recurrent attention and AIR; a one-pass ResNet attention keeps its trained K)"))
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
    p.add_argument("run", help="run directory, .ckpt file, model folder or pretrained:NAME")
    p.add_argument("--out", required=True, help="output directory for PNG files")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--num-slots", type=int, default=None)
    p.add_argument("--traversals", action="store_true", help=(
        "instead: latent traversals of one slot (rows = latent dimensions ranked by how much they move the "
        "slot's decoded mask; slot component and recomposed scene) and the component-VAE figure; AIR: z_what "
        "glimpses"))
    p.add_argument("--samples", action="store_true", help=(
        "instead: scenes decoded from latents with one slot's latent swapped between two test images "
        "(--num-images / 2 pairs)"))
    p.add_argument("--image", default=None, help=(
        "--traversals: index into --split, or an image file (default: the test image and slot, among the "
        "first 16, whose latents move the decoded mask most)"))
    p.add_argument("--slot", type=int, default=None, help="--traversals: slot (default: chosen with the image, "
                   "or the largest foreground slot)")
    p.add_argument("--top", type=int, default=None, help="--traversals: only the top N dimensions")
    p.add_argument("--sigma", default="data", choices=("data", "prior", "posterior"), help=(
        "--traversals: the sweep: each dimension from its 2nd to 98th percentile over 64 images of --split "
        "(data, default), or the posterior mean -3..+3 prior std (prior) or posterior std (posterior)"))
    p.set_defaults(func=_cmd_visualize)

    p = sub.add_parser("presets", help="list the YAML presets")
    p.set_defaults(func=_cmd_presets)

    adders = {(module, adder) for name, (_, module, adder) in _LAZY.items() if full(name)}
    for module, adder in sorted(adders):  # an adder may register several commands (export, pretrained)
        getattr(importlib.import_module(module, __package__), adder)(sub)
    for name, (help_line, _, _) in _LAZY.items():
        if name not in sub.choices:
            sub.add_parser(name, help=help_line)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option), or None."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in _LAZY or word in _HERE else None


def main(argv: list[str] | None = None) -> int:
    """The ``scenedecomp`` command. Every command runs inside one error boundary (:func:`run_command`)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser(_command_of(argv))
    args, extra = parser.parse_known_args(argv)
    # `train --config X a=b --resume c=d`: overrides may come before and after the flags
    if getattr(args, "overrides", None) is not None and extra and all("=" in e and not e.startswith("-")
                                                                       for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return run_command(args.func, args, quiet=bool(getattr(args, "quiet", False)))


def run_command(func, args, quiet: bool = False) -> int:
    """Run ``func(args)`` inside the error boundary.

    A :class:`~scenedecomp.errors.UserError` (and an ``OSError`` naming a file, and running out of memory)
    becomes one line on stderr and exit 2 (130 when interrupted); anything else one line plus the path of
    a log file holding the traceback, exit 1. SIGTERM is handled like Ctrl-C while the command runs;
    ``quiet`` silences Python warnings (Lightning's, scikit-learn's).
    """
    from .errors import UserError, one_line

    previous = _sigterm_as_interrupt()
    try:
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            code = int(func(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
            return code
    except BrokenPipeError:  # the reader stopped early (`scenedecomp presets | head -1`): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 0
    except UserError as err:
        _error(one_line(err))
        return err.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except MemoryError:
        _error("out of memory; try a smaller --batch-size, image size or number of slots")
        return 2
    except OSError as err:
        where = err.filename or ""
        _error(f"{where}: {err.strerror or one_line(err)}" if where else (err.strerror or one_line(err)))
        return 2
    except Exception as err:  # noqa: BLE001 - the boundary: a bug, reported with a log file
        log = _crash_log(err)
        _error(f"{type(err).__name__}: {one_line(err, 200)} (a bug; the traceback is in {log})",
               kind="internal error")
        return 1
    finally:
        _restore_sigterm(previous)


def _error(message: str, kind: str = "error") -> None:
    print(f"scenedecomp: {kind}: {message}", file=sys.stderr, flush=True)


def _crash_log(err: BaseException) -> str:
    """Write the traceback of ``err`` to a new log file; its path (or ``"(unwritable)"``)."""
    import tempfile
    import traceback

    try:
        fd, path = tempfile.mkstemp(prefix="scenedecomp-crash-", suffix=".log")
        with os.fdopen(fd, "w") as fh:
            fh.write(f"scenedecomp {__version__}: {' '.join(sys.argv)}\n")
            fh.write("".join(traceback.format_exception(type(err), err, err.__traceback__)))
        return path
    except OSError:
        return "(no log: the temporary folder is not writable)"


def _sigterm_as_interrupt():
    """Make SIGTERM raise KeyboardInterrupt (so training saves a checkpoint); the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):
        return None


def _restore_sigterm(previous) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
