"""Latent traversals, slot swaps and the component-VAE figure (thesis Figures 5.4-5.6).

MONet (and MONet-RN50/RN50*): for one image and one slot ``k``, every row is one latent dimension ``d``;
the columns sweep ``z_k[d]`` over ``steps`` values and keep every other latent at its posterior mean. The
sweep (``sigma``) is

- ``"data"``: from ``value_range[d][0]`` to ``value_range[d][1]``, the range the dimension takes over a
  test set (``write_traversals`` uses the 2nd to 98th percentile of the posterior means of every slot of 64
  test images): the values the model actually uses for real objects;
- ``"prior"``: ``mu_k[d] + t`` for ``t`` in ``-span..+span`` (the prior's standard deviation is 1);
- ``"posterior"``: ``mu_k[d] + t * sigma_k[d]`` with the slot's own posterior standard deviation (a used
  dimension's is often ~0.05, so this barely moves the decoder).

Each cell shows the slot's decoded component times its decoded mask (on white) and the recomposed scene
``sum_j softmax(mask logits)_j * x_j`` from all slots' decoded components and masks, so changes of shape
and position are visible, not only of colour. Rows are all dimensions, or the top ``N``, ranked by how much
they move the slot's decoded mask over the sweep (:func:`mask_movement`).

:func:`choose_traversal` picks, among candidate images and their foreground slots, the pair whose
dimensions move the decoded mask most, so the default figure shows an object that moves. :func:`swap_slots`
decodes scenes in which one slot's latent is replaced by a slot latent of another image (the object-level
edit: the object of image B appears in scene A).

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
    return model.latent_decoder == "glimpse"


def _sweep(mu: torch.Tensor, logvar: torch.Tensor, sigma: str, steps: int, span: float,
           value_range: torch.Tensor | None) -> torch.Tensor:
    """``[D,S]`` the values each dimension of one slot takes across the columns."""
    t = torch.linspace(-span, span, steps)
    if sigma == "data":
        if value_range is None:
            raise ValueError("sigma='data' needs value_range [D,2] (the latents' range over a data set)")
        lo, hi = value_range[:, 0:1].to(mu), value_range[:, 1:2].to(mu)
        return lo + (hi - lo) * torch.linspace(0, 1, steps).to(mu)[None]
    scale = torch.ones_like(mu) if sigma == "prior" else (0.5 * logvar).exp()
    return mu[:, None] + t.to(mu)[None] * scale[:, None]


def _decode_scenes(model, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``z [N,K,D]`` -> ``(means [N,K,C,H,W], decoded masks [N,K,1,H,W])`` (softmax over the K slots)."""
    n, k, d = z.shape
    means, logits = model.component.decode(z.reshape(n * k, d))
    means = means.view(n, k, *means.shape[1:])
    return means, F.softmax(logits.view(n, k, *logits.shape[1:]), dim=1)


@torch.no_grad()
def mask_movement(model, latents: torch.Tensor, slot: int, values: torch.Tensor) -> torch.Tensor:
    """``[D]``: for each dimension of ``slot``, the mean absolute change of the slot's decoded mask between
    the two ends of its sweep ``values [D,S]`` (``latents [K,D]`` posterior means; the others held)."""
    d = latents.shape[1]
    z = latents[None, None].repeat(d, 2, 1, 1)  # [D,2,K,D]
    for dim in range(d):
        z[dim, 0, slot, dim], z[dim, 1, slot, dim] = values[dim, 0], values[dim, -1]
    _, masks = _decode_scenes(model, z.reshape(d * 2, *latents.shape))
    masks = masks.view(d, 2, *masks.shape[1:])[:, :, slot]
    return (masks[:, 0] - masks[:, 1]).abs().flatten(1).mean(1)


