"""``evaluate --disentanglement``: run a model over a split with per-object factors, match slots to objects
and score the matched latents (:mod:`scenedecomp.metrics.disentanglement`); draw the importance matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import BadInput
from ..metrics.disentanglement import disentanglement_metrics, matched_samples


class DisentanglementError(BadInput, ValueError):
    """The split cannot be scored (no factors, too few matched objects); one-line message."""


@torch.no_grad()
def collect(loaded, loader: DataLoader, num_slots: int | None = None, images: bool = False) -> dict[str, np.ndarray]:
    """Latents ``[N,K,D]``, predicted and true label maps ``[N,H,W]``, ``visibility [N,O]`` and factors
    (and the images ``[N,C,H,W]`` with ``images``)."""
    loaded.model.eval()
    device = loaded.device
    parts: dict[str, list] = {"latents": [], "pred": [], "true": [], "visibility": [], "image": []}
    factors: dict[str, list] = {}
    for batch in loader:
        if "factors" not in batch or "mask" not in batch:
            raise DisentanglementError("the split has no per-object factors and masks to score latents against")
        out = loaded.model(batch["image"].to(device), num_slots or loaded.config.model.eval_num_slots)
        parts["latents"].append(out.latents.float().cpu().numpy())
        parts["pred"].append(out.predicted_labels().cpu().numpy())
        parts["true"].append(batch["mask"].numpy())
        if images:
            parts["image"].append(batch["image"].numpy())
        vis = batch.get("visibility")
        parts["visibility"].append(vis.numpy() if vis is not None else None)
        for name, value in batch["factors"].items():
            factors.setdefault(name, []).append(value.numpy())
    result = {key: np.concatenate(value) for key, value in parts.items() if value and value[0] is not None}
    result["factors"] = {name: np.concatenate(value) for name, value in factors.items()}
    return result


def score_split(loaded, loader: DataLoader, num_slots: int | None = None, seed: int = 0,
                importance: str = "gbt") -> dict:
    """Collect, match and score; returns the JSON-ready dict of :func:`disentanglement_metrics` plus
    ``matched_iou_mean`` and ``latent_dim``."""
    data = collect(loaded, loader, num_slots)
    return score_codes(data["latents"], data["pred"], data, loader.dataset, seed, importance)


def score_codes(codes_per_slot: np.ndarray, pred: np.ndarray, data: dict, dataset, seed: int = 0,
                importance: str = "gbt") -> dict:
    """Score per-slot codes ``[N,K,D]`` (latents, or any features of the slots) against the objects of
    ``data`` (from :func:`collect`), matching slots to objects by the label maps ``pred [N,H,W]``.
    ``dataset`` says which label each factor row describes and which labels are background."""
    codes, factors, iou = matched_samples(codes_per_slot, pred, data["true"], data["factors"],
                                          data.get("visibility"), first_label=getattr(dataset, "factor_first_label", 1),
                                          background_labels=tuple(getattr(dataset, "background_labels", (0,))))
    if len(codes) < 20:
        raise DisentanglementError(f"only {len(codes)} slots overlap a ground-truth object; need at least 20 "
                                   "(a larger split, or a trained model)")
    result = disentanglement_metrics(codes, factors, seed=seed, importance=importance)
    result["matched_iou_mean"] = float(iou.mean())
    result["latent_dim"] = int(codes.shape[1])
    return result


def importance_figure(result: dict, title: str = ""):
    """Factor x latent importance matrix (rows factors, columns latents), with D, C, MIG in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = np.array(result["importance"]).T  # [F, D]
    factors = list(result.get("factor_names") or result["factors"])
    fig, ax = plt.subplots(figsize=(0.42 * r.shape[1] + 2.6, 0.36 * r.shape[0] + 1.6))
    image = ax.imshow(r, cmap="viridis", vmin=0, vmax=max(float(r.max()), 1e-9), aspect="auto")
    ax.set_xticks(range(r.shape[1]))
    ax.set_yticks(range(r.shape[0]), labels=factors, fontsize=8)
    ax.set_xlabel("latent dimension")
    ax.tick_params(axis="x", labelsize=7)
    for (i, j), value in np.ndenumerate(r):
        if value >= 0.1:
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color="black" if value > 0.5 * r.max() else "white")
    fig.colorbar(image, ax=ax, fraction=0.04, label=f"importance ({result.get('dci_importance_method', 'gbt')})")
    ax.set_title((title + "\n" if title else "") + f"DCI D {result['dci_disentanglement']:.2f}  "
                 f"C {result['dci_completeness']:.2f}  MIG {result['mig']:.2f}  ({result['num_objects']} objects)",
                 fontsize=8)
    fig.tight_layout()
    return fig


def write_figure(result: dict, path: Path, title: str = "") -> Path:
    from ..viz.figures import save_figure

    return save_figure(importance_figure(result, title), path)


def evaluate_disentanglement(path, metrics_path: Path, split: str = "test", num_slots: int | None = None,
                             batch_size: int | None = None, figure: Path | None = None) -> dict:
    """``evaluate --disentanglement``: score ``split`` of the run at ``path``, add the result under
    ``"disentanglement"`` to the metrics JSON at ``metrics_path`` and draw the importance matrix to
    ``figure`` (default ``<run>/figures/disentanglement_<split>.png``). Returns the result."""
    import json

    from ..errors import RunError
    from ..inference.loaders import make_loader, open_split
    from ..inference.run import find_run, load_weights
    from ..safeio import write_json

    run_dir, ckpt, cfg = find_run(path)
    if batch_size is not None:
        cfg.data.eval_batch_size = batch_size
    loaded = load_weights(ckpt, cfg, run_dir)
    num_slots = loaded.num_slots(num_slots)
    dataset = open_split(cfg, split)
    try:
        result = score_split(loaded, make_loader(cfg, dataset, train=False), num_slots, seed=cfg.seed)
    except DisentanglementError as err:
        raise RunError(f"disentanglement on {cfg.data.name} {split}: {err}") from None
    if figure is None:  # beside the metrics for a model folder (which may be the installed package)
        folder = Path(metrics_path).parent if ckpt.name == "model.safetensors" else run_dir / "figures"
        figure = folder / f"disentanglement_{split}.png"
    figure = Path(figure)
    result["figure"] = str(write_figure(result, figure, f"{cfg.name}: {cfg.data.name} {split}"))
    if metrics_path is None:  # the caller writes the result (``evaluate(..., extra=...)``)
        return result
    metrics_path = Path(metrics_path)
    payload = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    payload["disentanglement"] = result
    write_json(metrics_path, payload)
    return result
