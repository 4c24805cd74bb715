"""Training throughput of the paper MONet config (64x64, K=7, batch 64) vs this machine's matmul peak.

Usage: python benchmarks/monet_step.py [--slots 7] [--batch-size 64] [--compile] [--out result.json]
(same as `scenedecomp benchmark step`).
"""

import sys

from scenedecomp.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", "step", *sys.argv[1:]]))
