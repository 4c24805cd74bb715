"""Evaluating a trained run: held-out metrics (``metrics.json``) and decomposition figures."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..errors import RunError, UserError
from ..inference.loaders import make_loader, open_split
from ..inference.pretrained import WEIGHTS, default_output
from ..inference.run import LoadedRun, find_run, load_weights
from ..metrics.batch import batch_metrics
from ..safeio import MAX_BATCH_SIZE, check_bound, check_output_file, load_json, safe_name, unwritable_reason, write_json


@torch.no_grad()
def evaluate_module(loaded: LoadedRun, loader: DataLoader, background_labels=(0,),
                    num_slots: int | None = None, max_batches: int | None = None,
                    progress: bool = False) -> dict:
    """Per-image metrics over ``loader`` summarised to ``{name: mean, name_std, name_count, num_images}``."""
    from .. import metrics as M

    loaded.model.eval()
    device = loaded.device
    collected: dict[str, list[torch.Tensor]] = {}
    iterator = loader
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(loader, desc="evaluate", leave=False, total=max_batches or len(loader))
    for i, batch in enumerate(iterator):
        if max_batches is not None and i >= max_batches:
            break
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        out = loaded.model(batch["image"], num_slots or loaded.config.model.eval_num_slots)
        for name, values in batch_metrics(batch, out, background_labels).items():
            collected.setdefault(name, []).append(values.cpu())
        if "num_objects" in batch and "num_objects" in out.extras:
            collected.setdefault("_true_count", []).append(batch["num_objects"].cpu())
            collected.setdefault("_pred_count", []).append(out.extras["num_objects"].cpu())
    true_count = collected.pop("_true_count", None)
    pred_count = collected.pop("_pred_count", None)
    summary = M.summarize({k: torch.cat(v) for k, v in collected.items()})
    if true_count is not None:
        by_count = M.count_accuracy_by_count(torch.cat(true_count), torch.cat(pred_count))
        summary["count_accuracy_by_count"] = {str(k): v for k, v in by_count.items()}
    return summary


def evaluate(path: str | os.PathLike, split: str = "test", num_slots: int | None = None,
             batch_size: int | None = None, out: str | os.PathLike | None = None, progress: bool = True,
             extra: dict | None = None) -> dict:
    """Evaluate a run directory or checkpoint on ``split``; write and return the metrics (plus ``extra``).

    The run's ``metrics.json`` / ``metrics_<split>.json`` is written only for its last checkpoint; another
    checkpoint (``checkpoints/step*.ckpt``) writes ``metrics_<split>_<checkpoint>.json``. Every argument and
    the output file are checked before the model runs."""
    from ..hardware import inference_device, tune_malloc

    tune_malloc()
    run_dir, ckpt, cfg = find_run(path)
    if batch_size is not None:
        check_bound("batch size", batch_size, 1, MAX_BATCH_SIZE)
        cfg.data.eval_batch_size = batch_size
    target = _metrics_target(run_dir, ckpt, split, out)
    loaded = load_weights(ckpt, cfg, run_dir).to(inference_device(cfg.trainer.accelerator))  # the GPU a run trained on
    num_slots = loaded.num_slots(num_slots)  # refused before any data is read or generated
    dataset = open_split(cfg, split)
    start = time.perf_counter()
    metrics = evaluate_module(loaded, make_loader(cfg, dataset, train=False),
                              getattr(dataset, "background_labels", (0,)), num_slots, progress=progress)
    metrics.update({"split": split, "checkpoint": str(ckpt), "num_slots": num_slots or cfg.model.eval_num_slots
                    or cfg.model.num_slots, "eval_seconds": round(time.perf_counter() - start, 2)})
    metrics.update(extra or {})
    own = out is None and ckpt == run_dir / "checkpoints" / "last.ckpt"
    previous = (_read_previous(target) or {}) if own else {}
    for key in ("train_seconds", "train_steps", "train_images_per_s", "precision"):  # keep what training recorded
        if key in previous:
            metrics[key] = previous[key]
    write_json(target, metrics)
    metrics["_path"] = str(target)
    return metrics


def _metrics_target(run_dir: Path, ckpt: Path, split: str, out) -> Path:
    """Where the metrics go (see :func:`evaluate`); an ``out`` that would replace a checkpoint, config, data
    or anything but a metrics JSON object is refused before evaluating."""
    if out is None and ckpt.name == WEIGHTS:  # a model folder (maybe the installed package): write in the cwd
        out = default_output(run_dir, "metrics", split)
    if out is not None:
        target = check_output_file(out, "metrics", (".json",), inputs=(ckpt, run_dir / "config.yaml"))
        if target.is_file() and not isinstance(_read_previous(target), dict):
            raise RunError(f"{target}: exists and is not a metrics JSON file; refusing to replace it")
        return target
    name = "metrics.json" if split == "test" else f"metrics_{split}.json"
    if ckpt != run_dir / "checkpoints" / "last.ckpt":  # a step checkpoint never replaces the run's metrics
        name = f"metrics_{split}_{safe_name(ckpt.stem, 'checkpoint')}.json"
    return run_dir / name


def _read_previous(target: Path) -> dict | None:
    """The metrics already in ``target`` ({} when absent; None when it is not a readable JSON object)."""
    if not target.is_file():
        return {}
    try:
        data = load_json(target, "metrics file")
    except UserError:
        return None
    return data if isinstance(data, dict) else None


def output_dir(out_dir: str | os.PathLike) -> Path:
    """Create the figures' output folder ``out_dir`` (with its parents); refuse one that cannot be written
    in one line."""
    out_dir = Path(out_dir)
    problem = unwritable_reason(out_dir)
    if problem:
        raise RunError(f"{out_dir}: output directory {problem}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"{out_dir}: output directory is not writable ({err.strerror or err})") from None
    return out_dir


def visualize(path: str | os.PathLike, out_dir: str | os.PathLike, split: str = "test", num_images: int = 8,
              num_slots: int | None = None) -> list[Path]:
    """Write decomposition figures (and AIR box figures) for the first images of ``split``."""
    from ..viz.figures import boxes_figure, decomposition_figure, save_figure

    if num_images < 1:
        raise RunError(f"num_images must be at least 1, got {num_images}")
    run_dir, ckpt, cfg = find_run(path)
    loaded = load_weights(ckpt, cfg, run_dir)
    num_slots = loaded.num_slots(num_slots)
    dataset = open_split(cfg, split)
    out_dir = output_dir(out_dir)
    n = min(num_images, len(dataset))
    images = torch.stack([dataset[i]["image"] for i in range(n)])
    with torch.no_grad():
        result = loaded.model(images, num_slots or loaded.config.model.eval_num_slots).detach()
    written = []
    for start in range(0, n, 4):
        sl = slice(start, start + 4)
        figure = decomposition_figure(images[sl], result.select(sl))
        written.append(save_figure(figure, out_dir / f"decomposition_{start // 4}.png"))
    if "boxes" in result.extras:
        written.append(save_figure(boxes_figure(images, result, result.extras["boxes"]), out_dir / "boxes.png"))
    return written
