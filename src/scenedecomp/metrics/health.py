"""Training-health checks: pure functions that recognise the common ways a slot model fails.

:func:`image_statistics` turns one batch of masks (and, where the data has it, ground truth) into per-image
statistics; :func:`health_report` turns the statistics of a whole validation set into measured values and
warnings, each one line with the value and what to try (``docs/troubleshooting.md`` explains each).

Label-free (any data, image folders included):

- ``collapse``: one slot takes at least 95 % of the pixels (argmax) in at least 75 % of the images;
- ``unused_slots``: slots that own no pixels (at least 0.5 % of an image) in any image;
- ``background_split`` (without ground truth): the image border, usually background, is split: the slot
  holding most of it holds a median below 80 % of it;
- ``decoded_masks_no_layout`` (models with decoded masks, MONet's component VAE): the decoded masks agree
  with the attention's masks on the foreground: on the pixels outside the attention's largest slot, the
  decoded argmax is the attention's slot on less than 25 % of them (mean over images).

With ground truth (``mask`` label maps):

- ``collapse`` counts only images whose ground truth is not itself one segment covering 90 %;
- ``unused_slots`` stays silent when no scene has more segments than the slots in use;
- ``background_split``: the slot holding most of the true background holds a median below 90 % of it;
- ``decoded_masks_no_layout`` also fires when decoded MSC is below half the attention's MSC;
- ``merged_objects``: in at least 30 % of the images with two or more objects, one slot holds the
  majority of two or more objects (reported with the share of those merges between similar colours).
  Only objects that show at least 1 % of the image count (``MIN_OBJECT_SHARE``): a sliver of an occluded
  sprite given to its occluder's slot is a merge by the letter but not a failure (a model at held-out
  FG-ARI 0.90 on 32x32 sprites merged 29 % of its multi-object validation images counting every visible
  pixel, 23 % counting objects of 10 pixels or more).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

COLLAPSE_SHARE = 0.95
COLLAPSE_IMAGES = 0.75
USED_SHARE = 0.005
BORDER_SPLIT = 0.80
BACKGROUND_SPLIT = 0.90
DECODED_AGREEMENT = 0.25
DECODED_MSC_RATIO = 0.5
MERGED_IMAGES = 0.30
MIN_OBJECT_SHARE = 0.01  # objects smaller than this share of the image are not counted as merged
SIMILAR_COLOUR = 0.15  # RMS difference of two objects' mean RGB colours, in [0, 1] units
MIN_IMAGES = 8

DOCS = "docs/troubleshooting.md"
ADVICE = {
    "collapse": "try weighting the reconstruction up (model.loss.geco_mse_target, as monet-demo does), a lower "
                "model.loss.beta, or more steps (a MONet often holds everything in one slot for its first ~500 steps)",
    "unused_slots": "expected when no scene needs that many slots; otherwise AIR: another seed or a higher "
                    "model.air.z_pres_prob; MONet: more steps or the monet-demo recipe (GECO)",
    "background_split": "try model.component.detach_mask_input=true (as monet-demo does), or more steps",
    "decoded_masks_no_layout": "the latents hold colour, not position: try model.loss.gamma_decoder=20 and, "
                               "with GECO, model.loss.geco_scope=component and model.loss.geco_min_weight=8 "
                               "(as monet-demo does), or more steps",
    "merged_objects": "try more steps or more slots (model.num_slots); objects of one colour in one slot mean the "
                      "masks follow colour: a lower GECO cap (model.loss.geco_max_weight); a GECO lambda that fell "
                      "low lets the attention follow the decoded masks: model.loss.geco_min_weight (monet-demo: 8); "
                      "AIR: another seed",
}


def _border(h: int, w: int, device) -> Tensor:
    border = torch.zeros(h, w, dtype=torch.bool, device=device)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    return border


@torch.no_grad()
def image_statistics(log_masks: Tensor, image: Tensor | None = None, decoded_log_masks: Tensor | None = None,
                     true_masks: Tensor | None = None, background_labels: Sequence[int] = (0,)) -> dict[str, Tensor]:
    """Per-image health statistics of one batch.

    Args:
        log_masks: ``[B,K,1,H,W]`` the model's log masks (``ModelOutput.log_masks``).
        image: ``[B,C,H,W]`` the inputs (for the colours of merged objects).
        decoded_log_masks: ``[B,K,1,H,W]`` masks decoded from each slot's latent alone, if the model has them
            (``extras["recon_log_masks"]``).
        true_masks: ``[B,H,W]`` ground-truth label maps, if any.
        background_labels: the ground truth's background labels.

    Returns:
        ``{name: [B]}`` float64 (``slot_share`` ``[B,K]``); NaN where a statistic is undefined for an image:
        ``slot_share`` (each slot's share of the pixels by argmax), ``top_share``, ``border_top_share`` (the
        share of the border held by the slot holding most of it), ``decoded_agreement`` (the share of the
        attention's foreground pixels whose decoded argmax is the attention's slot); with ground truth
        ``collapse_counts`` (1 where the image could be split, i.e. its largest true segment is below 90 %),
        ``true_segments`` (segments in the image), ``background_top_share``, ``merged`` (0/1 over images with
        two or more objects) and ``merged_similar_colour`` (0/1 over images with a merge).
    """
    b, k = log_masks.shape[:2]
    h, w = log_masks.shape[-2:]
    labels = log_masks.detach().argmax(1).reshape(b, h * w)
    # counts by bincount over (image, slot) keys: memory O(B*H*W), whatever K and the number of segments
    rows = torch.arange(b, device=labels.device)[:, None]
    counts = torch.bincount((rows * k + labels).reshape(-1), minlength=b * k).view(b, k).to(torch.float64)
    share = counts / (h * w)  # [B,K]
    top_share, top_slot = share.max(1)
    border = _border(h, w, labels.device).reshape(-1)
    on_border = torch.bincount((rows * k + labels[:, border]).reshape(-1), minlength=b * k).view(b, k)
    stats = {"slot_share": share, "top_share": top_share,
             "border_top_share": on_border.max(1).values.to(torch.float64) / int(border.sum())}
    if decoded_log_masks is not None:
        # on the attention's foreground (all but its largest slot): the share of pixels whose decoded argmax is
        # the attention's slot (decoded mask k is decoded from slot k's latent, so the slots correspond)
        decoded = decoded_log_masks.detach().argmax(1).reshape(b, h * w)
        foreground = labels != top_slot[:, None]
        agree = ((decoded == labels) & foreground).sum(1).to(torch.float64)
        pixels = foreground.sum(1)
        stats["decoded_agreement"] = torch.where(pixels > 0, agree / pixels.clamp_min(1), float("nan"))
    if true_masks is not None:
        stats.update(_truth_statistics(labels, k, true_masks, image, background_labels))
    return stats


def _truth_statistics(labels: Tensor, k: int, true_masks: Tensor, image: Tensor | None,
                      background_labels: Sequence[int]) -> dict[str, Tensor]:
    b, hw = labels.shape
    values, inverse = torch.unique(true_masks.reshape(b, hw), return_inverse=True)
    n = values.numel()
    rows = torch.arange(b, device=labels.device)[:, None]
    # pixels of true segment l in slot k, per image: [B,L,K]
    overlap = torch.bincount(((rows * n + inverse) * k + labels).reshape(-1), minlength=b * n * k)
    overlap = overlap.view(b, n, k).to(torch.float64)
    counts = overlap.sum(2)  # [B,L]
    is_bg = torch.isin(values, torch.as_tensor(list(background_labels), dtype=values.dtype, device=values.device))
    present = counts > 0
    nan = torch.full((b,), float("nan"), dtype=torch.float64, device=labels.device)
    stats = {"true_segments": present.sum(1).to(torch.float64),
             "collapse_counts": (counts.max(1).values / hw < 0.9).to(torch.float64)}
    bg_pixels = overlap[:, is_bg].sum(1)  # [B,K] background pixels per slot
    bg_total = bg_pixels.sum(1)
    stats["background_top_share"] = torch.where(bg_total > 0, bg_pixels.max(1).values / bg_total.clamp_min(1), nan)
    objects = (counts >= max(1.0, MIN_OBJECT_SHARE * hw)) & ~is_bg  # [B,L] the objects large enough to count
    owner = overlap.argmax(2)  # [B,L] the slot holding the majority of each segment
    same = (owner[:, :, None] == owner[:, None, :]) & objects[:, :, None] & objects[:, None, :]
    same &= ~torch.eye(n, dtype=torch.bool, device=same.device)
    multi = objects.sum(1) >= 2
    merged = same.flatten(1).any(1)
    stats["merged"] = torch.where(multi, merged.to(torch.float64), nan)
    if image is not None:
        c = image.shape[1]
        pixels = image.detach().reshape(b, c, hw).transpose(1, 2).reshape(-1, c).to(torch.float64)
        colours = torch.zeros(b * n, c, dtype=torch.float64, device=labels.device)
        colours = colours.index_add_(0, (rows * n + inverse).reshape(-1), pixels).view(b, n, c)
        colours = colours / counts.clamp_min(1)[..., None]
        distance = (colours[:, :, None] - colours[:, None, :]).pow(2).mean(-1).sqrt()  # [B,L,L]
        similar = (same & (distance < SIMILAR_COLOUR)).flatten(1).any(1)
        stats["merged_similar_colour"] = torch.where(merged & multi, similar.to(torch.float64), nan)
    return stats


def _mean(values: Tensor) -> float:
    values = values[~torch.isnan(values)]
    return float(values.mean()) if values.numel() else float("nan")


def _median(values: Tensor) -> float:
    values = values[~torch.isnan(values)]
    return float(values.median()) if values.numel() else float("nan")


def health_report(stats: Mapping[str, Tensor], metrics: Mapping[str, float] | None = None) -> dict:
    """Measured values and warnings from the per-image statistics of a validation set.

    Args:
        stats: :func:`image_statistics` outputs concatenated over the images.
        metrics: the validation means (``msc``, ``decoded_msc``), if any.

    Returns:
        ``{"num_images", "values": {name: float}, "warnings": [{"code", "value", "message"}]}``; ``message``
        is one line: what was measured and what to try.
    """
    metrics = metrics or {}
    share = stats["slot_share"]
    n, k = share.shape
    values: dict[str, float] = {}
    warnings: list[dict] = []

    def warn(code: str, value: float, what: str) -> None:
        warnings.append({"code": code, "value": round(value, 4),
                         "message": f"health: {code}: {what}; {ADVICE[code]} ({DOCS})"})

    if n < MIN_IMAGES:
        return {"num_images": n, "values": values, "warnings": warnings}
    truth = "true_segments" in stats
    top = stats["top_share"]
    counted = stats["collapse_counts"] > 0 if truth else torch.ones_like(top, dtype=torch.bool)
    collapsed = (top >= COLLAPSE_SHARE) & counted
    values["collapsed_images"] = float(collapsed.sum() / counted.sum()) if counted.any() else float("nan")
    values["median_top_share"] = _median(top)
    if counted.sum() >= MIN_IMAGES and values["collapsed_images"] >= COLLAPSE_IMAGES:
        slot = int(torch.mode(share[collapsed].argmax(1)).values) if collapsed.any() else -1
        warn("collapse", values["collapsed_images"],
             f"one slot (mostly slot {slot}) takes >= {COLLAPSE_SHARE:.0%} of the pixels in "
             f"{values['collapsed_images']:.0%} of {int(counted.sum())} validation images (median share "
             f"{values['median_top_share']:.2f})")

    used = (share >= USED_SHARE).any(0)
    unused = [i for i in range(k) if not used[i]]
    values["used_slots"] = float(k - len(unused))
    needed = float(stats["true_segments"].max()) if truth else float("inf")
    if unused and needed > k - len(unused):
        detail = f"; scenes have up to {int(needed)} segments" if truth else ""
        warn("unused_slots", float(len(unused)),
             f"slot{'s' if len(unused) > 1 else ''} {', '.join(map(str, unused))} of {k} "
             f"own{'' if len(unused) > 1 else 's'} no pixels in any of "
             f"{n} validation images{detail}")

    if truth and "background_top_share" in stats:
        values["background_top_share"] = _median(stats["background_top_share"])
        if values["background_top_share"] < BACKGROUND_SPLIT:
            split = stats["background_top_share"]
            frac = _mean((split < BACKGROUND_SPLIT).to(torch.float64).where(~torch.isnan(split), split))
            warn("background_split", values["background_top_share"],
                 f"the slot holding most of the true background holds a median "
                 f"{values['background_top_share']:.0%} of it ({frac:.0%} of images below {BACKGROUND_SPLIT:.0%})")
    else:
        values["border_top_share"] = _median(stats["border_top_share"])
        if values["border_top_share"] < BORDER_SPLIT:
            warn("background_split", values["border_top_share"],
                 f"the image border (usually background) is split: the slot holding most of it holds a median "
                 f"{values['border_top_share']:.0%} of it")

    if "decoded_agreement" in stats:
        values["decoded_agreement"] = _mean(stats["decoded_agreement"])
        msc, dmsc = metrics.get("msc"), metrics.get("decoded_msc")
        low_msc = msc is not None and dmsc is not None and msc >= 0.2 and dmsc < DECODED_MSC_RATIO * msc
        if values["decoded_agreement"] < DECODED_AGREEMENT or low_msc:
            extra = f"; decoded MSC {dmsc:.2f} vs the attention's {msc:.2f}" if msc is not None and dmsc is not None \
                else ""
            warn("decoded_masks_no_layout", values["decoded_agreement"],
                 f"the masks decoded from the latents pick the attention's slot on "
                 f"{values['decoded_agreement']:.0%} of the foreground pixels{extra}")

    if "merged" in stats:
        values["merged_images"] = _mean(stats["merged"])
        multi = int((~torch.isnan(stats["merged"])).sum())
        if "merged_similar_colour" in stats:
            values["merged_similar_colour"] = _mean(stats["merged_similar_colour"])
        if multi >= MIN_IMAGES and values["merged_images"] >= MERGED_IMAGES:
            colour = values.get("merged_similar_colour", float("nan"))
            by_colour = f"; {colour:.0%} of those merges join objects of similar colour" if colour == colour else ""
            warn("merged_objects", values["merged_images"],
                 f"one slot holds two or more objects in {values['merged_images']:.0%} of the {multi} validation "
                 f"images with several objects{by_colour}")
    return {"num_images": n, "values": {k_: round(v, 4) if v == v else None for k_, v in values.items()},
            "warnings": warnings}
