"""Evaluating a trained run: held-out metrics (``metrics.json``) and decomposition figures."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .checkpoint import find_run, load_module
from .loaders import make_loader, open_split
from .module import SceneDecompModule, batch_metrics
from .pretrained import WEIGHTS, default_output
from .run_dir import RunError, write_json
from .safety import unwritable_reason


@torch.no_grad()
def evaluate_module(module: SceneDecompModule, loader: DataLoader, background_labels=(0,),
                    num_slots: int | None = None, max_batches: int | None = None,
                    progress: bool = False) -> dict:
    """Per-image metrics over ``loader`` summarised to ``{name: mean, name_std, name_count, num_images}``."""
    from .. import metrics as M

    module.eval()
    device = module.device
    collected: dict[str, list[torch.Tensor]] = {}
    iterator = loader
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(loader, desc="evaluate", leave=False, total=max_batches or len(loader))
    for i, batch in enumerate(iterator):
        if max_batches is not None and i >= max_batches:
            break
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        out = module.model(batch["image"], num_slots or module.eval_num_slots)
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
             batch_size: int | None = None, out: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Evaluate a run directory or checkpoint on ``split``; write and return the metrics."""
    from .hardware import inference_device, tune_malloc

    tune_malloc()
    run_dir, ckpt, cfg = find_run(path)
    if num_slots is not None and num_slots < 2:
        raise RunError(f"--num-slots: K must be at least 2, got {num_slots}")
    if batch_size is not None:
        cfg.data.eval_batch_size = batch_size
    dataset = open_split(cfg, split)
    module = load_module(ckpt, cfg).to(inference_device(cfg.trainer.accelerator))  # the GPU a run trained on
    if num_slots is not None and getattr(module.model.attention, "recurrent", True) is False \
            and num_slots != cfg.model.num_slots:
        raise RunError(f"--num-slots {num_slots}: this attention network was trained with a fixed "
                       f"K={cfg.model.num_slots}")
    start = time.perf_counter()
    metrics = evaluate_module(module, make_loader(cfg, dataset, train=False),
                              getattr(dataset, "background_labels", (0,)), num_slots, progress=progress)
    metrics.update({"split": split, "checkpoint": str(ckpt), "num_slots": num_slots or cfg.model.eval_num_slots
                    or cfg.model.num_slots, "eval_seconds": round(time.perf_counter() - start, 2)})
    if out is None and ckpt.name == WEIGHTS:  # a model folder (maybe the installed package): write in the cwd
        out = default_output(run_dir, "metrics", split)
    target = Path(out) if out else run_dir / ("metrics.json" if split == "test" else f"metrics_{split}.json")
    previous = json.loads(target.read_text()) if target.is_file() else {}
    for key in ("train_seconds", "train_steps", "train_images_per_s", "precision"):  # keep what training recorded
        if key in previous:
            metrics[key] = previous[key]
    write_json(target, metrics)
    metrics["_path"] = str(target)
    return metrics


def visualize(path: str | os.PathLike, out_dir: str | os.PathLike, split: str = "test", num_images: int = 8,
              num_slots: int | None = None) -> list[Path]:
    """Write decomposition figures (and AIR box figures) for the first images of ``split``."""
    from ..viz.figures import boxes_figure, decomposition_figure, save_figure

    if num_images < 1:
        raise RunError(f"--num-images must be at least 1, got {num_images}")
    run_dir, ckpt, cfg = find_run(path)
    dataset = open_split(cfg, split)
    module = load_module(ckpt, cfg)
    out_dir = Path(out_dir)
    problem = unwritable_reason(out_dir)
    if problem:
        raise RunError(f"{out_dir}: output directory {problem}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"{out_dir}: output directory is not writable ({err.strerror or err})") from None
    n = min(num_images, len(dataset))
    images = torch.stack([dataset[i]["image"] for i in range(n)])
    with torch.no_grad():
        result = module.model(images, num_slots or module.eval_num_slots).detach()
    written = []
    for start in range(0, n, 4):
        sl = slice(start, start + 4)
        figure = decomposition_figure(images[sl], result.select(sl))
        written.append(save_figure(figure, out_dir / f"decomposition_{start // 4}.png"))
    if "boxes" in result.extras:
        written.append(save_figure(boxes_figure(images, result, result.extras["boxes"]), out_dir / "boxes.png"))
    return written
