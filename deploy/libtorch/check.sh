#!/usr/bin/env bash
# Builds minima with burn's LibTorch backend, runs the small sweep with its
# workers training on LibTorch's CPU device, runs it again on the default CPU
# backend (flex), and compares the two tables (python/compare_tables.py).
#
#     deploy/libtorch/check.sh [OUT]        # default OUT: target/libtorch-check
#
# tch 0.22 (burn-tch 0.22.1) is built against PyTorch 2.9.0: the script
# installs that wheel into a virtual environment of its own (MINIMA_TORCH_VENV,
# default target/libtorch-venv; a few GB) and lets tch find libtorch inside
# it (LIBTORCH_USE_PYTORCH). Binaries land in target/libtorch/release and
# need the wheel's libraries on LD_LIBRARY_PATH, as set here, to start.
set -euo pipefail
cd "$(dirname "$0")/../.."

TORCH_VERSION=2.9.0
VENV=$(realpath -m "${MINIMA_TORCH_VENV:-target/libtorch-venv}")
OUT=$(realpath -m "${1:-target/libtorch-check}")

if ! "$VENV/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    echo "installing PyTorch $TORCH_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "torch==$TORCH_VERSION"
fi
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" LIBTORCH_USE_PYTORCH=1
TORCH_LIB=$(python -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

CARGO_TARGET_DIR=target/libtorch cargo build --release --locked -p minima-coordinator --features libtorch
BIN=target/libtorch/release/coordinator

rm -rf "$OUT"
mkdir -p "$OUT"
for device in libtorch cpu; do
    start=$(date +%s.%N)
    "$BIN" --sweep small --out "$OUT/$device" --worker-device "$device"
    echo "small sweep on $device: $(echo "$(date +%s.%N) - $start" | bc) s" | tee -a "$OUT/times.txt" >&2
done
python3 python/compare_tables.py "$OUT/cpu/small/table.csv" "$OUT/libtorch/small/table.csv" | tee "$OUT/comparison.md"
