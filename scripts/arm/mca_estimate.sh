#!/usr/bin/env bash
# A static llvm-mca estimate of the aarch64 ops library's inner loops on a Cortex-A72 (Raspberry Pi 4).
#
# Cross-compiles ops/sparse_matvec.cc to assembly with exactly the compile flags setup.py gives an aarch64 machine
# (build_flags.py), cuts out the inner loops of the portable kernels that run there (batch-1 SELL-8 for float and
# for int8 values, `sell_generic`; batch > 1 `spmm_generic<4|8|16>`), runs llvm-mca on each and prints a table:
# instructions, load-pipe uops and cycles per loop iteration, cycles and ns per non-zero, the busiest resource.
#
# These are static estimates from LLVM's scheduling model (LLVM models the A72 with its Cortex-A57 model), with
# every load an L1 hit: no measurement on a board, and nothing from emulation. docs/arm.md explains the numbers.
#
# usage: scripts/arm/mca_estimate.sh [--show] [--source FILE.cc]
#   --show          also print each loop's instructions (what llvm-mca was given)
#   --source FILE   estimate another copy of sparse_matvec.cc (to compare a change with the tree's version)
# env: DKP_MCA_CPU (cortex-a72), DKP_MCA_GHZ (1.5, the Pi 4 clock), DKP_MCA_ITERATIONS (500),
#      DKP_ARM_HOST_PYTHON (.venv/bin/python, else python3; runs build_flags.py), DKP_ARM_CXX (aarch64-linux-gnu-g++)
# Needs: aarch64-linux-gnu-g++, llvm-mca (LLVM 14 here), a Python with setuptools. Takes a few seconds.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SRC="$ROOT/ops/sparse_matvec.cc"
SHOW=0
while [ $# -gt 0 ]; do
    case $1 in
        --show) SHOW=1 ;;
        --source) SRC=$2; shift ;;
        -h|--help) sed -n '2,/^set /p' "$0" | grep '^#'; exit 0 ;;
        *) echo "mca_estimate: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
CPU=${DKP_MCA_CPU:-cortex-a72}
GHZ=${DKP_MCA_GHZ:-1.5}
ITER=${DKP_MCA_ITERATIONS:-500}
CXX=${DKP_ARM_CXX:-aarch64-linux-gnu-g++}
PY=${DKP_ARM_HOST_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
MCA=${DKP_MCA:-$(command -v llvm-mca || command -v llvm-mca-14 || true)}
[ -n "$MCA" ] || { echo "mca_estimate: llvm-mca not found" >&2; exit 2; }
command -v "$CXX" >/dev/null || { echo "mca_estimate: $CXX not found" >&2; exit 2; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Compile flags only (the -Wl,... and -s are link flags); -fPIC as setuptools builds the shared library.
mapfile -t FLAGS < <("$PY" "$ROOT/scripts/arm/build_flags.py" --machine aarch64 | grep -v -e '^-Wl,' -e '^-s$')
printf '%s\n' "${FLAGS[@]}" | grep -q '^-mcpu=' ||
    { echo "mca_estimate: could not read setup.py's aarch64 flags with $PY (scripts/arm/build_flags.py)" >&2; exit 2; }
# The source is compiled where it lies so its #include "sparse_matvec.h" resolves; -I covers a copy elsewhere.
"$CXX" -S -fPIC "${FLAGS[@]}" -I "$ROOT/ops" "$SRC" -o "$TMP/sm.s"

# loops FUNC_REGEX: the single-basic-block loops (a label, then a branch back to it with no label in between) of
# the function whose mangled name matches FUNC_REGEX, one per file $TMP/loop.N, instructions only.
loops() {
    rm -f "$TMP"/loop.*
    awk -v re="$1" -v out="$TMP/loop" '
        /^[A-Za-z_][A-Za-z0-9_.$]*:/ { infn = ($0 ~ re); next }
        !infn { next }
        /^\.L[0-9A-Za-z_]+:/ { label = substr($1, 1, length($1) - 1); n = 0; next }
        /^[ \t]*\./ { next }                      # directives (.cfi, .p2align, ...)
        /^[ \t]*$/ { next }
        {
            sub(/^[ \t]+/, ""); body[++n] = $0
            if ($1 ~ /^b(\.?(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le))?$|^cbn?z$|^tbn?z$/ &&
                $NF == label && label != "") {
                f = out "." (++loops); for (i = 1; i <= n; ++i) print body[i] > f; close(f)
                label = ""; n = 0
            }
        }' "$TMP/sm.s"
}

# mca FILE: "cycles_per_iter rthroughput resource pressure" from llvm-mca; resource: the busiest unit and its load.
mca() {
    "$MCA" -mtriple=aarch64 -mcpu="$CPU" -iterations="$ITER" -timeline=false -instruction-info=false "$1" 2>&1 |
        awk -v iter="$ITER" '
            /^Total Cycles:/ { cyc = $3 }
            /^Block RThroughput:/ { rt = $3 }
            /^\[[0-9.]+\][ \t]+- / { units[++nu] = $3 }
            /^Resource pressure per iteration:/ { getline; getline; for (i = 1; i <= NF; ++i) p[i] = $i }
            END {
                best = 0
                for (i = 1; i <= nu; ++i) if (p[i] != "-" && p[i] + 0 > best) { best = p[i] + 0; who = units[i] }
                sub(/^A57Unit/, "", who)
                printf "%.2f %s %s %.1f\n", cyc / iter, rt, who, best
            }'
}

unit_name() {  # LLVM's Cortex-A57 model units, as ARM names the A72 pipelines
    case $1 in
        L) echo "L (load)" ;; S) echo "S (store)" ;; I) echo "I0/I1 (int)" ;; M) echo "M (multi-cycle int)" ;;
        W|X) echo "F0/F1 (NEON/FP)" ;; B) echo "B (branch)" ;; *) echo "$1" ;;
    esac
}

