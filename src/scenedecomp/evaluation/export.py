"""Exporting a run as a model folder (:mod:`scenedecomp.inference.pretrained`; ``scenedecomp export``), the
check that a model folder reproduces its recorded metrics (``scenedecomp pretrained --check``)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import shlex
import shutil
import time
from pathlib import Path

import torch

from ..config import to_yaml
from ..errors import RunError
from ..hardware import git_commit
from ..inference.pretrained import FORMAT, WEIGHTS, model_folder
from ..inference.run import find_run, load_weights
from ..safeio import atomic_write_text, make_temp_folder, replace_folder, unwritable_reason, write_json

CHECK_IMAGES = 64
CHECK_TOLERANCE = 1e-4
SUMMARY_KEYS = ("fg_ari", "ari", "msc", "mse", "decoded_fg_ari", "decoded_msc", "count_accuracy")


def _plain_command(command: str) -> str:
    """The recorded command with the program reduced to ``scenedecomp`` and absolute paths to their last part."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        return command
    if tokens and Path(tokens[0]).name in ("cli.py", "__main__.py", "scenedecomp"):
        tokens[0] = "scenedecomp"

    def strip(token: str) -> str:
        key, eq, value = token.rpartition("=") if "=" in token else ("", "", token)
        return f"{key}{eq}{Path(value).name}" if os.path.isabs(value) else token

    return shlex.join(strip(t) for t in tokens)


def check_metrics(loaded, cfg, num_images: int, batch_size: int | None = None) -> dict[str, float]:
    """Means of the per-image metrics over the first ``num_images`` test images (the model in eval mode),
    and ``num_images``: how many there were."""
    from torch.utils.data import Subset

    from ..inference.loaders import make_loader, open_split
    from .evaluate import evaluate_module

    cfg = copy.deepcopy(cfg)  # the caller's config (written to config.yaml) stays as it was
    if cfg.data.num_test is None or cfg.data.num_test > num_images:
        # the first n scenes of a generated split do not depend on its size: generate only those
        cfg.data.num_test = num_images
    dataset = open_split(cfg, "test")
    subset = Subset(dataset, range(min(num_images, len(dataset))))
    if batch_size:
        cfg.data.eval_batch_size = batch_size
    summary = evaluate_module(loaded, make_loader(cfg, subset, train=False),
                              getattr(dataset, "background_labels", (0,)))
    return {"num_images": summary["num_images"], **{k: v for k, v in summary.items()
            if isinstance(v, float) and not k.endswith(("_std", "_count")) and v == v}}


