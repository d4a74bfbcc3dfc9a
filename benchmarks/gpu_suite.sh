#!/bin/bash
# Two prepared runs for a GPU machine lent for about 15 minutes (its start included), at most 10 minutes a command:
#
#   bash benchmarks/gpu_suite.sh bench    # the throughput benchmarks and the default recipe's time-to-quality curve, <= 360 s
#   bash benchmarks/gpu_suite.sh table    # the `full` experiment table, <= 420 s
#   bash benchmarks/gpu_suite.sh all      # both, one after the other (a CPU check, or a machine without the 10-minute limit)
#   GPU_SUITE_SIZE=tiny bash benchmarks/gpu_suite.sh all    # the same steps at a tiny size on a CPU (tests/test_gpu_suite.py)
#
# The GPU machine has torch (2.11 with CUDA), accelerate, transformers, torchmetrics, safetensors, huggingface_hub,
# but no package index: diffusers and datasets (and their few missing dependencies) travel as wheels in `.whl/` of
# the repository root, prepared here by `bash benchmarks/fetch_gpu_wheels.sh` (pip download, see
# ../shared/notes/device.md; about 8 MB, ignored by git, so the device's `run` must name it in `carry`). Each run
# installs them first (part install_wheels, timed) with `pip install --no-index --no-deps --target` into a folder
# put on PYTHONPATH; without `.whl/` the installed packages are used. The project runs from this checkout's src/.
#
# Writes to $OUT (default ./gpu_suite_out), three files per run, since only a few files come back from the device:
#   suite-<run>.json     each part's budget, seconds and status, the device, the run's total
#   suite-<run>.log      what the script printed
#   suite-<run>.tar.gz   every small result: the parts' logs and JSON, time_to_quality/ (curve.json, curve.png, mark
#                        grids), experiments/ (results.md, results.csv, figures/, rows/*/row.json, the runners' logs)
# All three are rewritten after every part, and every part writes what it has measured as it goes (each benchmark
# row or round, each curve mark, each table row), so a part stopped at its budget, or the whole run stopped, loses
# one row at most. Heavy run folders (pipelines, checkpoints, samples) stay in $GPU_SUITE_WORK (default: a
# temporary folder).
#
# Budgets (seconds) at full size, sized from the H200 run of 2026-12-04 (the GPU issue; ../shared/notes/device.md).
# Each part is stopped at its budget (SIGTERM, SIGKILL 10 s later) and never gets more than what is left of its run
# less 20 s for the packing, so the run ends inside its limit whatever a part does.
#   both runs
#     device             30  torch's CUDA start-up and the device's name (seconds)
#     install_wheels     20  8 MB of pure-Python wheels, no dependencies resolved, no bytecode compiled (seconds)
#   bench (limit 360)
#     bench_train        60  unet_fast (the default recipe, EMA) then cnn, setups (a) (b) (c), 3 warm-up steps and 5
#                            rounds of 10 steps: start-up ~20 s (CUDA, imports, decoding MNIST 6 s, the example's
#                            dataset), ~5 s to build each model's setups, steps 53 x (35.9 + 28.8 + 54.2) ms = 6 s for
#                            unet_fast, ~3 s for cnn: ~40 s
#     bench_train_graphed 2x25 unet_fast (a) with the trainer's --cuda_graph (the whole step replayed as one CUDA graph
#                            after 3 eager steps) against the bare eager loop (b), at batch 128 and at batch 1,024:
#                            start-up ~15 s, the capture well under a second, 5 rounds of 10 steps ~1 s
#     bench_train_compiled 60  unet_fast (a) and (b) under torch.compile reduce-overhead. Compilation is budgeted
#                            apart: each setup's first step (the compile) is written to the JSON as soon as it is
#                            measured, before the warm-up and 3 rounds of 10 steps (~2 s); 40 s for both compiled
#                            setups of one model wrote nothing on 2026-12-04, so ~30 s of each compile is assumed
#     bench_sample       60  uncompiled, bf16, unet_fast then cnn x DDPM-1000 (batch 256: 7 s at the 36 images/s
#                            measured), SDE-DPM-Solver-20 (the default sampler) and cold-28 (batch 256, under a
#                            second), each row in a fresh process of ~7 s start-up: ~55 s
#     time_to_quality  rest  the default recipe (train_ddpm.py's defaults: unet_fast, EMA, bf16) scored at 0.5, 1 and 2
#                            minutes of training at N = 10,000 (each mark: 6 s of sampling at batch 2,500, a few
#                            seconds of scoring); start-up ~15 s. At least 360 - 30 - 20 - 60 - 50 - 60 - 60 - 20 = 60 s
#                            are left, enough for the 0.5-minute mark of the GPU recipe; the 1- and 2-minute marks when the
#                            benchmarks end before their budgets (~250 s in all)
#   table (limit 420)
#     experiments      rest  the `full` table (GPU_SUITE_TABLE_BUDGET to change it), 4 variants at once: the
#                            concurrency probe measured 219 / 376 / 461 / 467 CNN steps/s for 1 / 2 / 4 / 8 processes
#                            there, so 4 is given and the probe's time saved. About 420 - 30 - 20 - 45 - 20 = 305 s: a
#                            20,000-step CNN variant takes ~175 s at 461/4 steps/s, then 10,000 images of 1,000-step
#                            DDPM and their scores, so only the first few rows finish (the runner starts the longest
#                            first: linear_cnn_unet_time's 120,000 steps hold one of the four slots throughout); the
#                            35 rows need ~1,000 s of training alone at 461 steps/s: a budget that converges within
#                            the run is still to be chosen
#     collect            45  after a table that did not finish: the table and figures of every finished row (the
#                            runner rewrites them as each variant ends; this covers a cut between two)
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
case ${1:-} in
  bench | table) RUNS=$1 ;;
  all) RUNS="bench table" ;;
  *) echo "error: name the run: bench, table or all (see the header of $0)." >&2; exit 2 ;;
