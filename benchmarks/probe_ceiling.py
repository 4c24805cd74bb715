"""What can a probe read about each object from what is visible at all? The ceiling for the latent probes.

The probes of ``evaluate --disentanglement`` read factors (x, y, scale, colour, shape, orientation) from a
slot's latent. This script gives them references on the same held-out objects, the same matching and the
same probes (:func:`scenedecomp.metrics.disentanglement.disentanglement_metrics`):

* ``ground truth``: hand-made features of each object's **ground-truth visible mask** and pixels, as codes:
  centroid, square root of the area, bounding box, second moments and the mean colour under the mask. A
  latent cannot be expected to beat what the visible pixels say (occluded sprites lose area and shape);
* ``attention masks``: the same features from the run's own segmentation (argmax of its masks), matched to
  the objects as the latents are: what the segmentation alone carries;
* ``latents``: the run's matched slot latents, i.e. what ``evaluate --disentanglement`` reports (scored
  here with object split seed 0 in every row, where ``evaluate`` uses the run's seed).

    python benchmarks/probe_ceiling.py --run runs/monet-demo --out pc.json   # the three rows for one run
    python benchmarks/probe_ceiling.py --summarize A.json B.json ...      # mean +- std over runs (seeds)

One JSON object with one entry per row: the MLP and linear probes' held-out scores per factor and the
number of matched objects.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROWS = ("ground truth", "attention masks", "latents")
FEATURES = ["cx", "cy", "sqrt_area", "bbox_w", "bbox_h", "var_x", "var_y", "cov_xy", "r", "g", "b"]


def object_features(image: np.ndarray, labels: np.ndarray, num_labels: int) -> np.ndarray:
    """``[num_labels, len(FEATURES)]`` features of every label's region in one image (zeros if empty).

    ``image [C,H,W]`` in [0, 1], ``labels [H,W]``; coordinates in [0, 1]."""
    h, w = labels.shape
    ys, xs = np.mgrid[0:h, 0:w]
    xs, ys = (xs + 0.5) / w, (ys + 0.5) / h
    out = np.zeros((num_labels, len(FEATURES)))
    for k in range(num_labels):
        m = labels == k
        n = m.sum()
        if n == 0:
            continue
        x, y = xs[m], ys[m]
        colour = image[:, m].mean(1)
        out[k] = [x.mean(), y.mean(), np.sqrt(n / (h * w)), np.ptp(x) + 1 / w, np.ptp(y) + 1 / h,
                  x.var(), y.var(), ((x - x.mean()) * (y - y.mean())).mean(), *colour[:3]]
    return out


def summarize(paths: list[str]) -> None:
    """Markdown rows: per row of the reports, the MLP probe's mean +- sample std over the files."""
    reports = [json.loads(Path(path).read_text()) for path in paths]
    names = reports[0]["rows"]["ground truth"]["informativeness"]["mlp"]
    factors = [f for f in ("x", "y", "scale", "color[0]", "color[1]", "color[2]", "shape", "orientation") if f in names]
    print("| codes | " + " | ".join(factors) + " |")
    for name in ROWS:
        if name not in reports[0]["rows"]:
            continue
        cells = []
        for factor in factors:
            values = np.array([r["rows"][name]["informativeness"]["mlp"][factor] for r in reports if name in r["rows"]])
            std = values.std(ddof=1) if len(values) > 1 else 0.0
            cells.append(f"{values.mean():.3f}" + (f" ± {std:.3f}" if std > 0.0005 else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--summarize", nargs="+", metavar="JSON", help="print the mean +- std of earlier outputs")
    p.add_argument("--run", help="a trained run (folder or checkpoint)")
    p.add_argument("--split", default="test")
    p.add_argument("--out")
    args = p.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    if not (args.run and args.out):
        p.error("--run and --out are required (or --summarize)")

    from scenedecomp.evaluation.latents import collect, score_codes
    from scenedecomp.inference.loaders import make_loader, open_split
    from scenedecomp.inference.run import find_run, load_weights

    run_dir, ckpt, cfg = find_run(args.run)
    loaded = load_weights(ckpt, cfg, run_dir)
    dataset = open_split(cfg, args.split)
    data = collect(loaded, make_loader(cfg, dataset, train=False), images=True)

    def row(codes_per_slot: np.ndarray, labels: np.ndarray) -> dict:
        result = score_codes(codes_per_slot, labels, data, dataset, seed=0)  # one object split for every row
        return {key: result[key] for key in ("informativeness", "num_objects", "dci_disentanglement", "mig",
                                             "matched_iou_mean")}

    def features(labels: np.ndarray) -> np.ndarray:
        k = int(labels.max()) + 1
        return np.stack([object_features(im, lab, k) for im, lab in zip(data["image"], labels)])

    report = {"split": args.split, "data": cfg.data.name, "image_size": cfg.data.image_size, "run": cfg.name,
              "features": FEATURES, "rows": {"ground truth": row(features(data["true"]), data["true"]),
                                             "attention masks": row(features(data["pred"]), data["pred"]),
                                             "latents": row(data["latents"], data["pred"])}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    for name, r in report["rows"].items():
        mlp = r["informativeness"]["mlp"]
        print(f"{name:16s} objects {r['num_objects']:5d} " + " ".join(f"{f} {v:.3f}" for f, v in mlp.items()))

if __name__ == "__main__":
    main()
