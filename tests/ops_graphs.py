"""Helpers for the ai.dkp::SparseMatVec(Int8, Integer) tests: one-node graphs, sessions, the scipy float64 reference.

Importable from the tests (pytest puts tests/ on sys.path) and runnable as a script for the checks that must run in
a child process: `python tests/ops_graphs.py numerics --cases 100` (random cases vs scipy, used to exercise the
portable kernels with DKP_OPS_ISA=generic).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping

import numpy as np
import onnxruntime as ort
import scipy.sparse as sp
from _onnx_models import int8_rows
from onnx import helper, numpy_helper

from dkp_deploy import ops

CSR_NAMES = ("row_ptr", "col_idx", "values")
INT8_NAMES = (*CSR_NAMES, "row_scale")  # SparseMatVecInt8's matrix inputs
X_QUANT_NAMES = ("x_scale", "x_zero_point")  # SparseMatVecInteger's scalars after them
# SparseMatVec, SparseMatVecInt8, SparseMatVecInteger on uint8 X, SparseMatVecInteger on float X (it quantizes)
MODES = ("float", "int8", "integer", "dynamic")
KRON_NAMES = ("B", "C_T")  # the optional Kronecker half, after Y0 (SparseMatVecInteger: then X_kron)


def model_bytes(
    arrays: Mapping[str, np.ndarray],
    node_inputs: Iterable[str],
    constant: Iterable[str] = (),
    shapes: Mapping[str, list | None] | None = None,
    overridable: Iterable[str] = (),
    op_type: str = ops.OP_TYPE,
) -> bytes:
    """A one-node SparseMatVec (or `op_type`) model.

    Every name in `node_inputs` ("" = left out) is a graph input typed after its array, unless it is in `constant`
    (a constant initializer) or `overridable` (an initializer that is also a graph input, so a feed may replace it).
    `shapes` optionally declares a graph input's shape (default: unknown shape, any rank).
    """
    constant, overridable, shapes = set(constant), set(overridable), dict(shapes or {})
    inputs, inits = [], []
    for name in node_inputs:
        if not name:
            continue
        arr = np.asarray(arrays[name])
        if name in constant or name in overridable:
            inits.append(numpy_helper.from_array(arr, name))
        if name not in constant:
            elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
            inputs.append(helper.make_tensor_value_info(name, elem, shapes.get(name)))
    node = helper.make_node(op_type, list(node_inputs), ["Y"], domain=ops.DOMAIN, name="spmv")
    out = helper.make_tensor_value_info("Y", 1, None)
    graph = helper.make_graph([node], "spmv", inputs, [out], initializer=inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(ops.DOMAIN, ops.OPSET_VERSION)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8).SerializeToString()


def session(model: bytes, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with the op library (one intra-op thread unless told), logging only fatal errors."""
    options = ops.session_options(intra_op_num_threads=threads, log_severity_level=4)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def reference(w: sp.csr_matrix, x: np.ndarray, y0: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(X @ W^T + Y0 in float64, |X| @ |W|^T + |Y0| as the scale of its rounding error), both [..., M]."""
    m = w.shape[0]
    w64 = sp.csr_matrix(w, dtype=np.float64)
    x2 = x.reshape(int(np.prod(x.shape[:-1])), x.shape[-1]).astype(np.float64)
    y = (w64 @ x2.T).T
    scale = (abs(w64) @ np.abs(x2).T).T
    shape = (*x.shape[:-1], m)
    y, scale = y.reshape(shape), scale.reshape(shape)
    if y0 is not None:
        y0_64 = np.broadcast_to(y0.astype(np.float64), shape)
        y, scale = y + y0_64, scale + np.abs(y0_64)
    return y, scale


def random_csr(rng: np.random.Generator, m: int, n: int, density: float, empty_rows: float = 0.0) -> sp.csr_matrix:
    """A random float32 m x n CSR matrix; a fraction `empty_rows` of its rows is forced empty."""
    dense = (rng.random((m, n)) < density) * rng.standard_normal((m, n))
    dense[rng.random(m) < empty_rows] = 0.0
    w = sp.csr_matrix(dense.astype(np.float32))
    w.sort_indices()
    return w


def gap_form(w: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """W with a zero entry every 255 columns of a longer gap (the same matrix), and its uint8 column gaps (each
    entry's column minus the previous entry's in its row): the ops' uint8 col_idx, built here entry by entry."""
    row_ptr, cols, data, gaps = [0], [], [], []
    for i in range(w.shape[0]):
        prev = 0
        for k in range(w.indptr[i], w.indptr[i + 1]):
            col = int(w.indices[k])
            while col - prev > 255:
                prev += 255
                cols.append(prev), data.append(0.0), gaps.append(255)
            cols.append(col), data.append(w.data[k]), gaps.append(col - prev)
            prev = col
        row_ptr.append(len(cols))
    out = sp.csr_matrix((np.array(data, np.float32), np.array(cols, np.int32), np.array(row_ptr, np.int32)),
                        shape=w.shape)
    return out, np.array(gaps, np.uint8)


def csr_arrays(w: sp.csr_matrix, col_dtype: type = np.int32) -> dict[str, np.ndarray]:
    """The op's CSR inputs; col_dtype uint8: column gaps (W must need no filler entries: `gap_form` first)."""
    cols = w.indices.astype(col_dtype)
    if col_dtype == np.uint8:
        filled, cols = gap_form(w)
        assert filled.nnz == w.nnz, "a gap over 255: pass gap_form(w)[0]"
    return {"row_ptr": w.indptr.astype(np.int32), "col_idx": cols, "values": w.data.astype(np.float32)}


def quantize_rows(w: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """Symmetric int8 per row, written here independently of dkp_deploy: (values int8, row_scale float32 [M],
    the dequantized W in float64, which is what SparseMatVecInt8 must multiply by)."""
    m = w.shape[0]
    rows = np.repeat(np.arange(m), np.diff(w.indptr))
    peak = np.zeros(m)
    np.maximum.at(peak, rows, np.abs(w.data.astype(np.float64)))
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w.data / scale[rows]), -127, 127).astype(np.int8)
    deq = sp.csr_matrix((q.astype(np.float64) * scale[rows].astype(np.float64), w.indices, w.indptr), shape=w.shape)
    return q, scale, deq