esac
if [ $# -ne 1 ]; then
  echo "error: one argument only (bench, table or all); the size is GPU_SUITE_SIZE." >&2; exit 2
fi
SIZE=${GPU_SUITE_SIZE:-full}
if [ "$SIZE" != full ] && [ "$SIZE" != tiny ]; then
  echo "error: GPU_SUITE_SIZE=$SIZE: use full (the default) or tiny (a CPU check)." >&2; exit 2
fi
OUT_DIR=${OUT:-$ROOT/gpu_suite_out}
WORK=${GPU_SUITE_WORK:-$(mktemp -d -t gpu_suite-XXXXXX)}
mkdir -p "$OUT_DIR" "$WORK"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(cd "$WORK" && pwd)
SITE="$WORK/site"  # where the carried wheels are installed
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
# This checkout's diffusion_lab and the carried wheels first, whatever else is installed.
export PYTHONPATH="$ROOT/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
KILL_AFTER=10   # from SIGTERM to SIGKILL: a trainer saves its state on SIGTERM
PACKING=20      # kept free at the end of a run for the last packing, and what a stopped part may overrun

if [ "$SIZE" = full ]; then
  LIMIT_BENCH=360 LIMIT_TABLE=420
  B_DEVICE=30 B_INSTALL=20 B_TRAIN=60 B_GRAPHED=25 B_COMPILED=60 B_SAMPLE=60 B_COLLECT=45
  TRAIN_FLAGS=(--models unet_fast cnn --use_ema --mixed_precision auto --rounds 5 --steps 10 --warmup 3)
  GRAPHED_FLAGS=(--models unet_fast --setups a b --use_ema --mixed_precision auto --rounds 5 --steps 10 --warmup 5 --cuda_graph)
  COMPILED_FLAGS=(--models unet_fast --setups a b --use_ema --mixed_precision auto --rounds 3 --steps 10 --warmup 3
                  --torch_compile --torch_compile_mode reduce-overhead)
  SAMPLE_FLAGS=(--models unet_fast cnn --samplers ddpm-1000 dpmsolver-sde-20 cold-28 --batch_size 256 --ddpm_batch_size 256
                --mixed_precision bf16 --torch_compile off)
  TTQ_FLAGS=(--marks 0.5 1 2 --num_samples 10000)
  TTQ_TRAIN=(--checkpointing_steps 100000 --checkpointing_minutes 0 --logger none --eval_batch_size 2500 --overwrite_output_dir)
  TABLE_FLAGS=(--budget "${GPU_SUITE_TABLE_BUDGET:-full}" --concurrency 4)
else
  LIMIT_BENCH=1500 LIMIT_TABLE=1500  # limits only: a shared CPU is slow
  B_DEVICE=120 B_INSTALL=120 B_TRAIN=300 B_GRAPHED=0 B_COMPILED=0 B_SAMPLE=300 B_COLLECT=300
  TRAIN_FLAGS=(--models cnn --rounds 1 --steps 1 --warmup 1 --batch_size 8 --threads 1)  # one thread: a shared CPU
  SAMPLE_FLAGS=(--models cnn --samplers dpmsolver-20 cold-28 --batch_size 2 --threads 1)
  TTQ_FLAGS=(--marks 0.02 --num_samples 16 --threads 1)
  TTQ_TRAIN=(--checkpointing_steps 100000 --checkpointing_minutes 0 --logger none --overwrite_output_dir --model cnn --max_train_samples 256 --train_batch_size 16
             --eval_batch_size 16 --num_inference_steps 2 --no-use_ema)
  TABLE_FLAGS=(--budget tiny --only linear --concurrency 1)
fi

# say TEXT: on the terminal and in the run's log.
say() { echo "$*" | tee -a "$LOG"; }

# seconds_left LATER: what a part may take now, leaving LATER seconds for the parts after it and the packing.
seconds_left() { echo $(( DEADLINE - $(date +%s) - PACKING - $1 )); }

# part NAME BUDGET COMMAND...: run COMMAND under a wall-time budget, cut to what is left of the run (timeout stops
# its whole process group), output in NAME.log; then record (its exit status also in PART_STATUS) and pack.
part() {
  local name=$1 budget=$2 left start milliseconds
  shift 2
  left=$(seconds_left 0)
  if [ "$budget" -gt "$left" ]; then budget=$left; fi
  if [ "$budget" -lt 1 ]; then
    say "== $name: not started, no time left"
    printf '%s\t0\t0\tnot started\n' "$name" >> "$RESULTS/suite_parts.tsv"
    PART_STATUS=-1
    pack
    return
  fi
  say "== $name (budget ${budget} s)"
  start=$(date +%s%N)
  timeout --kill-after=$KILL_AFTER "$budget" "$@" > "$RESULTS/$name.log" 2>&1
  PART_STATUS=$?
  milliseconds=$(( ($(date +%s%N) - start) / 1000000 ))
  printf '%s\t%s\t%s\t%s\n' "$name" "$budget" "$milliseconds" "$PART_STATUS" >> "$RESULTS/suite_parts.tsv"
  say "== $name: exit $PART_STATUS after $(( milliseconds / 1000 )) s"
  pack
}

# pack: suite-<run>.json and suite-<run>.tar.gz in $OUT from what the run has written so far (each replaced whole).
pack() {
  if [ "$RUN" = bench ] && [ -d "$WORK/ttq/time_to_quality" ]; then
    mkdir -p "$RESULTS/time_to_quality" && cp -r "$WORK/ttq/time_to_quality/." "$RESULTS/time_to_quality/"
  fi
  if [ "$RUN" = table ] && [ -d "$WORK/experiments" ]; then
    mkdir -p "$RESULTS/experiments"
    (cd "$WORK/experiments" && find . \( -name '*.md' -o -name '*.csv' -o -name '*.json' -o -name '*.png' -o -name '*.log' \) \
      -not -path './runs/*/checkpoint-*' -not -path './runs/*/unet/*' -not -path './runs/*/scheduler/*' -not -path './rows/*/samples/*' \
      -exec cp --parents {} "$RESULTS/experiments/" \;)
  fi
  python3 - "$RESULTS" "$RUN" "$SIZE" "$RUN_START" "$LIMIT" <<'EOF'
import json, os, sys, time
from pathlib import Path
results, run, size, start, limit = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
parts = {}
for line in (results / "suite_parts.tsv").read_text().splitlines():
    name, budget, milliseconds, status = line.split("\t")
    parts[name] = {"budget_s": int(budget), "seconds": round(int(milliseconds) / 1000, 1), "exit": int(status) if status.isdigit() else None,
                   "status": {"0": "done", "124": "stopped at its budget", "137": "killed at its budget", "not started": "not started: no time left"}.get(status, "failed")}
device = results / "device.json"
suite = {"run": run, "size": size, "limit_s": limit, "device": json.loads(device.read_text()) if device.is_file() else None,
         "seconds": round(time.time() - start, 1), "parts": parts}
text = json.dumps(suite, indent=2) + "\n"
for path in (results / "suite.json", results.parent / f"suite-{run}.json.tmp"):
    path.write_text(text)
EOF
  mv "$WORK/suite-$RUN.json.tmp" "$OUT_DIR/suite-$RUN.json"
  tar -czf "$WORK/suite-$RUN.tar.gz.tmp" -C "$WORK" "suite-$RUN" && mv "$WORK/suite-$RUN.tar.gz.tmp" "$OUT_DIR/suite-$RUN.tar.gz"
}

DESCRIBE_DEVICE='
import json, platform, sys, torch
cuda = torch.cuda.is_available()
json.dump({"torch": torch.__version__, "cuda": cuda, "device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
           "memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None}, open(sys.argv[1], "w"), indent=2)'

for RUN in $RUNS; do
  RUN_START=$(date +%s)
  LIMIT=$([ "$RUN" = bench ] && echo "$LIMIT_BENCH" || echo "$LIMIT_TABLE")
  DEADLINE=$(( RUN_START + LIMIT ))
  RESULTS="$WORK/suite-$RUN"
  LOG="$OUT_DIR/suite-$RUN.log"
  mkdir -p "$RESULTS"
  : > "$RESULTS/suite_parts.tsv"
  : > "$LOG"
  say "== run $RUN ($SIZE), limit $LIMIT s, results in $OUT_DIR/suite-$RUN.tar.gz"

  if compgen -G "$ROOT/.whl/*.whl" > /dev/null && [ ! -d "$SITE/diffusers" ]; then
    part install_wheels "$B_INSTALL" python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$ROOT"/.whl/*.whl
  fi
  part device "$B_DEVICE" python3 -c "$DESCRIBE_DEVICE" "$RESULTS/device.json"

  if [ "$RUN" = bench ]; then
    part bench_train "$B_TRAIN" python3 benchmarks/bench_train.py "${TRAIN_FLAGS[@]}" --json --output "$RESULTS/bench_train.json"
    if [ "$B_GRAPHED" -gt 0 ]; then  # CUDA only
      for batch in 128 1024; do
        part "bench_train_graphed_$batch" "$B_GRAPHED" python3 benchmarks/bench_train.py "${GRAPHED_FLAGS[@]}" --batch_size "$batch" --json \
          --output "$RESULTS/bench_train_graphed_$batch.json"
      done
    fi
    if [ "$B_COMPILED" -gt 0 ]; then
      part bench_train_compiled "$B_COMPILED" python3 benchmarks/bench_train.py "${COMPILED_FLAGS[@]}" --json --output "$RESULTS/bench_train_compiled.json"
    fi
    part bench_sample "$B_SAMPLE" python3 benchmarks/bench_sample.py "${SAMPLE_FLAGS[@]}" --json --output "$RESULTS/bench_sample.json"
    part time_to_quality "$(seconds_left 0)" python3 benchmarks/time_to_quality.py "${TTQ_FLAGS[@]}" --output_dir "$WORK/ttq" -- "${TTQ_TRAIN[@]}"
  else
    part experiments "$(seconds_left "$B_COLLECT")" python3 -m diffusion_lab experiments "${TABLE_FLAGS[@]}" --configs_dir "$ROOT/experiments" \
      --output_dir "$WORK/experiments"
    # A table that did not finish: its finished rows, tabulated (a finished one wrote the whole table itself).
    [ "$PART_STATUS" = 0 ] || part collect "$B_COLLECT" python3 -m diffusion_lab experiments "${TABLE_FLAGS[@]}" --configs_dir "$ROOT/experiments" \
      --output_dir "$WORK/experiments" --collect
  fi
  say "== run $RUN: $(( $(date +%s) - RUN_START )) s in all; $(python3 -c 'import json, sys; print(", ".join("%s %s" % (n, p["status"]) for n, p in json.load(open(sys.argv[1]))["parts"].items()))' "$OUT_DIR/suite-$RUN.json")"
done
