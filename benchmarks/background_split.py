"""Where a trained model splits the background across slots (the "border stripe" of docs/results.md).

For each checkpoint: on the first N test images, the background pixels (label 0) that are not in the
slot holding most of that image's background, as a fraction of all background pixels, per column and
per row (the four largest are printed), and the ARI with those pixels given to the majority slot (what
ARI would be without the split). One line per checkpoint:

    python benchmarks/background_split.py RUN_DIR/checkpoints/step0002000.ckpt ... [--num-images 300]

``--gradients`` (recurrent MONet only) adds what holds the split pixels where they are. Under
stick-breaking, a split pixel's share between its owning slot and the background slot is set by the logit
of whichever of the two comes first; the line gives that logit's median magnitude at the split pixels and,
per loss term, the median of the gradient-descent step on it in the direction that hands the pixel back
to the background slot (positive: the term pulls the pixel back; negative: it holds it where it is): the
mixture likelihood through the masks directly, through the component encoder's log-mask input of the
background slot, of the owning slot and of the others, the mask KL and KL(z). The likelihood is
unweighted (GECO's lambda is printed).
"""

from __future__ import annotations

import argparse

import torch

from scenedecomp.inference.loaders import open_split
from scenedecomp.inference.run import find_run, load_weights
from scenedecomp.metrics.segmentation import ari
from scenedecomp.models.masks import stick_breaking_log_masks
from scenedecomp.models.monet import gaussian_kl, mask_kl, mixture_nll


def gradient_paths(model, images: torch.Tensor, owner: torch.Tensor, split: torch.Tensor,
                   background_slot: torch.Tensor) -> str:
    """Median ``dL/da_owner`` at the ``split`` pixels ``[N,H,W]`` (``owner``: ``[N,H,W]`` slot per pixel)."""
    loss_cfg = model.cfg.loss
    with torch.no_grad():
        _, logits = model.attention(images, model.num_slots, return_logits=True)
    logits.requires_grad_(True)
    log_masks = stick_breaking_log_masks(logits)  # [N,K,1,H,W]
    n, k = log_masks.shape[:2]
    sigmas = model.slot_sigmas(k, images)
    slots = torch.arange(k)[None, :, None, None, None]
    is_bg = slots == background_slot[:, None, None, None, None]
    owns_split = ((owner[:, None, None] == slots) & split[:, None, None]).flatten(2).any(2)[..., None, None, None]

    def via_encoders(which: torch.Tensor) -> torch.Tensor:  # gradient through these slots' encoder inputs only
        return mixture_nll(images, fixed, model.components(images, torch.where(which, log_masks, fixed))[2], sigmas)

    fixed = log_masks.detach()
    mean, logvar, slot_means, mask_logits = model.components(images, log_masks)  # eval mode: z = mean
    terms = {
        "likelihood directly": mixture_nll(images, log_masks, slot_means.detach(), sigmas),
        "via the background slot's encoder": via_encoders(is_bg),
        "via the owner's encoder": via_encoders(owns_split & ~is_bg),
        "via the other encoders": via_encoders(~owns_split & ~is_bg),
        "mask KL": loss_cfg.gamma * mask_kl(log_masks, mask_logits),
        "KL(z)": loss_cfg.beta * gaussian_kl(mean, logvar).view(n, -1).sum(1),
    }
    bg_map = background_slot[:, None, None].expand_as(owner)
    first = torch.minimum(owner, bg_map)  # the logit that splits the pixel between the two (< K-1)
    toward_bg = torch.where(first == bg_map, -1.0, 1.0)  # raise the background slot's logit, or lower the owner's
    index = first.clamp(max=k - 2)[:, None, None]  # [N,1,1,H,W]
    magnitude = logits.detach().gather(1, index)[:, 0, 0][split].abs().median()
    parts = []
    for name, term in terms.items():
        grad, = torch.autograd.grad(term.sum(), logits, retain_graph=True)
        parts.append(f"{name} {(toward_bg * grad.gather(1, index)[:, 0, 0])[split].median():+.3f}")
    lam = f"{model.geco_lambda.item():.2f}" if hasattr(model, "geco_lambda") else "none"
    return (f"  at {int(split.sum())} split pixels (owners {torch.bincount(owner[split], minlength=k).tolist()}, "
            f"background slots {torch.bincount(background_slot, minlength=k).tolist()}): deciding logit |a| "
            f"{magnitude:.1f}; pull back to the background slot (GECO lambda {lam}): " + ", ".join(parts))


def background_split(path: str, num_images: int, gradients: bool = False) -> str:
    _, ckpt, cfg = find_run(path)
    model = load_weights(ckpt, cfg).model
    dataset = open_split(cfg, "test")
    n = min(num_images, len(dataset))
    images = torch.stack([dataset[i]["image"] for i in range(n)])
    labels = torch.stack([torch.as_tensor(dataset[i]["mask"]) for i in range(n)])
    with torch.no_grad():
        out = model(images)
    pred = out.predicted_labels()  # [N,H,W]
    background = labels == 0
    per_slot = torch.stack([((pred == k) & background).sum((1, 2)) for k in range(out.num_slots)], 1)
    majority = per_slot.argmax(1)[:, None, None].expand_as(pred)
    split = background & (pred != majority)
    merged = torch.where(split, majority, pred)
    by_col = split.float().sum((0, 1)) / background.float().sum((0, 1)).clamp(min=1)
    by_row = split.float().sum((0, 2)) / background.float().sum((0, 2)).clamp(min=1)

    def top(values: torch.Tensor) -> str:
        order = values.argsort(descending=True)[:4].tolist()
        return " ".join(f"{i}:{values[i]:.2f}" for i in order)

    line = (f"{ckpt}: FG-ARI {ari(labels, pred, ignore_background=True).nanmean():.3f} "
            f"ARI {ari(labels, pred).mean():.3f} ARI(split merged) {ari(labels, merged).mean():.3f} "
            f"background outside its majority slot {split.sum() / background.sum():.3f} | "
            f"columns {top(by_col)} | rows {top(by_row)}")
    if gradients:
        line += "\n" + gradient_paths(model, images, pred, split, per_slot.argmax(1))
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--gradients", action="store_true", help="what holds the split (see above)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in args.checkpoints:
        print(background_split(path, args.num_images, args.gradients), flush=True)


if __name__ == "__main__":
    main()
