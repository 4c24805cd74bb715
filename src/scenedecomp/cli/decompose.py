"""``scenedecomp decompose``: apply a trained run to image files or folders (:mod:`scenedecomp.inference.decompose`)."""

from __future__ import annotations

import time
from pathlib import Path

from ..inference.decompose import decompose


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("decompose", help="decompose your own images with a trained run", description=(
        "Apply a trained run to image files or folders. Per image OUT/<name>/ receives input.png, "
        "segmentation.png (indexed), overlay.png, slot_<k>.png (RGBA, alpha = mask), reconstruction.png and "
        "decomposition.json (per-slot latent mean/log-variance, mask area, bbox, centroid; AIR's z_pres/"
        "z_where); OUT/decompositions.npz holds all images. Other sizes are centre-cropped and resized, "
        "grey/RGBA converted, unreadable files reported and skipped."))
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                   help="image files and/or folders (searched recursively)")
    p.add_argument("--run", required=True, help="run directory, .ckpt file, model folder or pretrained:NAME")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-slots", type=int, default=None, help="K at inference (recurrent attention, Slot Attention)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    start = time.perf_counter()
    out = Path(args.out).expanduser()
    result = decompose(args.inputs, args.run, num_slots=args.num_slots, batch_size=args.batch_size,
                       progress=not args.quiet, out_dir=out, device=args.device)
    seconds = time.perf_counter() - start
    n = len(result)
    notes = result.notes
    extra = []
    if notes["resized"]:
        extra.append(f"{notes['resized']} resized")
    if notes["converted"]:
        extra.append("converted " + ", ".join(f"{v} {k}" for k, v in sorted(notes["converted"].items())))
    if result.skipped:
        extra.append(f"{len(result.skipped)} unreadable file{'s' if len(result.skipped) != 1 else ''} skipped")
    model_rate = n / notes["model_seconds"] if notes["model_seconds"] > 0 else float("inf")
    print(f"decomposed {n} image{'s' if n != 1 else ''} in {seconds:.2f} s ({n / seconds:.1f} images/s end to end, "
          f"{model_rate:.1f} images/s model only)" + (f"; {'; '.join(extra)}" if extra else "")
          + f"; written to {out}/ and {out / 'decompositions.npz'}")
    return 0