def export_run(run: str | os.PathLike, out: str | os.PathLike, check_images: int = CHECK_IMAGES) -> Path:
    """Write the run (its final checkpoint, as evaluation loads it) to the new or empty folder ``out``."""
    from safetensors.torch import save_file

    out = Path(out).expanduser()
    if out.is_symlink():
        raise RunError(f"{out}: is a symbolic link; give a new or empty folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"{out}: exists and is not an empty directory; give a new or empty folder")
    problem = unwritable_reason(out)
    if problem:
        raise RunError(f"{out}: output directory {problem}")
    if check_images < 1:
        raise RunError(f"check_images must be at least 1, got {check_images}")
    run_dir, ckpt, cfg = find_run(run)
    loaded = load_weights(ckpt, cfg, run_dir)
    training_only = tuple(loaded.model.training_only_prefixes)  # e.g. AIR's baseline
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in loaded.model.state_dict().items()
               if not k.startswith(training_only)}
    metadata = {"format": FORMAT, "in_channels": str(loaded.in_channels), "image_size": str(loaded.image_size),
                "background_labels": ",".join(str(int(v)) for v in loaded.background_labels)}
    cfg.data.options = {k: v for k, v in dict(cfg.data.options).items() if k != "cache_dir"}  # a local path
    cfg.out_dir = "runs"  # where the run was trained is a local path too

    env = read_json_or_none(run_dir / "env.json") or read_json_or_none(run_dir / "provenance.json") or {}
    recorded = read_json_or_none(run_dir / "metrics.json") or {}
    metrics = {k: v for k, v in recorded.items() if k not in ("checkpoint", "_path")}
    if not any(k in metrics for k in ("ari", "mse")):  # no recorded test metrics: measure them now
        from ..inference.loaders import make_loader, open_split
        from .evaluate import evaluate_module

        test = open_split(cfg, "test")
        metrics.update(evaluate_module(loaded, make_loader(cfg, test, train=False),
                                       getattr(test, "background_labels", (0,))))
        metrics["split"] = "test"
    batch = min(check_images, cfg.data.eval_batch_size or cfg.data.batch_size)
    measured = check_metrics(loaded, cfg, check_images, batch)
    check = {"split": "test", "num_images": measured.pop("num_images"), "batch_size": batch,
             "tolerance": CHECK_TOLERANCE, "metrics": measured}
    step = env.get("checkpoint_step")
    if step is None and ckpt.suffix == ".ckpt":
        step = int(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))

    staging = make_temp_folder(out.parent, f".{out.name}.", ".tmp")
    try:
        save_file(weights, str(staging / WEIGHTS), metadata=metadata)
        atomic_write_text(staging / "config.yaml", to_yaml(cfg), sync=False)
        write_json(staging / "metrics.json", metrics)
        write_json(staging / "check.json", check)
        write_json(staging / "provenance.json", {
            "format": FORMAT,
            "model": cfg.model.name, "dataset": cfg.data.name, "image_size": loaded.image_size,
            "source_run": cfg.name, "checkpoint_step": step, "ema_decay": cfg.trainer.ema_decay,
            "git_commit": env.get("git_commit"), "seed": cfg.seed,
            "command": _plain_command(str(env.get("command", ""))) or None,
            "machine": {k: env.get(k) for k in ("platform", "cpu_count", "torch_threads", "cuda", "precision")
                        if k in env} or env.get("machine"),
            "versions": {k: env.get(k) for k in ("scenedecomp", "torch", "lightning", "python") if k in env}
            or env.get("versions"),
            "trained": env.get("started") or env.get("trained"),
            "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "exported_with": {"git_commit": git_commit(), "torch": torch.__version__,
                              "platform": platform.platform()},
            "weights_sha256": hashlib.sha256((staging / WEIGHTS).read_bytes()).hexdigest(),
        })
        replace_folder(staging, out, set_modes=True)  # ``out`` is new or empty (checked above)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def read_json_or_none(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def verify(folder: str | os.PathLike) -> dict:
    """Recompute ``check.json``'s metrics for a model folder (or ``pretrained:NAME``).

    Returns ``{"recorded", "measured", "max_abs_diff", "ok", "sha256_ok"}``; ``ok`` when every recorded
    metric is reproduced within the recorded tolerance and the weights' hash matches the provenance."""
    path = model_folder(folder)
    if path is None:
        raise RunError(f"{folder}: not a model folder (no {WEIGHTS})")
    check = read_json_or_none(path / "check.json")
    if not check or not isinstance(check.get("metrics"), dict):
        raise RunError(f"{path / 'check.json'}: missing or unreadable")
    run_dir, ckpt, cfg = find_run(path)
    measured = check_metrics(load_weights(ckpt, cfg, run_dir), cfg, int(check["num_images"]), check.get("batch_size"))
    measured.pop("num_images")
    recorded = check["metrics"]
    diffs = {k: abs(measured[k] - v) if k in measured else float("inf") for k, v in recorded.items()}
    worst = max(diffs.values(), default=0.0)
    sha = (read_json_or_none(path / "provenance.json") or {}).get("weights_sha256")
    sha_ok = sha is None or hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest() == sha
    return {"recorded": recorded, "measured": measured, "max_abs_diff": worst, "sha256_ok": sha_ok,
            "ok": worst <= float(check.get("tolerance", CHECK_TOLERANCE)) and sha_ok}


# ----------------------------------------------------------------------------------------------- commands


