"""Figures: decompositions, training curves, AIR boxes. All return matplotlib figures (Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..models.output import ModelOutput  # noqa: E402

PALETTE = np.array(plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors)


def _to_rgb(image: torch.Tensor) -> np.ndarray:
    """``[C,H,W]`` in [0,1] -> ``[H,W,3]`` numpy for imshow (grey images are repeated)."""
    arr = image.detach().float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[..., :3]


def label_colours(labels: torch.Tensor) -> np.ndarray:
    """``[H,W]`` integer label map -> ``[H,W,3]`` colours (slot k gets palette colour k)."""
    return PALETTE[labels.cpu().numpy() % len(PALETTE)]


def decomposition_figure(images: torch.Tensor, out: ModelOutput, max_images: int = 4) -> Figure:
    """The MONet decomposition figure.

    One row per image: input, reconstruction mixture, colour-coded argmax segmentation, then for each
    slot its unmasked reconstruction and its masked reconstruction ``m_k * x_k`` (on white). Models with
    decoded masks (``extras["recon_log_masks"]``, MONet's component VAE) get a second row per image: the
    generative reconstruction ``sum_k softmax(mask logits)_k * x_k``, the decoded masks' argmax
    segmentation, each decoded mask (grey, white = 1) and each ``x_k`` under its decoded mask.
    ``images [B,C,H,W]``; ``out`` holds ``log_masks [B,K,1,H,W]``, ``slot_recons``, ``recon``.
    """
    n = min(max_images, images.shape[0])
    k = out.num_slots
    masks = out.log_masks.exp()
    labels = out.predicted_labels()
    decoded = out.extras.get("recon_log_masks")
    rows_per_image = 1 if decoded is None else 2
    cols = 3 + 2 * k
    fig, axes = plt.subplots(n * rows_per_image, cols, figsize=(1.3 * cols, 1.4 * n * rows_per_image + 0.3),
                             squeeze=False)
    for i in range(n):
        rows = []
        panels = [("input", _to_rgb(images[i])), ("recon", _to_rgb(out.recon[i])),
                  ("segmentation", label_colours(labels[i]))]
        for s in range(k):
            panels.append((f"slot {s}", _to_rgb(out.slot_recons[i, s])))
        for s in range(k):
            masked = masks[i, s] * out.slot_recons[i, s] + (1 - masks[i, s])
            panels.append((f"masked {s}", _to_rgb(masked)))
        rows.append(panels)
        if decoded is not None:
            dec = decoded[i].exp()  # [K,1,H,W]
            generative = (dec * out.slot_recons[i]).sum(0)
            panels = [None, ("generative recon", _to_rgb(generative)),
                      ("decoded segm.", label_colours(dec.argmax(0)[0]))]
            for s in range(k):
                panels.append((f"decoded mask {s}", _to_rgb(dec[s])))
            for s in range(k):
                panels.append((f"x_{s} * decoded {s}", _to_rgb(dec[s] * out.slot_recons[i, s] + 1 - dec[s])))
            rows.append(panels)
        for r, panels in enumerate(rows):
            for ax, panel in zip(axes[i * rows_per_image + r], panels):
                ax.set_xticks([])
                ax.set_yticks([])
                if panel is None:
                    ax.axis("off")
                    continue
                title, img = panel
                ax.imshow(img, interpolation="nearest")
                if i == 0:
                    ax.set_title(title, fontsize=7 if r == 0 else 6)
    fig.tight_layout(pad=0.2)
    return fig


def boxes_figure(images: torch.Tensor, out: ModelOutput, boxes: torch.Tensor, max_images: int = 8) -> Figure:
    """AIR figure: input with one coloured box per present object and the inferred count, and the
    reconstruction. ``boxes [B,N,4]`` as pixel ``(x0, y0, x1, y1)``; ``out.extras['z_pres'] [B,N]``."""
    from matplotlib.patches import Rectangle

    n = min(max_images, images.shape[0])
    z_pres = out.extras["z_pres"]
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(_to_rgb(images[i]), interpolation="nearest")
        axes[1, i].imshow(_to_rgb(out.recon[i]), interpolation="nearest")
        count = int(z_pres[i].sum())
        for step in range(boxes.shape[1]):
            if z_pres[i, step] > 0.5:
                x0, y0, x1, y1 = boxes[i, step].tolist()
                for row in range(2):
                    axes[row, i].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5,
                                                     edgecolor=PALETTE[step + 1]))
        axes[0, i].set_title(f"count {count}", fontsize=8)
        for row in range(2):
            axes[row, i].set_xticks([])
            axes[row, i].set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("recon")
    fig.tight_layout(pad=0.2)
    return fig


CURVE_KEYS = ("fg_ari", "ari", "msc", "decoded_fg_ari", "decoded_msc", "count_accuracy")


def curve_figure(history: list[dict], keys: tuple[str, ...] = CURVE_KEYS) -> Figure:
    """Validation metrics against training wall-clock minutes (from ``history.jsonl`` rows)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    minutes = [row["seconds"] / 60 for row in history]
    for key in keys:
        values = [row.get(key, np.nan) for row in history]
        if not all(np.isnan(values)):
            ax.plot(minutes, values, marker="o", ms=3, label=key)
    ax.set_xlabel("training wall-clock (min)")
    ax.set_ylabel("validation metric")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG atomically (temp file, then rename) and close it."""
    from ..safeio import atomic_write_bytes

    try:
        return atomic_write_bytes(path, writer=lambda fh: fig.savefig(fh, dpi=dpi, format="png"))
    finally:
        plt.close(fig)


def loss_curves_figure(scalars: dict[str, list[tuple[int, float]]]) -> Figure | None:
    """The training loss terms and the learning rate against the step, one panel each (TensorBoard scalars
    ``{tag: [(step, value), ...]}``); None when there are none."""
    tags = [t for t in sorted(scalars) if t.startswith("train/") or t.startswith("lr")]
    tags = [t for t in tags if len(scalars[t]) >= 1]
    if not tags:
        return None
    cols = min(3, len(tags))
    rows = (len(tags) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.4 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        steps, values = zip(*scalars[tag])
        ax.plot(steps, values, lw=1)
        ax.set_title(tag, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.set_xlabel("step", fontsize=7)
    for ax in list(axes.flat)[len(tags):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def validation_figure(history: list[dict], scalars: dict[str, list[tuple[int, float]]]) -> Figure | None:
    """The validation metrics and the validation loss against the step, from ``history.jsonl`` rows (else
    the TensorBoard ``val/*`` scalars); None when there are none."""
    keys = ("fg_ari", "ari", "msc", "sc", "decoded_fg_ari", "decoded_msc", "count_accuracy")
    series = {}
    if history:
        for key in keys:
            points = [(row["step"], row[key]) for row in history if row.get(key) is not None]
            if points:
                series[key] = points
        loss = [(row["step"], row["loss"]) for row in history if row.get("loss") is not None]
    else:  # fall back to the TensorBoard validation scalars
        for key in keys:
            if f"val/{key}" in scalars:
                series[key] = scalars[f"val/{key}"]
        loss = scalars.get("val/loss", [])
    if not series and not loss:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 2.8))
    for key, points in series.items():
        steps, values = zip(*points)
        axes[0].plot(steps, values, marker="o", ms=3, label=key)
    axes[0].set_ylim(0, 1)
    axes[0].set_title("validation metrics", fontsize=8)
    axes[0].legend(fontsize=7)
    if loss:
        steps, values = zip(*loss)
        axes[1].plot(steps, values, marker="o", ms=3)
    axes[1].set_title("validation loss", fontsize=8)
    for ax in axes:
        ax.set_xlabel("step", fontsize=7)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig
