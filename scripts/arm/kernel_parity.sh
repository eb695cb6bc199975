#!/usr/bin/env bash
# Parity of the aarch64 kernels themselves: cross-compiles scripts/arm/kernel_parity.cc together with
# ops/sparse_matvec.cc (setup.py's aarch64 compile flags, linked static) and runs it under
# `qemu-aarch64 -cpu cortex-a72`; every batch-1 SELL-8 (float and int8), CSR and width-4/8/16 block product is
# compared with a float64 one. Covers what the ONNX models of `make arm-check` (2 or more rows) never reach: batch 1.
# Needs aarch64-linux-gnu-g++ and qemu-user (what `make arm-check` installs); ~5 s. Exit status 0: all match.
# Run times under emulation say nothing about speed: none is printed.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${DKP_ARM_HOST_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
CXX=${DKP_ARM_CXX:-aarch64-linux-gnu-g++}
QEMU_CPU=${DKP_ARM_QEMU_CPU:-cortex-a72}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mapfile -t FLAGS < <("$PY" "$ROOT/scripts/arm/build_flags.py" --machine aarch64 | grep -v -e '^-Wl,' -e '^-s$')
printf '%s\n' "${FLAGS[@]}" | grep -q '^-mcpu=' ||
    { echo "kernel_parity: could not read setup.py's aarch64 flags with $PY (scripts/arm/build_flags.py)" >&2; exit 2; }
"$CXX" -static "${FLAGS[@]}" -I "$ROOT/ops" "$ROOT/scripts/arm/kernel_parity.cc" -o "$TMP/kernel_parity"
qemu-aarch64 -cpu "$QEMU_CPU" "$TMP/kernel_parity"
