"""Batch-1 CSR mat-vec inner loops side by side (x86-64 only): which one SparseMatVec should use on this CPU.

    .venv/bin/python benchmarks/prototypes/spmv_variants.py [--sparsities 0.95 0.9613] [--json PATH]

Compiles spmv_variants.c with the system C compiler into a temporary directory, checks every variant against
scipy in float64, then times them with `dkp_deploy.bench.measure.compare` (interleaved rounds, medians) next to
numpy's dense mat-vec (BLAS limited to one thread). Prints non-zeros per nanosecond: a batch-1 CSR mat-vec with a
random pattern is bound by its loads (one gather of x per non-zero), not by bytes.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from dkp_deploy.bench import kernel, measure, workloads

VARIANTS = ("spmv_scalar", "spmv_gather", "spmv_pairv", "spmv_i16v")
SELL_VARIANTS = ("sell8_u16", "sell8_u16_avx", "sell8_sse", "sell8_avx8", "sell8_gpr")


def sell8(row_ptr: np.ndarray, col_idx: np.ndarray, values: np.ndarray, n: int, window: int = 256):
    """CSR -> SELL-8 (the op's batch-1 layout): slices of 8 rows sorted by length within windows, column-major
    per slice, padded to the slice's longest row (and to a multiple of 16 entries) with column n (x[n] = 0)."""
    m = len(row_ptr) - 1
    lengths = np.diff(row_ptr)
    order = np.concatenate([w[np.argsort(-lengths[w], kind="stable")]
                            for w in np.array_split(np.arange(m), max(1, -(-m // window)))])
    slices = -(-m // 8)
    row_of = np.full(slices * 8, -1, np.int32)
    row_of[:m] = order
    start = np.zeros(slices + 1, np.int64)
    cols, vals = [], []
    for sl in range(slices):
        rows = row_of[sl * 8 : sl * 8 + 8]
        width = max((lengths[r] for r in rows if r >= 0), default=0)
        width += (-width) % 2  # 16 entries per AVX step
        c = np.full((width, 8), n, np.int32)
        v = np.zeros((width, 8), np.float32)
        for lane, r in enumerate(rows):
            if r >= 0:
                k = slice(row_ptr[r], row_ptr[r + 1])
                c[: lengths[r], lane], v[: lengths[r], lane] = col_idx[k], values[k]
        cols.append(c.ravel())
        vals.append(v.ravel())
        start[sl + 1] = start[sl] + width * 8
    return start, np.concatenate(cols), np.concatenate(vals), row_of


def build(tmp: Path) -> ctypes.CDLL:
    lib = tmp / "libspmv.so"
    src = Path(__file__).with_name("spmv_variants.c")
    subprocess.run(["cc", "-O3", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return ctypes.CDLL(str(lib))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--M", type=int, default=2600)
    p.add_argument("--N", type=int, default=1300)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.9613])
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if platform.machine().lower() not in ("x86_64", "amd64"):
        print("x86-64 only (the variants use SSE/AVX intrinsics)", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(Path(tmp))
        rng = np.random.default_rng(0)
        m, n = args.M, args.N
        x = rng.standard_normal(n).astype(np.float32)
        dense = np.ascontiguousarray(workloads.dense_matrix(m, n, rng).factors["W"])
        for s in args.sparsities:
            a = workloads.random_csr(m, n, round((1 - s) * m * n), rng)
            ci16 = a.col_idx.astype(np.uint16)
            want = a.to_scipy().astype(np.float64) @ x.astype(np.float64)
            fns, outs = {}, {}
            for name in VARIANTS:
                f = getattr(lib, name)
                f.restype, f.argtypes = None, [ctypes.c_int64] + [ctypes.c_void_p] * 5
                y = outs[name] = np.zeros(m, np.float32)
                ci = ci16 if name == "spmv_i16v" else a.col_idx
                call_args = (m, a.row_ptr.ctypes.data, ci.ctypes.data, a.values.ctypes.data, x.ctypes.data,
                             y.ctypes.data)
                fns[name] = lambda f=f, c=call_args: f(*c)
                fns[name]()
                np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))
            start, cols, vals, row_of = sell8(a.row_ptr, a.col_idx, a.values, n)
            xz = np.append(x, np.float32(0))
            for name in SELL_VARIANTS:
                f = getattr(lib, name)
                f.restype, f.argtypes = None, [ctypes.c_int64] + [ctypes.c_void_p] * 6
                y = outs[name] = np.zeros(m, np.float32)
                c = cols.astype(np.uint16) if "u16" in name else cols
                call_args = (len(start) - 1, start.ctypes.data, c.ctypes.data, vals.ctypes.data, row_of.ctypes.data,
                             xz.ctypes.data, y.ctypes.data)
                fns[name] = lambda f=f, c=call_args, keep=c: f(*c)
                fns[name]()
                np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))
            fns["numpy dense"] = lambda: dense @ x
            with kernel.blas_threads(1):
                t = measure.compare(fns, measure.Budget(rounds=7, repeats=50, warmup=5))
            row = {"M": m, "N": n, "sparsity": s, "nnz": a.nnz,
                   "us": {k: v.seconds * 1e6 for k, v in t.items()},
                   "nnz_per_ns": {k: a.nnz / (v.seconds * 1e9) for k, v in t.items() if k != "numpy dense"}}
            rows.append(row)
            print(f"{m}x{n} sparsity {s:.4f} nnz {a.nnz}: " + ", ".join(
                f"{k} {v:.1f} us" + (f" ({row['nnz_per_ns'][k]:.2f} nnz/ns)" if k in row["nnz_per_ns"] else "")
                for k, v in row["us"].items()))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