@torch.no_grad()
def choose_traversal(model, images: torch.Tensor, num_slots: int | None = None, sigma: str = "data",
                     value_range: torch.Tensor | None = None, steps: int = 7, span: float = 3.0,
                     top: int = 3) -> tuple[int, int]:
    """``(image index, slot)`` among ``images [N,C,H,W]`` and their foreground slots (1..K-1) whose ``top``
    dimensions move the decoded mask most over the sweep (the sum of their :func:`mask_movement`)."""
    model.eval()
    out = model(images, num_slots)
    logvar = out.extras.get("latent_logvar")
    if logvar is None or model.latent_decoder != "slot_vae":
        return 0, largest_foreground_slot(out)
    best, choice = -1.0, (0, largest_foreground_slot(out))
    for i in range(images.shape[0]):
        for slot in range(1, out.num_slots):
            values = _sweep(out.latents[i, slot], logvar[i, slot], sigma, steps, span, value_range)
            score = float(mask_movement(model, out.latents[i], slot, values).topk(
                min(top, values.shape[0])).values.sum())
            if score > best:
                best, choice = score, (i, slot)
    return choice


@torch.no_grad()
def traverse(model, image: torch.Tensor, slot: int | None = None, top: int | None = None, steps: int = 7,
             span: float = 3.0, sigma: str = "prior", num_slots: int | None = None,
             value_range: torch.Tensor | None = None) -> dict:
    """Decode the traversal of one slot of ``image [C,H,W]`` (see the module docstring for ``sigma``).

    Returns ``{"values" [R,S], "dims" [R], "movement" [R] (MONet) or None, "kl" [R] or None, "slot",
    "component" [R,S,C,H,W], "scene" [R,S,C,H,W] or None, "model": "monet"|"air", "sigma"}``.
    """
    if sigma not in ("prior", "posterior", "data"):
        raise ValueError(f"sigma must be 'prior', 'posterior' or 'data', got {sigma!r}")
    model.eval()
    out = model(image[None], num_slots)
    k = out.num_slots
    slot = largest_foreground_slot(out) if slot is None else int(slot)
    if not 0 <= slot < k:
        raise ValueError(f"slot {slot} does not exist (K={k})")
    if _is_air(model):
        return _traverse_air(model, out, slot, top, torch.linspace(-span, span, steps))
    mu = out.latents[0]  # [K,D]
    logvar = out.extras.get("latent_logvar")
    if logvar is None:
        raise ValueError("the model reports no latent log-variance; traversals need a VAE posterior")
    logvar = logvar[0]
    d = mu.shape[1]
    kl = 0.5 * (mu[slot] ** 2 + logvar[slot].exp() - 1 - logvar[slot])  # [D]
    values = _sweep(mu[slot], logvar[slot], sigma, steps, span, value_range)  # [D,S]
    movement = mask_movement(model, mu, slot, values)
    dims = torch.argsort(movement, descending=True)
    if top is not None:
        dims = dims[: max(1, min(int(top), d))]
    r, s = len(dims), steps
    z = mu[None, None].repeat(r, s, 1, 1)  # [R,S,K,D]
    for i, dim in enumerate(dims.tolist()):
        z[i, :, slot, dim] = values[dim]
    means, masks = _decode_scenes(model, z.reshape(r * s, k, d))
    means, masks = means.view(r, s, *means.shape[1:]), masks.view(r, s, *masks.shape[1:])
    component = masks[:, :, slot] * means[:, :, slot] + (1 - masks[:, :, slot])
    scene = (masks * means).sum(2)
    offsets = None if sigma == "data" else torch.linspace(-span, span, steps)
    return {"values": values[dims], "offsets": offsets, "dims": dims, "kl": kl[dims], "movement": movement[dims],
            "slot": slot,
            "component": component.clamp(0, 1), "scene": scene.clamp(0, 1), "model": "monet", "sigma": sigma,
            "image": image, "recon": out.recon[0]}


