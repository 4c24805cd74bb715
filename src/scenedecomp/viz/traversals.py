"""Latent traversals and the component-VAE figure (thesis Figures 5.4-5.6).

MONet (and MONet-RN50/RN50*): for one image and one slot ``k``, every row is one latent dimension ``d``;
the columns set ``z_k[d] = mu_k[d] + t * sigma`` for ``t`` in ``-span..+span`` (default 7 steps over
``-3..+3``) and keep every other latent at its posterior mean. ``sigma`` is 1, the prior's standard
deviation (``sigma="prior"``, default: a used dimension's posterior std is often ~0.05, so +-3 posterior
stds barely move the decoder), or the slot's own posterior std (``sigma="posterior"``). Each cell shows
the slot's decoded component times its decoded mask (on white) and the recomposed scene
``sum_j softmax(mask logits)_j * x_j`` from all slots' decoded components and masks, so changes of
shape and position are visible, not only of colour. Rows are all dimensions, or the top ``N`` by the
slot's ``KL(q(z_k[d]) || N(0,1))``, sorted by KL.

AIR: the rows traverse ``z_what`` of one step (``slot = step + 1``) and show the decoded glimpse (colour
times alpha on white; additive AIR: the patch), with ``sigma = 1`` (the prior; AIR does not report its
posterior scale) and rows in dimension order or the top ``N`` by ``|mu|``. The recomposed scene is drawn
for MONet only.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..models.output import ModelOutput  # noqa: E402
from .figures import _to_rgb  # noqa: E402


def largest_foreground_slot(out: ModelOutput, index: int = 0) -> int:
    """The slot with the most pixels in the argmax segmentation among the foreground candidates: not
    slot 0 (MONet's background slot) and not a slot covering half the image or more (a second background
    slot, as trained MONets often use); falls back to the largest slot but 0."""
    labels = out.predicted_labels()[index]
    area = torch.bincount(labels.flatten(), minlength=out.num_slots)
    if out.num_slots < 2:
        return 0
    candidates = area[1:].clone()
    small = candidates < 0.5 * labels.numel()
    if small.any() and candidates[small].max() > 0:
        candidates[~small] = -1
    return int(candidates.argmax()) + 1


def _is_air(model) -> bool:
    return hasattr(model, "what_dim") and hasattr(model, "decode") and not hasattr(model, "component")


@torch.no_grad()
def traverse(model, image: torch.Tensor, slot: int | None = None, top: int | None = None, steps: int = 7,
             span: float = 3.0, sigma: str = "prior", num_slots: int | None = None) -> dict:
    """Decode the traversal of one slot of ``image [C,H,W]``.

    Returns ``{"values" [S], "dims" [R], "kl" [R] or None, "slot", "component" [R,S,C,H,W],
    "scene" [R,S,C,H,W] or None, "model": "monet"|"air", "sigma"}``.
    """
    if sigma not in ("prior", "posterior"):
        raise ValueError(f"sigma must be 'prior' or 'posterior', got {sigma!r}")
    model.eval()
    out = model(image[None], num_slots)
    k = out.num_slots
    slot = largest_foreground_slot(out) if slot is None else int(slot)
    if not 0 <= slot < k:
        raise ValueError(f"slot {slot} does not exist (K={k})")
    t = torch.linspace(-span, span, steps)
    if _is_air(model):
        return _traverse_air(model, out, slot, top, t)
    mu = out.latents[0]  # [K,D]
    logvar = out.extras.get("latent_logvar")
    if logvar is None:
        raise ValueError("the model reports no latent log-variance; traversals need a VAE posterior")
    logvar = logvar[0]
    d = mu.shape[1]
    kl = 0.5 * (mu[slot] ** 2 + logvar[slot].exp() - 1 - logvar[slot])  # [D]
    dims = torch.argsort(kl, descending=True)
    if top is not None:
        dims = dims[: max(1, min(int(top), d))]
    scale = torch.ones(d) if sigma == "prior" else (0.5 * logvar[slot]).exp()
    r, s = len(dims), steps
    z = mu[None, None].repeat(r, s, 1, 1)  # [R,S,K,D]
    for i, dim in enumerate(dims.tolist()):
        z[i, :, slot, dim] = mu[slot, dim] + t * scale[dim]
    means, logits = model.component.decode(z.reshape(r * s * k, d))
    c, h, w = means.shape[1:]
    means = means.view(r, s, k, c, h, w)
    masks = F.softmax(logits.view(r, s, k, 1, h, w), dim=2)
    component = masks[:, :, slot] * means[:, :, slot] + (1 - masks[:, :, slot])
    scene = (masks * means).sum(2)
    return {"values": t, "dims": dims, "kl": kl[dims], "slot": slot, "component": component.clamp(0, 1),
            "scene": scene.clamp(0, 1), "model": "monet", "sigma": sigma, "image": image, "recon": out.recon[0]}


def _traverse_air(model, out: ModelOutput, slot: int, top: int | None, t: torch.Tensor) -> dict:
    if slot < 1:
        raise ValueError("AIR: slot 0 is the background; choose a step's slot (1..K-1)")
    mu = out.extras["z_what"][0, slot - 1]  # [D]
    d = mu.shape[0]
    dims = torch.argsort(mu.abs(), descending=True) if top is not None else torch.arange(d)
    if top is not None:
        dims = dims[: max(1, min(int(top), d))]
    r, s = len(dims), len(t)
    z = mu[None, None].repeat(r, s, 1)
    for i, dim in enumerate(dims.tolist()):
        z[i, :, dim] = mu[dim] + t
    colour, alpha = model.decode(z.reshape(r * s, d))
    if alpha is None:
        glimpse = colour
    else:
        glimpse = alpha * colour + (1 - alpha)
    glimpse = glimpse.view(r, s, *glimpse.shape[1:])
    return {"values": t, "dims": dims, "kl": None, "slot": slot, "component": glimpse.clamp(0, 1), "scene": None,
            "model": "air", "sigma": "prior", "image": None, "recon": out.recon[0]}


def traversal_figure(data: dict, title: str = "") -> Figure:
    """Rows = latent dimensions; columns = traversal values; left block the slot component (AIR: the
    glimpse), right block the recomposed scene (MONet)."""
    comp, scene = data["component"], data["scene"]
    r, s = comp.shape[:2]
    blocks = [("slot component" if data["model"] == "monet" else "decoded glimpse (z_what)", comp)]
    if scene is not None:
        blocks.append(("recomposed scene", scene))
    cols = s * len(blocks) + (len(blocks) - 1)
    fig, axes = plt.subplots(r, cols, figsize=(0.62 * cols + 0.9, 0.62 * r + 0.9), squeeze=False)
    values = data["values"].tolist()
    for i in range(r):
        for b, (name, tensor) in enumerate(blocks):
            for j in range(s):
                ax = axes[i, b * (s + 1) + j]
                ax.imshow(_to_rgb(tensor[i, j]), interpolation="nearest")
                if i == 0:
                    ax.set_title(f"{values[j]:+.0f}" if float(values[j]).is_integer() else f"{values[j]:+.1f}",
                                 fontsize=6)
                if i == 0 and j == s // 2:
                    ax.text(0.5, 1.9, name, transform=ax.transAxes, ha="center", fontsize=7)
        label = f"z{int(data['dims'][i])}"
        if data["kl"] is not None:
            label += f"\nKL {float(data['kl'][i]):.2f}"
        axes[i, 0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    if len(blocks) > 1:
        for i in range(r):
            axes[i, s].axis("off")
    unit = "sigma = 1 (prior std)" if data["sigma"] == "prior" else "sigma = posterior std"
    fig.suptitle((title + ": " if title else "") + f"slot {data['slot']} traversal, mean -3..+3 sigma, {unit}",
                 fontsize=8)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.96))
    return fig


@torch.no_grad()
def component_figure(model, images: torch.Tensor, num_slots: int | None = None, max_images: int = 2) -> Figure:
    """The component-VAE figure for MONet: per image three rows over the slots -- the unmasked component
    ``x_k``, ``x_k`` times the decoded mask ``softmax(mask logits)_k`` and ``x_k`` times the attention
    mask ``m_k`` (both on white) -- plus the input and the reconstruction."""
    model.eval()
    out = model(images[:max_images], num_slots)
    if "recon_log_masks" not in out.extras:
        raise ValueError("the component-VAE figure needs decoded masks (MONet)")
    n, k = images[:max_images].shape[0], out.num_slots
    decoded, attention = out.extras["recon_log_masks"].exp(), out.log_masks.exp()
    rows = [("component x_k", lambda i, s: out.slot_recons[i, s]),
            ("x_k * decoded mask", lambda i, s: decoded[i, s] * out.slot_recons[i, s] + 1 - decoded[i, s]),
            ("x_k * attention mask", lambda i, s: attention[i, s] * out.slot_recons[i, s] + 1 - attention[i, s])]
    fig, axes = plt.subplots(3 * n, k + 1, figsize=(1.15 * (k + 1) + 0.8, 1.15 * 3 * n + 0.4), squeeze=False)
    for i in range(n):
        for r, (name, get) in enumerate(rows):
            row = axes[3 * i + r]
            first = (images[i], "input") if r == 0 else (out.recon[i], "recon") if r == 1 else (None, "")
            if first[0] is not None:
                row[0].imshow(_to_rgb(first[0]), interpolation="nearest")
                row[0].set_title(first[1], fontsize=7)
            else:
                row[0].axis("off")
            for s in range(k):
                row[s + 1].imshow(_to_rgb(get(i, s)), interpolation="nearest")
                if r == 0:
                    row[s + 1].set_title(f"slot {s}", fontsize=7)
            row[1].set_ylabel(name, fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.3)
    return fig


__all__ = ["component_figure", "largest_foreground_slot", "traversal_figure", "traverse"]
