#!/usr/bin/env bash
# Ship a trained run as a pretrained model inside the package: scenedecomp/pretrained/NAME.
#
#   benchmarks/export_pretrained.sh RUN_DIR NAME [CHECK_IMAGES]
#
# e.g. benchmarks/export_pretrained.sh runs/monet-demo monet-sprites32
#      benchmarks/export_pretrained.sh runs/air-multi-mnist air-multi-mnist
#
# Writes model.safetensors (the EMA weights evaluation uses), config.yaml, metrics.json, provenance.json and
# check.json (metrics on the first CHECK_IMAGES test images, default 64), then reloads every shipped model
# and recomputes its check (`scenedecomp pretrained --check`) and reports the package's total model size
# (tests/test_pretrained.py holds it under 15 MB). Run from the repository root; commit the new folder.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 RUN_DIR NAME [CHECK_IMAGES]" >&2
    exit 2
fi
run=$1
name=$2
check=${3:-64}
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
python=${PYTHON:-python}
"$python" -m scenedecomp.cli export "$run" --out "$root/src/scenedecomp/pretrained/$name" --check-images "$check"
"$python" -m scenedecomp.cli pretrained --check
du -sh "$root/src/scenedecomp/pretrained"
