"""``scenedecomp report``: one self-contained report.html for a run (:mod:`scenedecomp.evaluation.report`)."""

from __future__ import annotations

from ..evaluation.report import build_report


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("report", help="write one self-contained report.html for a run", description=(
        "Write RUN_DIR/report.html (or --out): config and environment, metrics, OOD table, loss and "
        "validation curves, decomposition figures, traversals, disentanglement, efficiency. Images are "
        "inlined; the page needs no server and no network."))
    p.add_argument("run", help="run directory, model folder or pretrained:NAME")
    p.add_argument("--out", default=None, help="report file (default RUN_DIR/report.html; for a model folder "
                   "./report_<NAME>.html)")
    p.add_argument("--no-traversals", action="store_true", help="do not draw missing traversal figures")
    p.set_defaults(func=run)


def run(args) -> int:
    path = build_report(args.run, args.out, traversals=not args.no_traversals)
    print(f"report written to {path.resolve()}")
    return 0
