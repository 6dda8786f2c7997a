#!/usr/bin/env bash
# Everything a session with a lent GPU measures, as one script: at most 9.5 minutes on an
# H100/H200 (each step has its own time limit, so one overrun keeps the others' results).
#
#     benchmarks/gpu_session.sh [OUTPUT_DIR]    # default: $OUT when set, else ./gpu-session
#
# 1. cuda_paths  every engine path with the tiny models on CUDA fp16: no NaN, bit-identical
#                reruns (exit 1 names the failing paths in the JSON's "failed")
# 2. sd15        SD1.5 512², 25 steps: plain diffusers fp16 vs Easel as shipped (EASEL_COMPILE
#                as set, default auto: on for CUDA); issue 12's it/s and 2x2 grid goals
# 3. sdxl        SDXL 1024², 30 steps: the same two; the <= 4.5 s 2x2 grid goal
# 4. sd15-compiled  the compiled baselines: plain diffusers + torch.compile and Easel + a
#                torch.compiled UNet, against plain diffusers in the same run
#
# Writes NAME.json (the script's JSON), NAME.log (its stderr) and summary.txt (exit codes).
set -uo pipefail

out=${1:-${OUT:-gpu-session}}
mkdir -p "$out"
cd "$(dirname "$0")/.."
python=${PYTHON:-python}

step() {
    local name=$1 limit_s=$2
    shift 2
    local started=$SECONDS
    timeout --kill-after=10 "$limit_s" "$python" "$@" >"$out/$name.json" 2>"$out/$name.log"
    local status=$?
    echo "$name: exit $status after $((SECONDS - started)) s (limit $limit_s s)" | tee -a "$out/summary.txt"
}

nvidia-smi >"$out/nvidia-smi.txt" 2>&1
if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device visible to torch: nothing measured" | tee "$out/summary.txt"
    exit 1
fi

step cuda_paths 75 benchmarks/cuda_paths.py --device cuda
step sd15 150 benchmarks/gpu.py --device cuda --family sd15 --steps 25 --runs 3 \
    --compile-wait 60
step sdxl 190 benchmarks/gpu.py --device cuda --family sdxl --steps 30 --runs 2 \
    --compile-wait 60
step sd15-compiled 150 benchmarks/gpu.py --device cuda --family sd15 --steps 25 --runs 3 \
    --compile --variants plain plain_compiled easel_tuned
cat "$out/summary.txt"
