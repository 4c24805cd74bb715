#!/usr/bin/env bash
# GPU readiness check, for a machine with a CUDA GPU:
#   1. the default test suite (set SKIP_TESTS=1 to skip it);
#   2. 300 training steps in bf16-mixed of the paper MONet preset (monet-multi-sprites, 64x64, K=5) and of
#      Slot Attention (sa-multi-dsprites, else sa-demo; skipped with a message when neither preset exists),
#      each followed by the test evaluation on the GPU;
#   3. with two or more GPUs, 50 steps of MONet under DDP on two of them.
# For each run it prints images/s (whole run, and the last validation interval without validation time)
# and the peak GPU memory (torch.cuda.max_memory_allocated), and writes OUT/gpu_check.json.
#
#   benchmarks/gpu_check.sh                 # OUT defaults to a new temporary folder
#   OUT=runs/gpu-check STEPS=300 benchmarks/gpu_check.sh
#
# Exit status: 0 all passed, 1 a step failed, 3 no CUDA device.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python}
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
out=${OUT:-$(mktemp -d -t scenedecomp-gpu-check.XXXXXX)}
steps=${STEPS:-300}
mkdir -p "$out"

if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device is available here (torch.cuda.is_available() is False); nothing run" >&2
    exit 3
fi
"$python" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {p.name}, '
f'{p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, {torch.cuda.device_count()} device(s); '
f'torch {torch.__version__}, CUDA {torch.version.cuda}')"

status=0
if [ "${SKIP_TESTS:-0}" != "1" ]; then
    echo "== test suite (default selection, not slow)"
    (cd "$root" && "$python" -m pytest -q -x -p no:cacheprovider) || status=1
fi

measure() {  # measure PRESET DEVICES STRATEGY STEPS
    "$python" - "$1" "$2" "$3" "$4" "$out" <<'EOF'
import json, sys, time
from pathlib import Path

import torch

from scenedecomp.config import load_config
from scenedecomp.training.train import train

preset, devices, strategy, steps, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
name = f"{preset}-{devices}gpu"
cfg = load_config(preset, [f"trainer.max_steps={steps}", "trainer.max_minutes=null", "trainer.precision=bf16-mixed",
                           "trainer.accelerator=gpu", f"trainer.devices={devices}", f"trainer.strategy={strategy}",
                           f"trainer.val_every_n_steps={max(steps // 2, 1)}", "trainer.val_batches=4",
                           f"out_dir={out}", f"name={name}"])
per_step = cfg.data.batch_size * int(devices)
cfg.data.num_train = min(cfg.data.num_train or 10**9, steps * per_step)  # generate only what the steps read
cfg.data.num_val = min(cfg.data.num_val or 10**9, 256)
cfg.data.num_test = min(cfg.data.num_test or 10**9, 500)
torch.cuda.reset_peak_memory_stats()
start = time.perf_counter()
metrics = train(cfg, overwrite=True, quiet=True)
wall = time.perf_counter() - start
run = out / name
rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
steady = rows[-1].get("images_per_s") if rows else None
warnings = [w["code"] for w in (rows[-1].get("health") or {}).get("warnings", [])] if rows else []
result = {"preset": preset, "devices": int(devices), "strategy": strategy, "steps": metrics.get("train_steps"),
          "batch_per_device": cfg.data.batch_size, "image_size": cfg.data.image_size,
          "precision": metrics.get("precision"), "images_per_s": metrics.get("train_images_per_s"),
          "images_per_s_last_interval": steady, "peak_gib_device0": round(torch.cuda.max_memory_allocated(0) / 2**30, 2),
          "wall_s": round(wall, 1), "test": {k: metrics.get(k) for k in ("fg_ari", "ari", "msc", "mse")},
          "health_warnings": warnings}
print(f"{name}: {result['steps']} steps, {result['precision']}, {result['images_per_s']} images/s "
      f"(last interval {steady}), peak {result['peak_gib_device0']} GiB on GPU 0, {wall:.0f} s with data "
      f"generation and test evaluation; test FG-ARI {metrics.get('fg_ari')}; health warnings: {warnings or 'none'}")
print("RESULT " + json.dumps(result))
EOF
}

results="$out/results.jsonl"
: > "$results"
run_preset() {
    echo "== $1: $4 steps, bf16-mixed, $2 device(s), strategy $3"
    if output=$(measure "$@" 2>"$out/$1-$2gpu.err"); then
        echo "$output" | grep -v '^RESULT '
        echo "$output" | sed -n 's/^RESULT //p' >> "$results"
    else
        echo "gpu_check: $1 failed: $(tail -n 1 "$out/$1-$2gpu.err")" >&2
        status=1
    fi
}

run_preset monet-multi-sprites 1 auto "$steps"
sa=$("$python" -c "
from scenedecomp.config import list_presets
names = list_presets()
print(next((n for n in ('sa-multi-dsprites', 'sa-demo') if n in names), ''))")
if [ -n "$sa" ]; then
    run_preset "$sa" 1 auto "$steps"
else
    echo "== Slot Attention: skipped (neither preset sa-multi-dsprites nor sa-demo exists in this version)"
fi
gpus=$("$python" -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -ge 2 ]; then
    run_preset monet-multi-sprites 2 ddp 50
fi

"$python" -c "
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
json.dump(rows, open(sys.argv[2], 'w'), indent=2)
print(f'written {sys.argv[2]} ({len(rows)} runs)')" "$results" "$out/gpu_check.json"
exit $status