def integer_x(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A uint8 X for SparseMatVecInteger with a random zero point and scale (not DynamicQuantizeLinear's: the op
    takes any), and the float X it stands for is x_scale * (X - x_zero_point)."""
    rng = np.random.default_rng(seed)
    zp = np.uint8(rng.integers(0, 256))
    scale = np.float32(rng.uniform(0.005, 0.05))
    q = np.clip(np.rint(x / scale) + int(zp), 0, 255).astype(np.uint8)
    return q, np.asarray(scale), np.asarray(zp)


def ort_dynamic_quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """onnxruntime's own DynamicQuantizeLinear of `x`: (uint8 X, x_scale, x_zero_point), the reference of the
    quantization a SparseMatVecInteger node does on a float X."""
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])
    outs = [helper.make_tensor_value_info(n, t, None) for n, t in (("q", 2), ("s", 1), ("z", 2))]
    graph = helper.make_graph([node], "dql", [helper.make_tensor_value_info("x", 1, None)], outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    q, scale, zp = sess.run(None, {"x": np.asarray(x, np.float32)})
    return q, scale, zp


def run_case(
    w: sp.csr_matrix, x: np.ndarray, y0: np.ndarray | None, *, constant: bool, y0_as_empty_name: bool = False,
    threads: int = 1, col_dtype: type = np.int32, mode: str = "float",
    kron: tuple[np.ndarray, np.ndarray] | None = None, kron_constant: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs Y = X @ W^T (+ Y0) through the op of `mode` (one of MODES): SparseMatVec; SparseMatVecInt8
    with W quantized per row; SparseMatVecInteger with that W and X as uint8 (`integer_x`), or ("dynamic") with
    float X, which the node quantizes (expected: W times onnxruntime's DynamicQuantizeLinear of X, dequantized).
    `kron` = (B, C): the op's Kronecker half adds kron(B, C) @ x (float x; SparseMatVecInteger on uint8 X reads it
    from X_kron, on float X its quantization), B and C_T constant initializers or graph inputs. Returns (got,
    expected float64, error scale)."""
    x_float = x  # what the Kronecker half reads: float x (dynamic: its quantization, x_hat, as W_s does)
    if col_dtype == np.uint8:
        w = gap_form(w)[0]
    arrays = {"X": x, **csr_arrays(w, col_dtype)}
    matrix = CSR_NAMES
    if mode != "float":
        arrays["values"], arrays["row_scale"], w = quantize_rows(w)
        matrix = INT8_NAMES
    names = ["X", *matrix]
    if mode == "integer":
        arrays["X"], arrays["x_scale"], arrays["x_zero_point"] = integer_x(x, seed=x.size)
        x = arrays["x_scale"].astype(np.float64) * (arrays["X"].astype(np.float64) - float(arrays["x_zero_point"]))
        names += X_QUANT_NAMES
    elif mode == "dynamic":
        q, x_scale, zp = ort_dynamic_quantize(x)
        x = x_float = x_scale.astype(np.float64) * (q.astype(np.float64) - float(zp))
        names += ["", ""]
    if y0 is not None:
        arrays["Y0"] = y0
        names.append("Y0")
    elif y0_as_empty_name or kron is not None:
        names.append("")
    if kron is not None:
        arrays["B"], arrays["C_T"] = kron[0].astype(np.float32), np.ascontiguousarray(kron[1].T, np.float32)
        names += KRON_NAMES
        if mode == "integer":
            arrays["X_kron"] = x_float
            names.append("X_kron")
    op_type = {"float": ops.OP_TYPE, "int8": "SparseMatVecInt8", "integer": "SparseMatVecInteger",
               "dynamic": "SparseMatVecInteger"}[mode]
    consts = (matrix if constant else ()) + (KRON_NAMES if kron is not None and kron_constant else ())
    sess = session(model_bytes(arrays, names, constant=consts, op_type=op_type), threads)
    feeds = {k: v for k, v in arrays.items() if k in names and k not in consts}
    (got,) = sess.run(None, feeds)
    expected, scale = reference(w, x, y0)
    if kron is not None:
        k64 = np.kron(kron[0].astype(np.float64), kron[1].astype(np.float64))
        x2 = x_float.astype(np.float64).reshape(-1, x_float.shape[-1])
        expected = expected + (x2 @ k64.T).reshape(expected.shape)
        scale = scale + (np.abs(x2) @ np.abs(k64).T).reshape(expected.shape)
    return got, expected, scale


def assert_matches(got: np.ndarray, expected: np.ndarray, scale: np.ndarray) -> None:
    """float32 accumulation over at most a few hundred terms: error <= 1e-5 of the absolute sum, plus a floor."""
    assert got.dtype == np.float32
    assert got.shape == expected.shape, (got.shape, expected.shape)
    err = np.abs(got.astype(np.float64) - expected)
    bad = err > 1e-5 * scale + 1e-6
    assert not bad.any(), f"max error {err.max():.3g} at {np.argwhere(bad)[0]}"


def divisor(rng: np.random.Generator, n: int) -> int:
    return int(rng.choice([d for d in range(1, n + 1) if n % d == 0]))


def random_numerics(cases: int, seed: int) -> int:
    """`cases` random shapes/sparsities/modes through the op, each checked against scipy; returns the count."""
    rng = np.random.default_rng(seed)
    for _ in range(cases):
        m, n = int(rng.integers(0, 40)), int(rng.integers(1, 40))
        w = random_csr(rng, m, n, float(rng.choice([0.0, 0.05, 0.3, 1.0])), empty_rows=0.3)
        lead = [(), (int(rng.integers(1, 40)),), (int(rng.integers(1, 4)), int(rng.integers(1, 12)))][rng.integers(3)]
        x = rng.standard_normal((*lead, n)).astype(np.float32)
        mode = rng.integers(3)
        y0 = None if mode == 0 else rng.standard_normal((*lead, m) if mode == 1 else (m,)).astype(np.float32)
        col_dtype = (np.int32, np.uint16, np.uint8)[rng.integers(3)]
        kron = None
        if m and rng.integers(3) == 0:  # a Kronecker half, B on an int8 grid half of the time
            m1, n1 = divisor(rng, m), divisor(rng, n)
            b = rng.standard_normal((m1, n1))
            kron = (int8_rows(b).astype(np.float32) if rng.integers(2) else b, rng.standard_normal((m // m1, n // n1)))
        got, expected, scale = run_case(w, x, y0, constant=bool(rng.integers(2)), col_dtype=col_dtype,
                                        mode=MODES[rng.integers(len(MODES))], kron=kron,
                                        kron_constant=bool(rng.integers(2)))
        assert_matches(got, expected, scale)
    return cases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("check", choices=["numerics"])
    p.add_argument("--cases", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(f"numerics: {random_numerics(args.cases, args.seed)} cases match scipy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
