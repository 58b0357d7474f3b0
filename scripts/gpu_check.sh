#!/usr/bin/env bash
# One-call GPU check: scripts/gpu_check.sh OUT_DIR
#
# From a fresh clone: sets up the virtual environment, makes and preprocesses the demo dataset, then measures, each
# step under its own time limit (`timeout`) so that a slow step cannot lose the others' results:
#   benchmark          polycl_benchmark, 3 repeats, at the demo's patch (compute, data path, end to end, peak memory,
#                      fine-tuning PolyCL / stock; 2-process DDP scaling when 2 GPUs are visible) and pure compute
#                      with peak memory at 256x256
#   benchmark_compile  the same with --compile (no fine-tuning, no DDP)
#   study              the --preset study timing on a subset: seed 0, k = 1 (baseline, S, O)
# One progress line per step; the summary table is OUT_DIR/gpu_check.md, everything in OUT_DIR/gpu_check.json.
# Everything is written under OUT_DIR (nnU-Net folders, logs, caches, temporary files) and, for the set-up, into the
# clone's .venv; nothing elsewhere. Designed to finish within 8 minutes on one current GPU, set-up <= 2 minutes.
#
# Environment (defaults in brackets):
#   DEVICE [cuda]; VENV [<clone>/.venv]; GPU_CHECK_SETUP [1] (0: use VENV as it is, install nothing)
#   GPU_CHECK_BUDGET [470] seconds for all steps together; each step gets min(its limit, what is left)
#   GPU_CHECK_LIMIT_<STEP> per-step limits in seconds, STEP one of SETUP DATASET PREPROCESS BENCHMARK
#       BENCHMARK_COMPILE STUDY [120 60 90 150 120 300]
#   GPU_CHECK_TINY [0] (1: tiny settings for a CPU smoke test: 5 scans, polycl_benchmark --tiny without 256x256,
#       fine-tuning and DDP figures, 1 pre-training epoch, the _smoke fine-tuning schedule, methods baseline and O)
#   GPU_CHECK_COMPILE [1] (0: skip the --compile step)
#   GPU_CHECK_STUDY_ARGS extra arguments of the study step's polycl_experiment
set -uo pipefail
if [ $# -ne 1 ]; then echo "usage: $0 OUT_DIR" >&2; exit 2; fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$1" && OUT="$(cd "$1" && pwd)"
export VENV="${VENV:-$REPO/.venv}"
DEVICE="${DEVICE:-cuda}"
TINY="${GPU_CHECK_TINY:-0}"
BUDGET="${GPU_CHECK_BUDGET:-470}"
ID=990
STEPS="$OUT/steps.tsv"
: > "$STEPS"
mkdir -p "$OUT/logs" "$OUT/tmp" "$OUT/cache" "$OUT/nnunet/raw" "$OUT/nnunet/preprocessed" "$OUT/nnunet/results"

# Every file a tool would put elsewhere (caches, temporary files) goes under OUT_DIR.
export TMPDIR="$OUT/tmp" XDG_CACHE_HOME="$OUT/cache" PIP_CACHE_DIR="$OUT/cache/pip" MPLCONFIGDIR="$OUT/cache/mpl"
export TORCHINDUCTOR_CACHE_DIR="$OUT/cache/inductor" TRITON_CACHE_DIR="$OUT/cache/triton" CUDA_CACHE_PATH="$OUT/cache/nv"
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
export nnUNet_raw="$OUT/nnunet/raw" nnUNet_preprocessed="$OUT/nnunet/preprocessed" nnUNet_results="$OUT/nnunet/results"
export PATH="$VENV/bin:$PATH"

CPUS="$(nproc 2>/dev/null || echo 2)"
START=$SECONDS
NUMBER=0
TOTAL=6

# step NAME DEFAULT_LIMIT COMMAND...: run COMMAND under its time limit, log to OUT/logs/NAME.log, one progress line.
step() {
    local name="$1" default="$2"; shift 2
    local var="GPU_CHECK_LIMIT_${name^^}" left=$((BUDGET - (SECONDS - START)))
    local limit="${!var:-$default}"
    NUMBER=$((NUMBER + 1))
    [ "$limit" -gt "$left" ] && limit="$left"
    if [ "$limit" -lt 1 ]; then
        printf '%s\t%s\t%s\t%s\n' "$name" "no time left" 0 0 >> "$STEPS"
        echo "[gpu_check] step $NUMBER/$TOTAL $name: skipped, the budget of $BUDGET s is spent"
        return
    fi
    local began=$SECONDS status
    timeout --kill-after=10 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
    local rc=$?
    case $rc in
        0) status="ok" ;;
        124|137) status="timed out" ;;
        *) status="failed (exit $rc)" ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - began))" "$limit" >> "$STEPS"
    echo "[gpu_check] step $NUMBER/$TOTAL $name: $status in $((SECONDS - began)) s (limit $limit s; log $OUT/logs/$name.log)"
}

skip() {
    NUMBER=$((NUMBER + 1))
    printf '%s\t%s\t%s\t%s\n' "$1" "skipped: $2" 0 0 >> "$STEPS"
    echo "[gpu_check] step $NUMBER/$TOTAL $1: skipped ($2)"
}

if [ "${GPU_CHECK_SETUP:-1}" = 1 ]; then
    # --system-site-packages: a machine's preinstalled torch / CUDA wheels are reused, so set-up installs little
    step setup 120 env VENV_OPTIONS="${VENV_OPTIONS:---system-site-packages}" bash "$REPO/scripts/setup_venv.sh"
else
    skip setup "GPU_CHECK_SETUP=0, using $VENV as it is"
fi

SCANS=20; BENCH_SIZE=(--repeats 3 --patch 256 256); STUDY_SIZE=()
if [ "$TINY" = 1 ]; then
    SCANS=5; BENCH_SIZE=(--tiny --num-workers 0 --no-finetuning)  # no 256x256 figure: minutes on a CPU
    STUDY_SIZE=(--pretrain-epochs 1 --schedule smoke --methods baseline O --num-workers 0 --jobs 1)
fi
step dataset 60 polycl_demo make-dataset -d "$ID" --num-scans "$SCANS"
step preprocess 90 env nnUNet_n_proc_DA=1 nnUNetv2_plan_and_preprocess -d "$ID" -c 2d -np "$(( CPUS < 8 ? CPUS : 8 ))" -npfp 2

GPUS="$(python -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)"
DDP=0
[ "$DEVICE" = cuda ] && [ "$GPUS" -ge 2 ] && DDP=2
step benchmark 150 polycl_benchmark -d "$ID" -device "$DEVICE" --ddp-processes "$DDP" \
    "${BENCH_SIZE[@]}" -o "$OUT/benchmark.json" --overwrite
if [ "${GPU_CHECK_COMPILE:-1}" = 1 ]; then
    step benchmark_compile 120 polycl_benchmark -d "$ID" -device "$DEVICE" --compile --no-finetuning \
        --ddp-processes 0 "${BENCH_SIZE[@]}" -o "$OUT/benchmark_compile.json" --overwrite
else
    skip benchmark_compile "GPU_CHECK_COMPILE=0"
fi
# shellcheck disable=SC2086
step study 300 polycl_experiment -d "$ID" --preset study --seeds 0 --k 1 -device "$DEVICE" -o "$OUT/experiment" \
    --no-progress "${STUDY_SIZE[@]}" ${GPU_CHECK_STUDY_ARGS:-}

python -m nnunet_polycl.benchmark.gpu_check "$OUT" --device "$DEVICE" --gpus "$GPUS" --tiny "$TINY"
