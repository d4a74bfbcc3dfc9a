#!/bin/bash
# One prepared run for a GPU machine: install, the throughput benchmarks, the time-to-quality curve of the default
# UNet and the `full` experiment table, every table, JSON and figure under one folder ($OUT, else ./gpu_suite_out).
#
#   bash benchmarks/gpu_suite.sh                  # on a fresh GPU machine: about 9 minutes on one H100/H200
#   bash benchmarks/gpu_suite.sh --no-install     # torch with CUDA and the project already installed
#   GPU_SUITE_SIZE=tiny bash benchmarks/gpu_suite.sh --no-install    # the same steps in a minute or two on a CPU
#
# Wall-time budget of each part at full size (seconds; each part is stopped at its budget, what it finished is kept):
#   install         120  CUDA torch from PyPI and the project (skipped with --no-install or when torch sees CUDA)
#   bench_train     110  trainer (a) / bare loop (b) / diffusers example (c), CNN and UNet: eager 15 s each, then
#                        (a) and (b) compiled with mode reduce-overhead 40 s each
#   bench_sample     80  images/s of DDPM-1000, DDIM-50, DPM-Solver-20 and cold diffusion, with and without compile
#   table + ttq     250  the `full` experiment table (runner's measured concurrency) and, alongside on the same GPU,
#                        the default UNet's time-to-quality curve at N = 10,000 (marks 1 2 3 4 minutes)
# What each part wrote, took and returned is in suite.json. Heavy run folders (pipelines, checkpoints, samples) stay
# in $GPU_SUITE_WORK (default: a temporary folder); only tables, JSON, logs and figures are copied to the output.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
INSTALL=1
for argument in "$@"; do
  case $argument in
    --no-install) INSTALL=0 ;;
    *) echo "error: unknown argument $argument: use --no-install or nothing." >&2; exit 2 ;;
  esac
done
SIZE=${GPU_SUITE_SIZE:-full}
if [ "$SIZE" != full ] && [ "$SIZE" != tiny ]; then
  echo "error: GPU_SUITE_SIZE=$SIZE: use full (the default) or tiny (a CPU check)." >&2; exit 2
fi
OUT_DIR=${OUT:-$ROOT/gpu_suite_out}
WORK=${GPU_SUITE_WORK:-$(mktemp -d -t gpu_suite-XXXXXX)}
mkdir -p "$OUT_DIR" "$WORK"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's diffusion_lab, whatever else is installed
PARTS="$OUT_DIR/suite_parts.tsv"
: > "$PARTS"
SUITE_START=$(date +%s)

# part NAME BUDGET_S COMMAND...: run COMMAND under a wall-time budget (its whole process group is stopped there),
# output in NAME.log, one line in suite_parts.tsv.
part() {
  local name=$1 budget=$2 start status milliseconds
  shift 2
  echo "== $name (budget ${budget} s)"
  start=$(date +%s%N)
  timeout --kill-after=20 "$budget" "$@" > "$OUT_DIR/$name.log" 2>&1
  status=$?
  milliseconds=$(( ($(date +%s%N) - start) / 1000000 ))
  printf '%s\t%s\t%s\t%s\n' "$name" "$budget" "$milliseconds" "$status" >> "$PARTS"
  echo "== $name: exit $status after $(( milliseconds / 1000 )) s"
}

if [ "$SIZE" = full ]; then
  B_INSTALL=120 B_TRAIN=15 B_COMPILED=40 B_SAMPLE=80 B_TABLE=250
  TRAIN_MODELS="cnn unet"
  TRAIN_FLAGS=(--rounds 5 --steps 20 --warmup 5 --mixed_precision auto)
  SAMPLE_FLAGS=(--models cnn unet --samplers ddpm-1000 ddim-50 dpmsolver-20 cold-28 --batch_size 256 --ddpm_batch_size 256
                --mixed_precision bf16 --torch_compile off reduce-overhead)
  TTQ_FLAGS=(--marks 1 2 3 4 --num_samples 10000)
  TTQ_TRAIN=(--checkpointing_steps 100000 --checkpointing_minutes 0 --logger none --eval_batch_size 1000 --overwrite_output_dir)
  TABLE_FLAGS=(--budget full --concurrency auto)