@torch.no_grad()
def decode_scenes(model, latents: torch.Tensor) -> torch.Tensor:
    """``latents [N,K,D]`` -> ``[N,C,H,W]``: each scene decoded from its slot latents alone (every slot's
    decoded image under its decoded mask)."""
    means, masks = _decode_scenes(model, latents)
    return (masks * means).sum(1).clamp(0, 1)


def swap_slots(model, latents: torch.Tensor, target: tuple[int, int], source: tuple[int, int]) -> torch.Tensor:
    """``[2,C,H,W]``: scene ``target[0]`` decoded with its slot ``target[1]``'s latent replaced by slot
    ``source[1]`` of scene ``source[0]``, and the reverse swap (``latents [N,K,D]``, posterior means)."""
    (ti, tk), (si, sk) = target, source
    z = torch.stack([latents[ti].clone(), latents[si].clone()])
    z[0, tk], z[1, sk] = latents[si, sk], latents[ti, tk]
    return decode_scenes(model, z)


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
    return {"values": mu[dims, None] + t[None], "offsets": t, "dims": dims, "kl": None, "movement": None,
            "slot": slot, "component": glimpse.clamp(0, 1), "scene": None,
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
    offsets = data.get("offsets")
    for i in range(r):
        for b, (name, tensor) in enumerate(blocks):
            for j in range(s):
                ax = axes[i, b * (s + 1) + j]
                ax.imshow(_to_rgb(tensor[i, j]), interpolation="nearest")
                if i == 0:
                    if offsets is not None:
                        value = float(offsets[j])
                        ax.set_title(f"{value:+.0f}" if value.is_integer() else f"{value:+.1f}", fontsize=6)
                    elif j in (0, s - 1):
                        ax.set_title("low" if j == 0 else "high", fontsize=6)
                if i == 0 and j == s // 2:
                    ax.text(0.5, 1.9, name, transform=ax.transAxes, ha="center", fontsize=7)
        label = f"z{int(data['dims'][i])}"
        if data.get("movement") is not None:
            lo, hi = float(data["values"][i, 0]), float(data["values"][i, -1])
            label += f"\n{lo:+.1f}..{hi:+.1f}\nmoves {float(data['movement'][i]):.3f}"
        elif data["kl"] is not None:
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
    sweep = {"data": "each dimension over its range on test images (2nd-98th percentile)",
             "prior": "posterior mean -3..+3 prior std", "posterior": "posterior mean -3..+3 posterior std"}
    fig.suptitle((title + ": " if title else "") + f"slot {data['slot']} traversal, {sweep[data['sigma']]}",
                 fontsize=8)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.96))
    return fig


def swap_figure(images: torch.Tensor, generative: torch.Tensor,
                swaps: list[tuple[tuple[int, int], tuple[int, int], torch.Tensor]], title: str = "") -> Figure:
    """One row per swap ``(target, source, swap_slots result)``: image A, A decoded from its latents
    (``generative``, :func:`decode_scenes`), image B, B decoded, A with B's object (A's slot latent replaced
    by B's), B with A's object."""
    fig, axes = plt.subplots(len(swaps), 6, figsize=(7.2, 1.3 * len(swaps) + 0.5), squeeze=False)
    for row, ((ti, tk), (si, sk), swapped) in enumerate(swaps):
        panels = [(f"A (image {ti})", images[ti]), ("A decoded", generative[ti]),
                  (f"B (image {si})", images[si]), ("B decoded", generative[si]),
                  (f"A, slot {tk} <- B slot {sk}", swapped[0]), (f"B, slot {sk} <- A slot {tk}", swapped[1])]
        for ax, (name, picture) in zip(axes[row], panels):
            ax.imshow(_to_rgb(picture), interpolation="nearest")
            ax.set_title(name, fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle((title + ": " if title else "") + "scenes decoded from latents, one slot swapped between images",
                 fontsize=8)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.95))
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


__all__ = ["choose_traversal", "component_figure", "decode_scenes", "largest_foreground_slot", "mask_movement",
           "swap_figure", "swap_slots", "traversal_figure", "traverse"]
