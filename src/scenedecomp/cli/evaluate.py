"""``scenedecomp evaluate``: held-out metrics of a run (and, with ``--disentanglement``, its latents' scores)."""

from __future__ import annotations

import json

from .train import print_summary


def add_parsers(subparsers) -> None:
    from ..data.synthetic.sprites import OOD_SPLITS

    p = subparsers.add_parser("evaluate", help="evaluate a run on a split", description=(
        "Evaluate a run directory or checkpoint; writes metrics.json (test split) or metrics_<split>.json "
        "in the run directory (or --out) with ari, fg_ari, msc, sc, mse, num_images and their spreads. "
        "A checkpoint other than the run's last one writes metrics_<split>_<checkpoint>.json instead."))
    p.add_argument("run", help="run directory, .ckpt file, model folder or pretrained:NAME (a model folder "
                   "writes ./metrics_<NAME>[_<split>].json unless --out is given)")
    p.add_argument("--split", default="test", choices=("train", "val", "test", *OOD_SPLITS),
                   help="a split, or an out-of-distribution test split of multi_sprites: " + "; ".join(
                       f"{name}: {what}" for name, what in OOD_SPLITS.items()))
    p.add_argument("--num-slots", type=int, default=None, help=(
        "K at inference (MONet's recurrent attention and Slot Attention; a one-pass ResNet attention and AIR keep "
        "their trained K)"))
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--out", default=None, help="write the metrics JSON here instead")
    p.add_argument("--json", action="store_true", help="print the full metrics JSON")
    p.add_argument("--disentanglement", action="store_true", help=(
        "also match slots to ground-truth objects and score the latents against the objects' factors "
        "(probes, DCI, MIG; needs per-object factors, e.g. multi_sprites); adds 'disentanglement' to the "
        "metrics JSON and draws figures/disentanglement_<split>.png"))
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluation.evaluate import evaluate

    extra = {}
    if args.disentanglement:  # scored first, so that a refusal leaves no metrics file behind
        from ..evaluation.latents import evaluate_disentanglement

        extra["disentanglement"] = d = evaluate_disentanglement(args.run, None, args.split, args.num_slots,
                                                                args.batch_size)
    metrics = evaluate(args.run, split=args.split, num_slots=args.num_slots, batch_size=args.batch_size,
                       out=args.out, progress=not args.quiet, extra=extra)
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("_")}, indent=2))
    else:
        print_summary(metrics, args.run)
        if args.disentanglement:
            print(f"disentanglement ({d['num_objects']} matched objects): DCI D {d['dci_disentanglement']:.3f}, "
                  f"C {d['dci_completeness']:.3f}, I {d['dci_informativeness']:.3f}; MIG {d['mig']:.3f}; "
                  f"probe R2/acc linear {d['informativeness_linear']:.3f}, MLP {d['informativeness_mlp']:.3f}; "
                  f"figure {d['figure']}")
            mlp = d.get("informativeness", {}).get("mlp", {})
            print("MLP probe per factor (R2; accuracy for categorical): "
                  + ", ".join(f"{name} {value:.3f}" for name, value in mlp.items()))
    return 0
