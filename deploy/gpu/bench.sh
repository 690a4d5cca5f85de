#!/usr/bin/env bash
# The GPU measurements, in one run on a machine with an NVIDIA GPU, the CUDA
# driver and PyTorch with CUDA (python3 -c 'import torch' must work):
#
#     deploy/gpu/bench.sh [OUT]             # default OUT: target/gpu-bench
#
# 1. builds the coordinator with the `cuda` feature;
# 2. runs the small sweep on the CPU (one local worker per core) and on
#    cuda:0 with 1, 4 and 8 local workers sharing the GPU, and reports tasks
#    per minute;
# 3. runs a slice of Table I (the three 11-layer d = 32 models) on CPU and
#    GPU and compares the tables (python/compare_tables.py);
# 4. trains the same slice in PyTorch on the same GPU (python/train_torch.py)
#    and reports its time.
#
# Building burn's CUDA backend needs tracel's LLVM bundle, which its build
# script downloads from GitHub into ~/.local/share/tracel the first time: on
# a machine without that access, copy that folder from one that has it.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$(realpath -m "${1:-target/gpu-bench}")
rm -rf "$OUT"
mkdir -p "$OUT"
REPORT="$OUT/gpu.md"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

cargo build --release --locked -p minima-coordinator -p minima-worker --features minima-worker/cuda
BIN=target/release

seconds() { local start=$(date +%s.%N); "$@" > /dev/null; echo "$(date +%s.%N) - $start" | bc; }
tasks() { tail -n +2 "$1" | wc -l; }

{
    echo "# GPU measurements, $(date -u +%F), $(cut -d, -f1 "$OUT/gpu.txt")"
    echo
    echo "| sweep | device | local workers | seconds | tasks | tasks per minute |"
    echo "|---|---|---|---|---|---|"
} > "$REPORT"
run_sweep() { # name sweep device workers: results in $OUT/<name>-<device>-<workers>/<name>
    local dir="$OUT/$1-${3/:/}-$4" s n
    s=$(seconds "$BIN/coordinator" --sweep "$2" --out "$dir" --worker-device "$3" --local-workers "$4")
    n=$(tasks "$dir/$1/table.csv")
    echo "| $1 | $3 | $4 | $s | $n | $(echo "60 * $n / $s" | bc -l | cut -c1-6) |" >> "$REPORT"
}

run_sweep small small cpu "$(nproc)"
for workers in 1 4 8; do
    run_sweep small small cuda:0 "$workers"
done

cat > "$OUT/slice.yaml" <<'YAML'
name: slice
task: sequence-classification
grid:
  - {arch: [gru, lstm], layers: [11], hidden: [32]}
  - {arch: [transformer], layers: [11], heads: [4], hidden: [32]}
YAML
run_sweep slice "$OUT/slice.yaml" cpu 3
run_sweep slice "$OUT/slice.yaml" cuda:0 3
{
    echo
    echo "## CPU against GPU, slice of Table I"
    echo
    python3 python/compare_tables.py "$OUT/slice-cpu-3/slice/table.csv" \
        "$OUT/slice-cuda0-3/slice/table.csv" || true
} >> "$REPORT" 2>&1

{
    echo
    echo "## PyTorch on the same GPU, same slice, one model at a time"
    echo
    echo "| model | seconds |"
    echo "|---|---|"
} >> "$REPORT"
"$BIN/worker" run --arch lstm --layers 1 --hidden 8 --epochs 1 --write-data --out "$OUT/data" > /dev/null
for model in "gru 11 32" "lstm 11 32" "transformer 11 32 4"; do
    set -- $model
    heads=${4:+--heads $4}
    s=$(seconds python3 python/train_torch.py --data "$OUT/data/data" --arch "$1" --layers "$2" \
        --hidden "$3" $heads --device cuda:0)
    echo "| $model | $s |" >> "$REPORT"
done
cat "$REPORT"
