"""Benchmark of the sparse half of a doped W.x: ai.dkp::SparseMatVec against the alternatives, in one run.

For each sparsity and batch it times Y = X @ W^T for a random M x N CSR matrix W with:
  - `dkp`: our custom op in an onnxruntime graph (W as constant initializers),
  - `dense`: onnxruntime's MatMul with the dense W^T as an initializer,
  - `sparse_to_dense`: onnxruntime's com.microsoft::SparseToDenseMatMul, W fed as a sparse CSR OrtValue through
    io_binding (the op cannot read sparse initializers),
  - `scipy`: scipy.sparse CSR times a dense vector/matrix.
All onnxruntime variants run through io_binding with pre-bound inputs and outputs, so the Python overhead is the
same for each (about 4 us per run for onnxruntime itself). Times are medians via dkp_deploy.bench.timing, taken in
`rounds` interleaved rounds over the methods; the fastest round's median is kept, so a burst of load from other
processes on a shared machine does not land on one method only.
`python -m dkp_deploy.bench.sparse_kernel --help`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import scipy.sparse as sp
from onnx import TensorProto, helper, numpy_helper

from dkp_deploy import ops
from dkp_deploy.bench.timing import median_seconds
from dkp_deploy.fileio import atomic_output

METHODS = ("dkp", "dense", "sparse_to_dense", "scipy")
_OPSET = 17


def random_csr(m: int, n: int, sparsity: float, seed: int = 0) -> sp.csr_matrix:
    """An m x n float32 CSR matrix with round((1 - sparsity) * m * n) non-zeros at random places."""
    rng = np.random.default_rng(seed)
    w = sp.random(m, n, density=1.0 - sparsity, format="csr", dtype=np.float32, random_state=rng)
    w.sort_indices()
    return w


def _model(nodes, inputs, outputs, initializers=(), domains=()) -> bytes:
    graph = helper.make_graph(nodes, "bench", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", _OPSET), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def _dkp_model(w: sp.csr_matrix, batch: int) -> bytes:
    m, n = w.shape
    inits = [
        numpy_helper.from_array(w.indptr.astype(np.int32), "row_ptr"),
        numpy_helper.from_array(w.indices.astype(np.int32), "col_idx"),
        numpy_helper.from_array(w.data.astype(np.float32), "values"),
    ]
    node = helper.make_node(ops.OP_TYPE, ["X", "row_ptr", "col_idx", "values"], ["Y"], domain=ops.DOMAIN)
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, n])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [batch, m])
    return _model([node], [x], [y], inits, [ops.DOMAIN])


def _dense_model(w: sp.csr_matrix, batch: int) -> bytes:
    m, n = w.shape
    wt = numpy_helper.from_array(np.ascontiguousarray(w.toarray().T), "Wt")
    node = helper.make_node("MatMul", ["X", "Wt"], ["Y"])
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, n])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [batch, m])
    return _model([node], [x], [y], [wt])


def _sparse_to_dense_model(w: sp.csr_matrix, batch: int) -> bytes:
    # Y^T = W @ X^T: A is the sparse W, B the dense X^T, the output [M, batch].
    m, n = w.shape
    a = helper.make_sparse_tensor_value_info("A", TensorProto.FLOAT, [m, n])
    b = helper.make_tensor_value_info("B", TensorProto.FLOAT, [n, batch])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, batch])
    node = helper.make_node("SparseToDenseMatMul", ["A", "B"], ["Y"], domain="com.microsoft")
    return _model([node], [a, b], [y], domains=["com.microsoft"])


class _Bound:
    """An onnxruntime session with its inputs and output bound once; `run()` is one timed call."""

    def __init__(self, model: bytes, options: ort.SessionOptions, feeds: dict[str, ort.OrtValue], out_shape):
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.binding = self.session.io_binding()
        for name, value in feeds.items():
            self.binding.bind_ortvalue_input(name, value)
        self.out = ort.OrtValue.ortvalue_from_numpy(np.zeros(out_shape, np.float32))
        self.binding.bind_ortvalue_output("Y", self.out)
        self._values = feeds  # keep the bound buffers alive

    def run(self) -> None:
        self.session.run_with_iobinding(self.binding)

    def result(self) -> np.ndarray:
        return self.out.numpy()


def _options(threads: int, custom_ops: bool) -> ort.SessionOptions:
    attrs = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    if custom_ops:
        return ops.session_options(**attrs)
    options = ort.SessionOptions()
    for name, value in attrs.items():
        setattr(options, name, value)
    return options


def _setups(w: sp.csr_matrix, x: np.ndarray, threads: int) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """method -> (timed call, result as [batch, M]) for every method that can be set up here."""
    m, n = w.shape
    batch = x.shape[0]
    xv = ort.OrtValue.ortvalue_from_numpy(x)
    setups: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {}

    dkp = _Bound(_dkp_model(w, batch), _options(threads, True), {"X": xv}, (batch, m))
    setups["dkp"] = (dkp.run, dkp.result)

    dense = _Bound(_dense_model(w, batch), _options(threads, False), {"X": xv}, (batch, m))
    setups["dense"] = (dense.run, dense.result)

    device = ort.OrtDevice.make("cpu", 0)
    a = ort.SparseTensor.sparse_csr_from_numpy(
        np.array([m, n], np.int64), w.data, w.indices.astype(np.int64), w.indptr.astype(np.int64), device
    )
    feeds = {
        "A": ort.OrtValue.ort_value_from_sparse_tensor(a),
        "B": ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x.T)),
    }
    s2d = _Bound(_sparse_to_dense_model(w, batch), _options(threads, False), feeds, (m, batch))
    setups["sparse_to_dense"] = (s2d.run, lambda: s2d.result().T)

    if batch == 1:
        x1 = np.ascontiguousarray(x[0])
        setups["scipy"] = (lambda: w @ x1, lambda: (w @ x1)[None, :])
    else:
        xt = np.ascontiguousarray(x.T)
        setups["scipy"] = (lambda: w @ xt, lambda: (w @ xt).T)
    return setups


def measure(
    M: int = 2600,  # noqa: N803 (the matrix sizes keep their maths names)
    N: int = 1300,  # noqa: N803
    sparsities: Sequence[float] = (0.90, 0.95, 0.99),
    batches: Sequence[int] = (1, 8),
    threads: int = 1,
    *,
    repeats: int = 100,
    min_time: float = 0.05,
    rounds: int = 3,
    seed: int = 0,
) -> list[dict]:
    """Median microseconds per call of every method, one dict per (sparsity, batch).

    Each dict holds M, N, sparsity, batch, threads, nnz, `<method>_us` for each of METHODS (None when a method
    cannot run here, with `<method>_error` saying why), `speedup_vs_<method>` (that method's time over ours),
    `bytes_streamed` (values + column indices + row pointers of W, read once per call) and `dkp_gbps`
    (bytes_streamed / our time). Every method's result is checked against scipy in float64 before timing.
    """
    rows: list[dict] = []
    for sparsity in sparsities:
        w = random_csr(M, N, sparsity, seed)
        w64 = w.astype(np.float64)
        for batch in batches:
            x = np.random.default_rng(seed + batch).standard_normal((batch, N)).astype(np.float32)
            expected = (w64 @ x.astype(np.float64).T).T
            row: dict[str, Any] = {
                "M": M, "N": N, "sparsity": float(sparsity), "batch": int(batch), "threads": int(threads),
                "nnz": int(w.nnz), "bytes_streamed": int(w.nnz * 8 + (M + 1) * 4),
            }
            try:
                setups = _setups(w, x, threads)
            except Exception as e:  # SparseToDenseMatMul is the fragile one; report instead of failing the run
                setups = {}
                row["setup_error"] = f"{type(e).__name__}: {e}"
            timed: dict[str, Callable[[], Any]] = {}
            for method in METHODS:
                row[f"{method}_us"] = None
                if method not in setups:
                    row.setdefault(f"{method}_error", "not set up")
                    continue
                call, result = setups[method]
                try:
                    call()
                    got = np.asarray(result(), np.float64)
                    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
                    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-4, atol=1e-4 * scale):
                        raise AssertionError("result differs from scipy float64")
                    timed[method] = call
                except Exception as e:
                    row[f"{method}_error"] = f"{type(e).__name__}: {e}"
            for _ in range(rounds):
                for method, call in timed.items():
                    us = median_seconds(call, repeats=repeats, min_time=min_time) * 1e6
                    previous = row[f"{method}_us"]
                    row[f"{method}_us"] = us if previous is None else min(previous, us)
            ours = row["dkp_us"]
            for method in METHODS[1:]:
                theirs = row[f"{method}_us"]
                row[f"speedup_vs_{method}"] = theirs / ours if ours and theirs else None
            row["dkp_gbps"] = row["bytes_streamed"] / (ours * 1e3) if ours else None
            rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of `measure()` rows: microseconds per call and our speed-ups."""

    def num(v: float | None, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    head = (
        f"{'M':>5} {'N':>5} {'sparsity':>8} {'batch':>5} {'nnz':>7} | {'dkp us':>8} {'dense us':>9} "
        f"{'s2d us':>9} {'scipy us':>9} | {'x dense':>7} {'x s2d':>6} {'x scipy':>7} | {'GB/s':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['M']:>5} {r['N']:>5} {r['sparsity']:>8.3f} {r['batch']:>5} {r['nnz']:>7} | "
            f"{num(r['dkp_us'], '8.1f'):>8} {num(r['dense_us'], '9.1f'):>9} {num(r['sparse_to_dense_us'], '9.1f'):>9} "
            f"{num(r['scipy_us'], '9.1f'):>9} | {num(r['speedup_vs_dense'], '7.2f'):>7} "
            f"{num(r['speedup_vs_sparse_to_dense'], '6.2f'):>6} {num(r['speedup_vs_scipy'], '7.2f'):>7} | "
            f"{num(r['dkp_gbps'], '5.1f'):>5}"
        )
    errors = sorted({f"{k}: {v}" for r in rows for k, v in r.items() if k.endswith("_error")})
    return "\n".join(lines + [f"note: {e}" for e in errors])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dkp_deploy.bench.sparse_kernel", description=__doc__.splitlines()[0])
    p.add_argument("--M", type=int, default=2600, help="rows of W (outputs)")
    p.add_argument("--N", type=int, default=1300, help="columns of W (inputs)")
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.90, 0.95, 0.99])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (our op is single-threaded)")
    p.add_argument("--repeats", type=int, default=100, help="calls per median")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the fastest round's median is kept")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = p.parse_args(argv)
    rows = measure(
        args.M, args.N, args.sparsities, args.batches, args.threads, repeats=args.repeats, rounds=args.rounds
    )
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, {args.threads} thread(s)")
    print(format_table(rows))
    if args.json:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
