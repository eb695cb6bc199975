"""Figure 2 redone: speed-up of the W_s mat-vec over dense as a function of sparsity, per implementation.

Each implementation is set against the dense mat-vec of its own runtime:
- our `ai.dkp::SparseMatVec` and ORT's `SparseToDenseMatMul` vs ORT's dense MatMul (from `sparse_kernel.measure`,
  which times all three side by side and checks each against scipy in float64);
- scipy CSR vs numpy's dense (BLAS) mat-vec, timed here side by side;
- TFLite's sparse FULLY_CONNECTED vs a dense FULLY_CONNECTED on the same builtin kernels (no XNNPACK, which
  cannot run sparse weights), through the project's TFLite converter (a one-layer model holding W_s alone).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .measure import FULL, Budget, compare, tflite_runner
from .workloads import dense_layer_spec, dense_matrix, random_csr, sparse_layer_spec

SHAPES = ((256, 256), (2600, 1300))
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995)
QUICK_SPARSITIES = (0.5, 0.95)

OURS = "ORT SparseMatVec (ours)"
S2D = "ORT SparseToDenseMatMul"
SCIPY = "scipy CSR"
TFLITE = "TFLite sparse FC"


def _row(m, n, s, batch, impl, seconds, base, base_impl, spread=None) -> dict[str, Any]:
    return {
        "shape": f"{m}x{n}",
        "M": m,
        "N": n,
        "sparsity": float(s),
        "batch": batch,
        "impl": impl,
        "seconds": seconds,
        "baseline": base_impl,
        "baseline_seconds": base,
        "speedup": base / seconds if seconds else None,
        "spread": spread,
    }


def ort_rows(m: int, n: int, sparsities, batch: int, threads: int, budget: Budget) -> tuple[list, list]:
    """(figure rows, H1's raw rows): our op and SparseToDenseMatMul, each vs ORT dense MatMul."""
    from . import sparse_kernel

    raw = sparse_kernel.measure(
        m, n, list(sparsities), [batch], threads,
        repeats=budget.repeats, min_time=budget.min_time, rounds=budget.rounds,
    )
    rows = []
    for r in raw:
        dense = r.get("dense_us")
        for impl, key in ((OURS, "dkp_us"), (S2D, "sparse_to_dense_us")):
            if r.get(key) and dense:
                rows.append(_row(m, n, r["sparsity"], batch, impl, r[key] * 1e-6, dense * 1e-6, "ORT MatMul"))
    return rows, raw


def scipy_rows(m: int, n: int, sparsities, batch: int, threads: int, budget: Budget) -> list[dict[str, Any]]:
    """scipy CSR @ x vs numpy dense W @ x (BLAS limited to `threads` threads), timed side by side."""
    with blas_threads(threads):
        return _scipy_rows(m, n, sparsities, batch, budget)


def blas_threads(threads: int):
    """Limit BLAS threads (numpy's dense baseline would otherwise use every core); a no-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def _scipy_rows(m: int, n: int, sparsities, batch: int, budget: Budget) -> list[dict[str, Any]]:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, batch) if batch > 1 else n).astype(np.float32)
    w = np.ascontiguousarray(dense_matrix(m, n, rng).factors["W"])
    fns = {"dense": lambda: w @ x}
    for s in sparsities:
        a = random_csr(m, n, round((1 - s) * m * n), rng).to_scipy()
        fns[s] = lambda a=a: a @ x
    t = compare(fns, budget)
    return [_row(m, n, s, batch, SCIPY, t[s].seconds, t["dense"].seconds, "numpy dense", t[s].spread)
            for s in sparsities]


def tflite_rows(m: int, n: int, sparsities, batch: int, threads: int, budget: Budget) -> list[dict[str, Any]]:
    """TFLite sparse FULLY_CONNECTED (W_s alone, no bias) vs dense FULLY_CONNECTED, timed side by side."""
    from ..converters import to_tflite

    x = np.random.default_rng(1).standard_normal((batch, n)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="dkp-bench-") as tmp:
        fns = {}
        for s in sparsities:
            path = Path(tmp) / f"sparse_{s}.tflite"
            to_tflite(sparse_layer_spec(m, n, s, seed=int(s * 1000)), path, quiet=True)
            fns[s] = tflite_runner(path, {"x": x}, threads)
        dense = Path(tmp) / "dense.tflite"
        to_tflite(dense_layer_spec(m, n), dense, quiet=True)
        # the same builtin kernel family as the sparse FC (XNNPACK cannot run sparse weights)
        fns["dense"] = tflite_runner(dense, {"x": x}, threads, default_delegates=False)
        t = compare(fns, budget)
    return [_row(m, n, s, batch, TFLITE, t[s].seconds, t["dense"].seconds, "TFLite dense FC (builtin)", t[s].spread)
            for s in sparsities]


def run(
    shapes=SHAPES,
    sparsities=SPARSITIES,
    batch: int = 1,
    threads: int = 1,
    budget: Budget = FULL,
    tflite: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(figure rows: one per implementation, shape and sparsity; the op benchmark's raw rows)."""
    rows: list[dict[str, Any]] = []
    raw_all: list[dict[str, Any]] = []
    for m, n in shapes:
        ours, raw = ort_rows(m, n, sparsities, batch, threads, budget)
        rows += ours
        raw_all += raw
        rows += scipy_rows(m, n, sparsities, batch, threads, budget)
        if tflite:
            rows += tflite_rows(m, n, sparsities, batch, threads, budget)
    return rows, raw_all
