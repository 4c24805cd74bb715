"""Benchmarks: training throughput vs the machine's matmul peak, FLOPs/time/memory vs K."""

from __future__ import annotations


def add_benchmark_commands(subparsers) -> None:
    """Add ``scenedecomp benchmark {step,efficiency}`` to an argparse subparsers object."""
    parser = subparsers.add_parser("benchmark", help="throughput and efficiency benchmarks (JSON)")
    sub = parser.add_subparsers(dest="benchmark", required=True)
    from .efficiency import add_efficiency_parser
    from .monet_step import add_step_parser

    add_step_parser(sub)
    add_efficiency_parser(sub)
