"""Where a trained model splits the background across slots (the "border stripe" of docs/results.md).

For each checkpoint: on the first N test images, the background pixels (label 0) that are not in the
slot holding most of that image's background, as a fraction of all background pixels, per column and
per row (the four largest are printed), and the ARI with those pixels given to the majority slot (what
ARI would be without the split). One line per checkpoint:

    python benchmarks/background_split.py RUN_DIR/checkpoints/step0002000.ckpt ... [--num-images 300]
"""

from __future__ import annotations

import argparse

import torch

from scenedecomp.metrics.segmentation import ari
from scenedecomp.training.checkpoint import find_run, load_module
from scenedecomp.training.loaders import open_split


def background_split(path: str, num_images: int) -> str:
    _, ckpt, cfg = find_run(path)
    model = load_module(ckpt, cfg).model
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

    return (f"{ckpt}: FG-ARI {ari(labels, pred, ignore_background=True).nanmean():.3f} "
            f"ARI {ari(labels, pred).mean():.3f} ARI(split merged) {ari(labels, merged).mean():.3f} "
            f"background outside its majority slot {split.sum() / background.sum():.3f} | "
            f"columns {top(by_col)} | rows {top(by_row)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--num-images", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in args.checkpoints:
        print(background_split(path, args.num_images), flush=True)


if __name__ == "__main__":
    main()
