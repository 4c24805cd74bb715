"""``scenedecomp export`` (a run as a model folder) and ``scenedecomp pretrained`` (the shipped models)."""

from __future__ import annotations

import sys

from ..errors import BadInput
from ..evaluation.export import CHECK_IMAGES, SUMMARY_KEYS, export_run, read_json_or_none, verify
from ..inference.pretrained import PREFIX, WEIGHTS, shipped


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a run as a model folder (safetensors, no pickle)", description=(
        "Write RUN (its final checkpoint: the EMA weights where the run averaged them, as evaluation uses) to "
        "DIR as model.safetensors, config.yaml, metrics.json, provenance.json and check.json (metrics on the "
        "first --check-images test images). DIR must be new or empty. The folder is accepted wherever a run is "
        "(evaluate, visualize, decompose, report); shipped inside the package as scenedecomp/pretrained/NAME "
        "it is `pretrained:NAME`."))
    p.add_argument("run", help="run directory, .ckpt file or model folder")
    p.add_argument("--out", required=True, help="new or empty output folder")
    p.add_argument("--check-images", type=int, default=CHECK_IMAGES,
                   help=f"test images whose metrics check.json records (default {CHECK_IMAGES})")
    p.set_defaults(func=_cmd_export)

    p = subparsers.add_parser("pretrained", help="list the models shipped with the package", description=(
        "List the pretrained models shipped inside the package (use them as --run pretrained:NAME, or "
        "scenedecomp.load_run('pretrained:NAME')) with their recorded test metrics."))
    p.add_argument("--check", action="store_true", help=(
        "also reload each model and recompute its check.json metrics (first test images) to the recorded "
        "tolerance; exit 1 if any differs"))
    p.set_defaults(func=_cmd_pretrained)


def _cmd_export(args) -> int:
    if args.check_images < 1:
        raise BadInput(f"--check-images must be at least 1, got {args.check_images}")
    out = export_run(args.run, args.out, args.check_images)
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"exported {args.run} to {out}/ ({files}; {size:.2f} MB)")
    return 0


def _cmd_pretrained(args) -> int:
    models = shipped()
    if not models:
        print("no pretrained models are shipped with this installation")
        return 0
    failed = 0
    for name, folder in models.items():
        metrics = read_json_or_none(folder / "metrics.json") or {}
        prov = read_json_or_none(folder / "provenance.json") or {}
        parts = [f"{k} {metrics[k]:.4f}" if k != "mse" else f"mse {metrics[k]:.2e}" for k in SUMMARY_KEYS
                 if isinstance(metrics.get(k), float)]
        where = f"{prov.get('model', '?')} on {prov.get('dataset', '?')} {prov.get('image_size', '?')}px"
        size = (folder / WEIGHTS).stat().st_size / 1e6
        line = (f"{PREFIX}{name:24s} {where}, {size:.1f} MB; test ({metrics.get('num_images', '?')} images): "
                + (", ".join(parts) or "no recorded metrics"))
        if args.check:
            result = verify(folder)
            failed += not result["ok"]
            line += f"; check {'ok' if result['ok'] else 'FAILED'} (max diff {result['max_abs_diff']:.1e})"
        print(line)
    if failed:
        print(f"scenedecomp: {failed} pretrained model(s) did not reproduce their check.json", file=sys.stderr)
        return 1
    return 0
