"""int8 forms of doped matrices, as `lower(hub, impl, quantize=...)` writes them. Two modes, one file layout:

- ``"int8"``: weights only (symmetric int8); activations, biases and the arithmetic stay float32, like a float
  model whose weights are `dequantized(w)`.
- ``"int8-dynamic"`` (W8A8 dynamic, like onnxruntime's quantize_dynamic): the same weights, and the input x of each
  doped matrix that has a W_s (both halves) quantized at run time as the standard ``DynamicQuantizeLinear`` does
  (uint8, one scale and zero point over the whole [batch, N] tensor). ``custom``: `ai.dkp::SparseMatVecInteger`
  quantizes x itself and multiplies the integers (W_s's, and B's in the Kronecker half); ``portable``:
  ``DequantizeLinear(DynamicQuantizeLinear(x))`` into the int8 matrix. `dynamic_quantize` / `dynamic_dequantize`
  are that definition in numpy.

The weights of both modes:

- W_s: values as int8 with one float32 scale per row (max |value| / 127); columns as in float files
  (`converters.onnx.matrix.stored_columns`: uint8 gaps, or uint16 for a very sparse W_s), so 2 bytes per non-zero
  instead of 8. ``custom``: `ai.dkp::SparseMatVecInt8` (``"int8"``);
  ``portable``: Cast + Mul by each entry's row scale, which onnxruntime folds at session creation.
- factors (kron B, C; lmf U, V; hmd W_top, U, V): int8 with one scale per output row, Cast + Mul in the graph
  (folded at session creation; see `converters.onnx.matrix.weight_factor` for why not DequantizeLinear).
- embedding tables (a float initializer only Gathers read, not tied to a layer): int8 rows with one scale per
  row; the gathered rows are scaled at run time, so the table stays int8 in memory too. Doped embeddings
  (`DopedGather`): B and C like the factors above (shared with a tied decoder), W_s values int8 scaled by their
  row's scale as they are gathered (a lookup has no activation to quantize: the same in both modes).
- biases stay float32.

An ``"int8"`` file's function is the float model with its weights replaced by `dequantized(w)`: that is what
validation compares it with (`dequantize_hub`), in float64; an ``"int8-dynamic"`` file's is that model with each
doped matrix that has a W_s applied to `dynamic_dequantize(*dynamic_quantize(x))` (`matrix_input`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .spec import CSR, FACTOR_NAMES, DopedMatrix, ModelSpec

QUANTIZE_MODES = ("int8", "int8-dynamic")
DYNAMIC = "int8-dynamic"  # the mode whose W_s products quantize their input at run time
_QMAX = 127.0


def check_mode(quantize: str | None) -> None:
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES} or None, got {quantize!r}")


def dynamic_quantize(x: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """ONNX DynamicQuantizeLinear of `x` (as float32, one scale over the whole tensor): (q uint8, scale, zero point).

    In float32 as the operator's definition says: scale = (max(0, max x) - min(0, min x)) / 255, zero point =
    saturate(round(-min(0, min x) / scale)), q = saturate(round(x / scale) + zero point), rounding half to even.
    An all-zero x (max = min) gets scale 1 and zero point 0, as onnxruntime returns (the definition's scale 0 would
    divide by zero; onnx.reference returns 1/255): either way it dequantizes to zeros."""
    x = np.asarray(x, np.float32)
    hi = np.float32(max(0.0, float(x.max()))) if x.size else np.float32(0)
    lo = np.float32(min(0.0, float(x.min()))) if x.size else np.float32(0)
    scale = np.float32(1) if hi == lo else np.float32((hi - lo) / np.float32(255))
    zero_point = np.uint8(np.clip(np.rint(np.float32(0) - lo / scale), 0, 255))
    q = np.clip(np.rint(x / scale) + np.float32(zero_point), 0, 255).astype(np.uint8)
    return q, scale, zero_point


def dynamic_dequantize(q: np.ndarray, scale: np.floating, zero_point: np.integer) -> np.ndarray:
    """ONNX DequantizeLinear of uint8 `q`: float32 (q - zero point) * scale."""
    return ((np.asarray(q, np.int32) - np.int32(zero_point)).astype(np.float32) * np.float32(scale)).astype(np.float32)


def dynamic_roundtrip(x: np.ndarray) -> np.ndarray:
    """What an int8-dynamic file feeds its W_s products for the input `x`: dq(q(x)) in float32."""
    return dynamic_dequantize(*dynamic_quantize(x))


def matrix_input(quantize: str | None):
    """The function a reference applies to the input of each doped matrix with a W_s for files of mode `quantize`
    (None: the identity)."""
    return dynamic_roundtrip if quantize == DYNAMIC else None


def _symmetric(values: np.ndarray, peak: np.ndarray, rows: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
    """int8 of `values` with the float32 scale peak / 127 of each row (`rows`: each value's row; zero peaks: 1)."""
    scale = np.where(peak > 0, peak / _QMAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(values / scale.astype(np.float64)[rows]), -_QMAX, _QMAX).astype(np.int8)
    return q, scale


def quantize_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D array as int8 with one float32 scale per row (rows of zeros get scale 1)."""
    a = np.asarray(a, np.float64)
    peak = np.abs(a).max(axis=1) if a.size else np.zeros(a.shape[0])
    return _symmetric(a, peak, (slice(None), None))


def csr_rows(sp: CSR) -> np.ndarray:
    """The row of each stored entry of `sp`."""
    return np.repeat(np.arange(sp.shape[0]), np.diff(sp.row_ptr.astype(np.int64)))


def quantize_csr(sp: CSR) -> tuple[np.ndarray, np.ndarray]:
    """W_s values as int8 with one float32 scale per row of W_s."""
    rows = csr_rows(sp)
    peak = np.zeros(sp.shape[0])
    np.maximum.at(peak, rows, np.abs(sp.values.astype(np.float64)))
    return _symmetric(sp.values.astype(np.float64), peak, rows)


def dequantize_rows(q: np.ndarray, scale: np.ndarray, axis: int = 0) -> np.ndarray:
    """float32 q * scale along `axis` (0: one scale per row, 1: per column), rounded once as float32 arithmetic
    would (the float64 product of an int8 and a float32 is exact)."""
    s = np.asarray(scale, np.float64)
    return (np.asarray(q, np.float64) * (s[:, None] if axis == 0 else s[None, :])).astype(np.float32)


def dequantize_csr(sp_q: CSR, row_scale: np.ndarray) -> CSR:
    """A CSR with int8 values and per-row scales as the float32 CSR it stands for."""
    rows = csr_rows(sp_q)
    values = (sp_q.values.astype(np.float64) * np.asarray(row_scale, np.float64)[rows]).astype(np.float32)
    return CSR(sp_q.shape, sp_q.row_ptr, sp_q.col_idx, values)


def dequantized(w: DopedMatrix) -> DopedMatrix:
    """The matrix an int8 file computes with in place of `w`."""
    factors = {role: dequantize_rows(*quantize_rows(f)) for role, f in w.factors.items()}
    sparse = w.sparse
    if w.sparse is not None and w.sparse.nnz:
        q, scale = quantize_csr(w.sparse)
        sparse = dequantize_csr(CSR(w.sparse.shape, w.sparse.row_ptr, w.sparse.col_idx, q), scale)
    return DopedMatrix(w.shape, w.structure, factors, sparse)


def dequantized_spec(spec: ModelSpec) -> ModelSpec:
    """`spec` with every doped matrix as its int8 file computes with it (undoped "dense" ones unchanged)."""
    from .spec import Embedding

    out = spec.map_matrices(lambda w: w if w.structure == "dense" else dequantized(w))
    dense = [w.factors["W"] for w in spec.matrices().values() if w.structure == "dense"]
    for i, b in enumerate(out.blocks):
        # a table a dense layer shares (tied weights: one tensor in the file) stays float, as `gather_tables` says
        if isinstance(b, Embedding) and not any(np.array_equal(b.weight, w) for w in dense):
            out.blocks[i] = Embedding(b.name, dequantized_table(b.weight))
    return out


def dequantize_roles(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The float tensors of one matrix from an int8 file's tensors (roles as the lowering records them:
    `<role>_scale` next to an int8 factor, `row_scale` next to int8 values)."""
    out = dict(t)
    for role in [r for r in t if r.endswith("_scale") and r != "row_scale"]:
        base = role[: -len("_scale")]
        out[base] = dequantize_rows(t[base], np.asarray(t[role]).reshape(-1), axis=1 if base == "C_T" else 0)
        del out[role]
    if "row_scale" in t:
        sp_q = CSR((len(t["row_ptr"]) - 1, 0), t["row_ptr"], t["col_idx"], t["values"])
        out["values"] = dequantize_csr(sp_q, t["row_scale"]).values
        del out["row_scale"]
    if "col_idx" in out:
        out["col_idx"] = np.asarray(out["col_idx"]).astype(np.int32)
    return out


def _subgraph_inputs(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                names |= {i for n in a.g.node for i in n.input} | _subgraph_inputs(a.g)
    return names


def gather_tables(graph: onnx.GraphProto) -> set[str]:
    """The embedding tables of `graph` that int8 files quantize: rank-2 float initializers read only as the data
    of Gather(axis 0) nodes of this graph (a table a layer also reads, as a tied decoder does, stays float)."""
    floats = {t.name for t in graph.initializer if len(t.dims) == 2 and t.data_type == onnx.TensorProto.FLOAT}
    bad = _subgraph_inputs(graph) | {o.name for o in graph.output} | {i.name for i in graph.input}
    used: set[str] = set()
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        for k, name in enumerate(node.input):
            if node.op_type == "Gather" and k == 0 and axis == 0 and node.domain in ("", "ai.onnx"):
                used.add(name)
            else:
                bad.add(name)
    return (floats & used) - bad


def dequantized_table(table: np.ndarray) -> np.ndarray:
    """An embedding table as its int8 file holds it, back in float32."""
    return dequantize_rows(*quantize_rows(table))


def dequantize_hub(hub: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `hub` whose doped matrices hold `dequantized(w)`: the float function of its int8 lowering."""
    from .converters.onnx.graph import all_graphs
    from .hub.embedding import DOPED_GATHER, read_doped_gather
    from .hub.matrix import DOPED_MATMUL, read_doped_matmul
    from .hub.schema import DOMAIN

    model = onnx.ModelProto()
    model.CopyFrom(hub)
    for g in all_graphs(model.graph):
        arrays = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        tables = gather_tables(g)
        for node in g.node:
            if node.domain != DOMAIN or node.op_type not in (DOPED_MATMUL, DOPED_GATHER):
                continue
            if node.op_type == DOPED_GATHER:  # inputs: ids, B, C, row_ptr, col_idx, values
                d = dequantized(read_doped_gather(node, arrays))
                slots = {1: d.factors["B"], 2: d.factors["C"]}
                values_slot = 5
            else:
                w = read_doped_matmul(node, arrays)[0]
                if w.structure == "dense":  # undoped matrices are not quantized
                    continue
                d = dequantized(w)
                slots = {1 + i: d.factors[role] for i, role in enumerate(FACTOR_NAMES[w.structure])}
                values_slot = 6
            if d.sparse is not None and d.sparse.nnz:
                slots[values_slot] = d.sparse.values
            # new tensors for this node alone: another node may read the same ones
            for i, value in slots.items():
                name = f"{node.input[i]}/dequantized/{node.name or node.output[0]}"
                g.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
                node.input[i] = name
        for t in g.initializer:
            if t.name in tables:
                t.CopyFrom(numpy_helper.from_array(dequantized_table(arrays[t.name]), t.name))
    return model


__all__ = ["QUANTIZE_MODES", "DYNAMIC", "check_mode", "dynamic_quantize", "dynamic_dequantize",
           "dynamic_roundtrip", "matrix_input", "quantize_rows", "quantize_csr", "dequantize_rows", "dequantize_csr",
           "dequantized", "dequantized_spec", "dequantize_roles", "dequantize_hub", "gather_tables",
           "dequantized_table"]
