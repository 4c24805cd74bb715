"""Efficiency benchmark of MONet vs MONet-RN50/RN50* as K grows (thin wrapper).

Same as ``scenedecomp benchmark efficiency``; see :mod:`scenedecomp.bench.efficiency` and docs/efficiency.md.
Example: ``python benchmarks/efficiency.py --slots 3,7,11,18 --image-size 64 --batch-size 8``.
"""

import sys

from scenedecomp.cli.benchmark import efficiency_main as main

if __name__ == "__main__":
    sys.exit(main())
