#!/usr/bin/env bash
# `make arm-check`: prove the ARM deployment path on real aarch64 binaries under user-mode emulation.
#
# Cross-compiles the ops library for a Cortex-A72 (Raspberry Pi 4) with the flags setup.py uses on aarch64,
# unpacks an aarch64 Python 3.11 from Debian arm64 packages, installs the aarch64 onnxruntime / numpy and
# tflite-runtime wheels for it, converts small doped models on the x86 side, then runs them under
# `qemu-aarch64 -cpu cortex-a72` and checks their outputs against the x86 float64 reference.
# Downloads are cached under .cache/arm/ (DKP_ARM_CACHE); docs/arm.md explains every step.
# Exit status: 0 all parity checks passed, 1 a parity check failed, 2 the set-up failed.
# Emulated run times say nothing about speed on a board: this script never reports them.
set -Eeuo pipefail
trap 'echo "arm-check: set-up failed at line $LINENO: $BASH_COMMAND" >&2; exit 2' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/scripts/arm"
CACHE=${DKP_ARM_CACHE:-$ROOT/.cache/arm}
PY=${DKP_ARM_HOST_PYTHON:-$ROOT/.venv/bin/python}
MIRROR=${DKP_ARM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${DKP_ARM_DEBIAN_SUITE:-bookworm}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# The aarch64 onnxruntime defaults to the host venv's version, so both sides run the same release.
ORT_VERSION=${DKP_ARM_ORT_VERSION:-$("$PY" -c 'import onnxruntime; print(onnxruntime.__version__)' 2>/dev/null || true)}
# 1.16 is the first onnxruntime with C API 16, the version the ops library asks for: the oldest it must load into.
ORT_OLD_VERSION=${DKP_ARM_ORT_OLD_VERSION-1.16.3}
TFLITE_REQ=${DKP_ARM_TFLITE_REQ:-tflite-runtime==2.14.0}
# ai-edge-litert, TFLite's successor (the host venv's version by default; empty skips it): for Python 3.12+ boards.
LITERT_VERSION=${DKP_ARM_LITERT_VERSION-$("$PY" -c 'import importlib.metadata as m; print(m.version("ai-edge-litert"))' \
    2>/dev/null || true)}
QEMU_CPU=${DKP_ARM_QEMU_CPU:-cortex-a72}

ROOTFS="$CACHE/rootfs"
APTDIR="$CACHE/apt"
WORK="$CACHE/work"

step() { printf '\n== %s\n' "$*"; }
die() { printf 'arm-check: %s\n' "$*" >&2; exit 2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $*"; fi; }
dir_mb() { du -sm "$1" 2>/dev/null | cut -f1; }

[ -x "$PY" ] || die "no host Python at $PY: run 'make venv' first"
[ -n "$ORT_VERSION" ] || die "cannot read the host onnxruntime version (set DKP_ARM_ORT_VERSION)"
mkdir -p "$CACHE" "$WORK"
T0=$SECONDS

step "1/7 host tools: g++-aarch64-linux-gnu and qemu-user (Debian)"
if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        g++-aarch64-linux-gnu qemu-user
fi
aarch64-linux-gnu-g++ --version | head -1
qemu-aarch64 --version | head -1

step "2/7 aarch64 Python 3.11 rootfs from Debian $SUITE arm64 packages (private APT_CONFIG, dpkg -x)"
if [ ! -x "$ROOTFS/usr/bin/python3.11" ]; then
    [ -r "$KEYRING" ] || die "missing $KEYRING (apt-get install debian-archive-keyring)"
    mkdir -p "$APTDIR"/{state/lists/partial,cache/archives/partial,parts,prefs}
    : > "$APTDIR/state/status"
    printf 'deb [arch=arm64 signed-by=%s] %s %s main\n' "$KEYRING" "$MIRROR" "$SUITE" > "$APTDIR/sources.list"
    # Everything apt reads or writes points into $APTDIR: the host's apt state and configuration stay untouched.
    cat > "$APTDIR/apt.conf" <<EOF
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
APT::Install-Recommends "false";
Acquire::Languages "none";
Dir::State "$APTDIR/state";
Dir::State::status "$APTDIR/state/status";
Dir::Cache "$APTDIR/cache";
Dir::Etc::SourceList "$APTDIR/sources.list";
Dir::Etc::SourceParts "$APTDIR/parts";
Dir::Etc::Parts "$APTDIR/parts";
Dir::Etc::Main "/dev/null";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "$APTDIR/prefs";
EOF
    export APT_CONFIG="$APTDIR/apt.conf"
    apt-get update -q
    apt-get install -y -q -d python3.11 libstdc++6 libgcc-s1
    rm -rf "$ROOTFS.tmp" && mkdir -p "$ROOTFS.tmp"
    for deb in "$APTDIR"/cache/archives/*.deb; do dpkg -x "$deb" "$ROOTFS.tmp"; done
    mv "$ROOTFS.tmp" "$ROOTFS"
    # The package lists and apt's caches of them (~100 MB): needed again only to rebuild the rootfs.
    rm -rf "$APTDIR/state/lists" "$APTDIR"/cache/*.bin
    unset APT_CONFIG
fi
echo "rootfs: $(dir_mb "$ROOTFS") MB unpacked from $(ls "$APTDIR"/cache/archives/*.deb | wc -l) packages" \
     "($(dir_mb "$APTDIR/cache/archives") MB downloaded)"

# onnxruntime and ai-edge-litert read /proc/cpuinfo at import; under qemu-user they would see the host's x86
# one and crash. `-L ROOTFS` redirects absolute paths that exist under ROOTFS, so this file is what they read.
mkdir -p "$ROOTFS/proc"
for cpu in 0 1 2 3; do  # what a Raspberry Pi 4 (4 x Cortex-A72, part 0xd08) shows
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$cpu"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n'
    printf 'CPU revision\t: 3\n\n'
done > "$ROOTFS/proc/cpuinfo"

step "3/7 aarch64 wheels, installed by the host pip (--platform manylinux aarch64) into target folders"
pip_target() {  # pip_target NAME PLATFORM... -- REQUIREMENT...: aarch64 cp311 wheels into $CACHE/site-NAME
    local name=$1; shift
    local dir="$CACHE/site-$name" wheels="$CACHE/wheels/$name" platforms=() reqs=()
    while [ "$1" != "--" ]; do platforms+=(--platform "$1"); shift; done; shift
    reqs=("$@")
    local tags=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none
                "${platforms[@]}")
    if [ "$(cat "$dir/.reqs" 2>/dev/null)" != "${reqs[*]}" ]; then
        # Download once into $wheels (kept between runs), then install from there without the network.
        "$PY" -m pip download -q --disable-pip-version-check "${tags[@]}" -d "$wheels" "${reqs[@]}"
        rm -rf "$dir" "$dir.tmp"
        "$PY" -m pip install -q --disable-pip-version-check --no-warn-conflicts --no-index --find-links "$wheels" \
            "${tags[@]}" --target "$dir.tmp" "${reqs[@]}"
        echo "${reqs[*]}" > "$dir.tmp/.reqs"
        mv "$dir.tmp" "$dir"
    fi
    echo "site-$name: ${reqs[*]}: $(dir_mb "$wheels") MB of wheels, $(dir_mb "$dir") MB installed"
}
MANYLINUX=(manylinux_2_28_aarch64 manylinux_2_27_aarch64 manylinux_2_17_aarch64 manylinux2014_aarch64)
pip_target ort "${MANYLINUX[@]}" -- "onnxruntime==$ORT_VERSION" numpy onnx
# onnxruntime wheels before 1.19 were built against numpy 1.x.
[ -z "$ORT_OLD_VERSION" ] || pip_target ort-old "${MANYLINUX[@]}" -- "onnxruntime==$ORT_OLD_VERSION" "numpy<2" onnx
# tflite-runtime 2.14's aarch64 wheel is tagged manylinux_2_34 and was built against numpy 1.x.
pip_target tflite manylinux_2_34_aarch64 "${MANYLINUX[@]}" -- "$TFLITE_REQ" "numpy<2"
[ -z "$LITERT_VERSION" ] || pip_target litert "${MANYLINUX[@]}" -- "ai-edge-litert==$LITERT_VERSION" numpy

step "4/7 cross-compile ops/*.cc for aarch64 with setup.py's aarch64 flags"
FLAGS_TEXT=$("$PY" "$HERE/build_flags.py" --machine aarch64)
mapfile -t FLAGS <<< "$FLAGS_TEXT"
echo "flags: ${FLAGS[*]}"
LIB="$WORK/_dkp_ops.aarch64.so"
t=$EPOCHREALTIME
aarch64-linux-gnu-g++ -shared -fPIC "${FLAGS[@]}" "$ROOT"/ops/*.cc -o "$LIB.tmp"
mv "$LIB.tmp" "$LIB"
awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "cross-compile time on the x86 host: %.1f s\n", b - a }'
aarch64-linux-gnu-readelf -h "$LIB" | grep -E 'Class|Machine'
aarch64-linux-gnu-nm -D --defined-only "$LIB" | grep -q ' T RegisterCustomOps$' \
    || die "$LIB does not export RegisterCustomOps"

# The package as `pip install` lays it out on the board: dkp_deploy/ with the library under aarch64's extension name,
# so the aarch64 side runs the package's own deploy path (dkp_deploy.runtime, which loads it via dkp_deploy.ops).
PKG="$WORK/pkg"
rm -rf "$PKG" && mkdir -p "$PKG"
cp -r "$ROOT/dkp_deploy" "$PKG/"
find "$PKG" \( -name '*.so' -o -name '*.pyc' \) -delete
cp "$LIB" "$PKG/dkp_deploy/_dkp_ops.cpython-311-aarch64-linux-gnu.so"

step "5/7 x86 side: convert models, feeds and float64 reference outputs"
rm -rf "$WORK/models"
"$PY" "$HERE/make_models.py" --out "$WORK/models"

QEMU=(qemu-aarch64 -cpu "$QEMU_CPU" -L "$ROOTFS" "$ROOTFS/usr/bin/python3.11" -B -s)
export PYTHONNOUSERSITE=1
status=0
aarch64_run() {  # aarch64_run SITE LOG ARGS...: run_parity.py under emulation; a failure sets $status, goes on
    local site=$1 log=$2 rc=0; shift 2
    PYTHONPATH="$site" "${QEMU[@]}" "$HERE/run_parity.py" --models "$WORK/models" "$@" | tee "$log" \
        || rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        status=1
        grep -q '^FAIL' "$log" || echo "FAIL $* (PYTHONPATH $site): exited with status $rc" | tee -a "$log"
    fi
}
step "6/7 aarch64 (qemu -cpu $QEMU_CPU): the kernels alone (batch 1 too), then dkp_deploy.runtime sessions"
# the models below always feed 2 or more rows: the batch-1 kernels (float and int8 SELL-8) are checked here
if bash "$HERE/kernel_parity.sh" > "$WORK/kernels.raw" 2>&1; then
    sed 's/^/PASS /' "$WORK/kernels.raw" | tail -1 > "$WORK/kernels.log"
else
    status=1
    sed 's/^/FAIL /' "$WORK/kernels.raw" | tail -3 > "$WORK/kernels.log"
fi
cat "$WORK/kernels.log"
aarch64_run "$CACHE/site-ort:$PKG" "$WORK/ort.log" --runtime onnxruntime
rm -f "$WORK/ort-old.log"
[ -z "$ORT_OLD_VERSION" ] || aarch64_run "$CACHE/site-ort-old:$PKG" "$WORK/ort-old.log" --runtime onnxruntime
step "7/7 aarch64 (qemu -cpu $QEMU_CPU): TFLite interpreters, builtin kernels without default delegates"
aarch64_run "$CACHE/site-tflite" "$WORK/tflite.log" --runtime tflite
rm -f "$WORK/litert.log"
[ -z "$LITERT_VERSION" ] || aarch64_run "$CACHE/site-litert" "$WORK/litert.log" --runtime tflite

step "summary"
cat "$WORK"/{kernels,ort,ort-old,tflite,litert}.log 2>/dev/null | grep -E '^(aarch64|PASS|FAIL|SKIP)' || true
echo "downloads cached in $CACHE: $(dir_mb "$APTDIR/cache/archives") MB of arm64 debs," \
     "$(dir_mb "$CACHE/wheels") MB of aarch64 wheels"
echo "total wall time $((SECONDS - T0)) s (set-up and emulation; not a performance figure)"
if [ "$status" -ne 0 ]; then echo "arm-check: FAILED"; exit 1; fi
echo "arm-check: all parity checks passed"
