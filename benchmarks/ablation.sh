#!/usr/bin/env bash
# One equal-step probe of docs/results.md: a preset ($PRESET, default monet-demo) plus overrides, one thread,
# bf16 where the CPU supports it, validation on 300 images every VAL (default 500) steps, test metrics at
# the end of MINUTES of training. Output: $OUT/NAME (default OUT=runs/ablations), log in $OUT/NAME.log.
#   benchmarks/ablation.sh NAME MINUTES [key=value ...]
#   e.g. benchmarks/ablation.sh geco-cap64 20 model.component.decoder_channels=16 \
#          model.loss.geco_mse_target=0.002 model.loss.geco_max_weight=64
set -euo pipefail
if [ $# -lt 2 ]; then sed -n 2,7p "$0"; exit 2; fi
name=$1; minutes=$2; shift 2
cd "$(dirname "$0")/.."
out=${OUT:-runs/ablations}
mkdir -p "$out"
.venv/bin/scenedecomp train --config "${PRESET:-monet-demo}" "out_dir=$out" "name=$name" \
  "trainer.max_minutes=$minutes" trainer.num_threads=1 "trainer.val_every_n_steps=${VAL:-500}" \
  trainer.val_batches=3 trainer.progress_bar=false trainer.checkpoint_every_n_steps=100000 "$@" \
  --overwrite > "$out/$name.log" 2>&1