else
  B_INSTALL=120 B_TRAIN=300 B_COMPILED=0 B_SAMPLE=300 B_TABLE=600  # limits only: a shared CPU is slow
  TRAIN_MODELS="cnn"
  TRAIN_FLAGS=(--rounds 1 --steps 1 --warmup 1 --batch_size 8 --threads 1)  # one thread: a shared CPU
  SAMPLE_FLAGS=(--models cnn --samplers dpmsolver-20 cold-28 --batch_size 2 --threads 1)
  TTQ_FLAGS=(--marks 0.02 --num_samples 16 --threads 1)
  TTQ_TRAIN=(--checkpointing_steps 100000 --checkpointing_minutes 0 --logger none --overwrite_output_dir --model cnn --max_train_samples 256 --train_batch_size 16
             --eval_batch_size 16 --num_inference_steps 2 --no-use_ema)
  TABLE_FLAGS=(--budget tiny --only linear --concurrency 1)
fi

# (i) Install: a CUDA torch build from PyPI (the project pins the CPU wheel for CPU machines) and the project.
if [ "$INSTALL" = 1 ] && ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  TORCH_VERSION=$(python -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null || echo 2.13.0)
  part install "$B_INSTALL" bash -c "python -m pip install --index-url https://pypi.org/simple 'torch==$TORCH_VERSION' && python -m pip install -e '$ROOT'"
fi
python - "$OUT_DIR/device.json" <<'EOF'
import json, platform, sys, torch
cuda = torch.cuda.is_available()
json.dump({"torch": torch.__version__, "cuda": cuda, "device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
           "memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None}, open(sys.argv[1], "w"), indent=2)
EOF

# (ii) The benchmarks of section 2: one JSON per model and compile setting, so a budget cut loses one at most.
for model in $TRAIN_MODELS; do
  part "bench_train_${model}" "$B_TRAIN" python benchmarks/bench_train.py --models "$model" "${TRAIN_FLAGS[@]}" --json --output "$OUT_DIR/bench_train_${model}.json"
  if [ "$SIZE" = full ]; then
    part "bench_train_${model}_compiled" "$B_COMPILED" python benchmarks/bench_train.py --models "$model" "${TRAIN_FLAGS[@]}" --setups a b \
      --torch_compile --torch_compile_mode reduce-overhead --json --output "$OUT_DIR/bench_train_${model}_compiled.json"
  fi
done
part bench_sample "$B_SAMPLE" python benchmarks/bench_sample.py "${SAMPLE_FLAGS[@]}" --json --output "$OUT_DIR/bench_sample.json"

# (iii) and (iv): the time-to-quality curve alongside the experiment table, both on the device.
part time_to_quality "$B_TABLE" python benchmarks/time_to_quality.py "${TTQ_FLAGS[@]}" --output_dir "$WORK/ttq" -- "${TTQ_TRAIN[@]}" &
TTQ_PID=$!
part experiments "$B_TABLE" python -m diffusion_lab experiments "${TABLE_FLAGS[@]}" --configs_dir "$ROOT/experiments" --output_dir "$WORK/experiments"
wait $TTQ_PID
# A table cut at its budget: tabulate the rows that finished.
if [ ! -f "$WORK/experiments/results.md" ] || grep -q PARTIAL "$WORK/experiments/results.md"; then
  python -m diffusion_lab experiments "${TABLE_FLAGS[@]}" --configs_dir "$ROOT/experiments" --output_dir "$WORK/experiments" --collect \
    >> "$OUT_DIR/experiments.log" 2>&1
fi

# Copy what is small and readable to the output folder.
mkdir -p "$OUT_DIR/experiments" "$OUT_DIR/time_to_quality"
cp -r "$WORK/ttq/time_to_quality/." "$OUT_DIR/time_to_quality/" 2>/dev/null
(cd "$WORK/experiments" && find . \( -name '*.md' -o -name '*.csv' -o -name '*.json' -o -name '*.png' -o -name '*.log' \) \
  -not -path './runs/*/checkpoint-*' -not -path './runs/*/unet/*' -not -path './runs/*/scheduler/*' -not -path './rows/*/samples/*' \
  -exec cp --parents {} "$OUT_DIR/experiments/" \;)

python - "$OUT_DIR" "$SIZE" "$SUITE_START" <<'EOF'
import json, sys, time
from pathlib import Path
out, size, start = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
parts = {}
for line in (out / "suite_parts.tsv").read_text().splitlines():
    name, budget, seconds, status = line.split("\t")
    parts[name] = {"budget_s": int(budget), "seconds": round(int(seconds) / 1000, 1), "exit": int(status),
                   "status": "done" if status == "0" else "stopped at its budget" if status in ("124", "137") else "failed"}
suite = {"size": size, "device": json.loads((out / "device.json").read_text()), "total_seconds": round(time.time() - start, 1), "parts": parts}
(out / "suite.json").write_text(json.dumps(suite, indent=2) + "\n")
summary = ", ".join(f"{name} {part['status']}" for name, part in parts.items())
print(f"wrote {out}: {summary}; {suite['total_seconds']} s in all")
EOF
