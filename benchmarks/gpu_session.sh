#!/usr/bin/env bash
# Everything a session with a lent GPU measures, as one script: at most 9.5 minutes on an
# H100/H200 (each step has its own time limit, so one overrun keeps the others' results).
#
#     benchmarks/gpu_session.sh [OUTPUT_DIR]    # default: $OUT when set, else ./gpu-session
#
# 1. cuda_paths      every engine path with the tiny models on CUDA fp16: no NaN, bit-identical
#                    reruns, and the same pictures with the UNet replayed from CUDA graphs
#                    (exit 1 names the failing paths in the JSON's "failed")
# 2. sd15            SD1.5 512², 25 steps: plain diffusers fp16 against Easel as shipped (UNet
#                    replayed from CUDA graphs) and Easel eager (EASEL_CUDA_GRAPHS=false)
# 3. sdxl            SDXL 1024², 30 steps: the same three; the <= 4.5 s grid goal
# 4. profile-sd15    one eager sampling step of each under torch.profiler: host and device
#                    time, operators and kernels per step, where Easel's step differs from
#                    plain; per sampler (Euler a, DPM++ 2M Karras): operators, host waits,
#                    copies from host to device and Python calls per step, by call site
# 5. compiled-sd15   EASEL_COMPILE=on, SD1.5 512², 25 steps, batch 1, inductor's default mode:
#                    compiled against eager Easel, compile time, pixel difference (last: the
#                    first to cut when the lease runs short)
#
# Compiling every batch size in the background does not fit a lease (79 s for one UNet and one
# decoder shape on an H200), so step 5 compiles batch 1 only.
# Writes NAME.json (each step's JSON), steps.log (nvidia-smi, then the steps' stderr) and
# summary.txt (exit codes): eight files at most, the most the device tool returns.
set -uo pipefail

out=${1:-${OUT:-gpu-session}}
mkdir -p "$out"
cd "$(dirname "$0")/.."
python=${PYTHON:-python}

step() {
    local name=$1 limit_s=$2
    shift 2
    local started=$SECONDS
    echo "== $name" >>"$out/steps.log"
    timeout --kill-after=10 "$limit_s" "$@" >"$out/$name.json" 2>>"$out/steps.log"
    local status=$?
    echo "$name: exit $status after $((SECONDS - started)) s (limit $limit_s s)" | tee -a "$out/summary.txt"
}

nvidia-smi >>"$out/steps.log" 2>&1
if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device visible to torch: nothing measured" | tee "$out/summary.txt"
    exit 1
fi

step cuda_paths 75 "$python" benchmarks/cuda_paths.py --device cuda
step sd15 140 "$python" benchmarks/gpu.py --device cuda --family sd15 --steps 25 --runs 3 \
    --variants plain easel easel_eager
step sdxl 150 "$python" benchmarks/gpu.py --device cuda --family sdxl --steps 30 --runs 1 --backlog 4 \
    --variants plain easel easel_eager
step profile-sd15 80 "$python" benchmarks/step_profile.py --device cuda --family sd15 \
    --steps 3 --extra 4
step compiled-sd15 115 "$python" benchmarks/compiled.py --device cuda --family sd15 --size 512 \
    --steps 25 --seen-shapes-only --no-grid --compile-wait 90
cat "$out/summary.txt"