ROWS=()
# row NAME LOOPFILE NNZ_PER_ITER ROWS_OF_X (how many rows of X each non-zero multiplies)
row() {
    local name=$1 f=$2 nnz=$3 xrows=$4 n loads spills scalar cyc rt unit pressure
    n=$(wc -l < "$f")
    # loads: every ld* instruction (ldp counts once); spills: stack accesses; scalar: int -> float from a GPR
    loads=$(grep -cE '^ld' "$f" || true)
    spills=$(grep -cE '\[sp' "$f" || true)
    scalar=$(grep -cE '^[su]cvtf[[:space:]]+s[0-9]+, [wx]' "$f" || true)
    read -r cyc rt unit pressure < <(mca "$f")
    ROWS+=("$(awk -v name="$name" -v nnz="$nnz" -v xr="$xrows" -v n="$n" -v ld="$loads" -v sp="$spills" \
        -v sc="$scalar" -v cyc="$cyc" -v rt="$rt" -v unit="$(unit_name "$unit")" -v pr="$pressure" -v ghz="$GHZ" \
        'BEGIN {
        printf "| %s | %d | %d | %d | %d / %d | %.2f | %.1f | %.2f | %.2f | %.2f | %s, %.1f uops/iter |",
            name, nnz, n, ld, sp, sc, cyc, rt, cyc / nnz, cyc / nnz / ghz, cyc / nnz / xr, unit, pr }')")
    if [ "$SHOW" = 1 ]; then
        printf '\n-- %s (%s non-zeros per iteration)\n' "$name" "$nnz"
        sed 's/^/    /' "$f"
    fi
}

# Batch 1, SELL-8 (sell_generic, both bodies inlined): one iteration = one step of a slice = 8 non-zeros.
loops 'sell_generic'
f32="" i8=""
for f in "$TMP"/loop.*; do
    [ -e "$f" ] || continue
    grep -qE '^fmla' "$f" || continue
    if grep -qE '^(scvtf|sxtl|sshll|sbfx|sxtb)' "$f"; then i8=$f; else f32=$f; fi
done
[ -n "$f32" ] && [ -n "$i8" ] || { echo "mca_estimate: could not find both SELL-8 loops in sell_generic" >&2; exit 1; }
cp "$f32" "$TMP/sell_f32"; cp "$i8" "$TMP/sell_i8"
row "SELL-8 batch 1, float values" "$TMP/sell_f32" 8 1
row "SELL-8 batch 1, int8 values" "$TMP/sell_i8" 8 1

# Batch > 1 (spmm_generic<W>): the main loop is the one with the most FMAs; it handles FMAs / (W / 4) non-zeros.
for w in 4 8 16; do
    loops "spmm_genericILi${w}E"
    best="" bestn=0
    for f in "$TMP"/loop.*; do
        [ -e "$f" ] || continue
        c=$(grep -cE '^fmla' "$f" || true)
        if [ "$c" -gt "$bestn" ]; then best=$f; bestn=$c; fi
    done
    [ -n "$best" ] || { echo "mca_estimate: no FMA loop in spmm_generic<$w>" >&2; exit 1; }
    cp "$best" "$TMP/spmm_$w"
    row "spmm batch > 1, width $w" "$TMP/spmm_$w" $((bestn / (w / 4))) "$w"
done

echo
echo "llvm-mca $("$MCA" --version | sed -n 's/.*LLVM version \([0-9.]*\).*/\1/p'), -mcpu=$CPU, $ITER iterations;" \
     "$("$CXX" --version | head -1 | sed 's/ (.*)//'), flags: ${FLAGS[*]}"
echo "source: ${SRC#"$ROOT"/}; ns at $GHZ GHz; static estimate, all loads L1 hits: not a measurement"
echo
echo "| loop | nnz/iter | instrs/iter | loads/iter | stack / scalar cvt | cycles/iter | RThroughput | cycles/nnz | ns/nnz |" \
     "cycles/(nnz x row) | busiest resource |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
