"""Where do a MONet's decoded masks lose against its attention masks? Per-object IoU by object size.

``decoded_msc`` (segmentation by the component VAE's decoded masks) sits below ``msc`` (the attention
masks). This script says which objects the difference comes from: for every ground-truth object of the
split it takes the best IoU of any attention segment and of any decoded segment (the argmax over slots of
each), the share of the object's pixels the decoded argmax gives to the slot that holds the object in the
attention masks, and the decoded probability of that slot under the object; it bins them by the object's
visible area (a fraction of the image, so the bins mean the same at any image size).

    python benchmarks/decoded_mask_errors.py --run runs/monet-demo --out e.json   # one run
    python benchmarks/decoded_mask_errors.py --summarize A.json B.json ...      # mean +- std over runs

One JSON object: the mean IoUs, the share of objects the decoded masks miss (best IoU < 0.2) and one row per
area bin.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# visible area as a fraction of the image; at 32x32: 15, 31, 51 and 82 pixels
BINS = (0.0, 0.015, 0.03, 0.05, 0.08, 1.01)
MISSED = 0.2  # a best IoU below this: the decoded masks have no segment for the object


def object_ious(true: np.ndarray, pred: np.ndarray, background_labels=(0,)) -> list[tuple[int, int, float]]:
    """``(label, visible pixels, best IoU over pred's segments)`` for every non-background label of
    ``true [H,W]`` against the label map ``pred [H,W]``."""
    rows = []
    segments = [pred == s for s in np.unique(pred)]
    for label in np.unique(true):
        if label in background_labels:
            continue
        obj = true == label
        best = max((obj & seg).sum() / (obj | seg).sum() for seg in segments)
        rows.append((int(label), int(obj.sum()), float(best)))
    return rows


def bin_rows(objects: np.ndarray, pixels: int) -> list[dict]:
    """Per area bin: the number of objects and the mean of each column of ``objects`` ``[N, 5]`` (area,
    attention IoU, decoded IoU, decoded share of the attention slot, its decoded probability)."""
    fraction = objects[:, 0] / pixels
    rows = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        inside = objects[(fraction >= lo) & (fraction < hi)]
        rows.append({"area_from": lo, "area_to": min(hi, 1.0), "objects": int(len(inside)),
                     **{name: float(inside[:, i].mean()) if len(inside) else None
                        for i, name in enumerate(("pixels", "attention_iou", "decoded_iou", "decoded_agrees",
                                                  "decoded_probability"))},
                     "decoded_missed": float((inside[:, 2] < MISSED).mean()) if len(inside) else None})
    return rows


def summarize(paths: list[str]) -> None:
    """Markdown rows: per area bin, the mean +- sample std over the files."""
    reports = [json.loads(Path(path).read_text()) for path in paths]

    def cell(values) -> str:
        values = np.array([v for v in values if v is not None], dtype=float)
        if not len(values):
            return "-"
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        return f"{values.mean():.3f}" + (f" ± {std:.3f}" if std > 0.0005 else "")

    print("| visible area (share of the image) | objects per run | attention IoU | decoded IoU "
          "| decoded argmax on the object's slot | decoded p(slot) | decoded misses |")
    print("|---|---|---|---|---|---|---|")
    for i, row in enumerate(reports[0]["bins"]):
        rows = [r["bins"][i] for r in reports]
        print(f"| {row['area_from']:.3f}-{row['area_to']:.3f} | {np.mean([r['objects'] for r in rows]):.0f} | "
              + " | ".join(cell(r[k] for r in rows) for k in ("attention_iou", "decoded_iou", "decoded_agrees",
                                                               "decoded_probability", "decoded_missed")) + " |")
    print(f"| all | {np.mean([r['objects'] for r in reports]):.0f} | "
          + " | ".join(cell(r[k] for r in reports) for k in ("attention_iou", "decoded_iou")) + " | | | "
          + cell(r["decoded_missed"] for r in reports) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--summarize", nargs="+", metavar="JSON", help="print the mean +- std of earlier outputs")
    p.add_argument("--run", help="a trained MONet-family run (folder or checkpoint)")
    p.add_argument("--split", default="test")
    p.add_argument("--out")
    args = p.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    if not (args.run and args.out):
        p.error("--run and --out are required (or --summarize)")

    import torch

    from scenedecomp.inference.loaders import make_loader, open_split
    from scenedecomp.inference.run import find_run, load_weights

    run_dir, ckpt, cfg = find_run(args.run)
    loaded = load_weights(ckpt, cfg, run_dir)
    dataset = open_split(cfg, args.split)
    background = tuple(getattr(dataset, "background_labels", (0,)))
    objects = []
    with torch.no_grad():
        for batch in make_loader(cfg, dataset, train=False):
            out = loaded(batch["image"])
            decoded_log = out.extras.get("recon_log_masks")
            if decoded_log is None:
                p.error(f"{args.run}: the model has no decoded masks (MONet-family models only)")
            decoded_log = decoded_log.float().squeeze(2)  # [B,K,1,H,W] -> [B,K,H,W]
            attention = out.predicted_labels().numpy()
            decoded = decoded_log.argmax(1).numpy()
            probability = decoded_log.exp().numpy()
            for b, true in enumerate(batch["mask"].numpy().reshape(attention.shape)):
                att = dict((label, iou) for label, _, iou in object_ious(true, attention[b], background))
                for label, area, iou in object_ious(true, decoded[b], background):
                    obj = true == label
                    slot = np.bincount(attention[b][obj]).argmax()  # the slot holding the object
                    objects.append((area, att[label], iou, (decoded[b][obj] == slot).mean(),
                                    probability[b, slot][obj].mean()))
    objects = np.array(objects)
    pixels = int(np.prod(attention.shape[1:]))
    report = {"split": args.split, "data": cfg.data.name, "image_size": cfg.data.image_size, "run": cfg.name,
              "objects": len(objects), "attention_iou": float(objects[:, 1].mean()),
              "decoded_iou": float(objects[:, 2].mean()), "decoded_missed": float((objects[:, 2] < MISSED).mean()),
              "attention_missed": float((objects[:, 1] < MISSED).mean()), "bins": bin_rows(objects, pixels)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(f"{len(objects)} objects: IoU attention {report['attention_iou']:.3f} decoded {report['decoded_iou']:.3f}; "
          f"decoded masks miss {report['decoded_missed']:.3f}")
    summarize([args.out])


if __name__ == "__main__":
    main()
