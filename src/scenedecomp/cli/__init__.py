"""The ``scenedecomp`` command: train, evaluate, visualize, data, benchmark, presets.

The only place that builds argument parsers and names flags (one module per command), and the single error
boundary (:func:`run_command`): a library error becomes one line and exit status 2."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import warnings

from ..version import __version__

# one module per command, each with ``add_parsers(subparsers)`` and the command's ``run(args)``; a command's
# module is imported (and its parser built in full) only when it is chosen, so `scenedecomp --version`,
# `--help` and `presets` answer without importing torch
COMMANDS = {
    "train": ("train a model from a preset", ".train"),
    "evaluate": ("evaluate a run on a split", ".evaluate"),
    "visualize": ("draw decomposition figures", ".visualize"),
    "presets": ("list the YAML presets", ".presets"),
    "decompose": ("decompose your own images with a trained run", ".decompose"),
    "report": ("write one self-contained report.html for a run", ".report"),
    "benchmark": ("throughput and efficiency benchmarks (JSON)", ".benchmark"),
    "data": ("convert and inspect datasets", ".data"),
    "export": ("write a run as a model folder (safetensors, no pickle)", ".export"),
    "pretrained": ("list the models shipped with the package", ".export"),
    "seeds": ("train a preset for several seeds: per-seed JSON and a summary", ".seeds"),
}


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The argument parser; ``command`` names the one subcommand to build in full (``"*"``: all of them,
    ``None``: none, only their names and help lines)."""
    parser = argparse.ArgumentParser(prog="scenedecomp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"scenedecomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    chosen = {module for name, (_, module) in COMMANDS.items() if command in ("*", name)}
    for module in sorted(chosen):  # a module may add several commands (export, pretrained)
        importlib.import_module(module, __package__).add_parsers(sub)
    for name, (help_line, _) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=help_line)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option), or None."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


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
    from ..errors import UserError, one_line

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

