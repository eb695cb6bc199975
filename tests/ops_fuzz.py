"""Malformed SparseMatVec graphs and inputs, run one by one; each must end in an onnxruntime error, none in a crash.

Run by tests/test_ops_fuzz.py in a child process (a crash there fails the test instead of killing pytest):
`python tests/ops_fuzz.py`. Prints one line per case before running it (so a crash shows which), then a summary
line `FUZZ {"tried": ..., "bad": [...]}`; exits 1 if any case did not end as expected.

Every invariant of the op contract is broken on its own, with the CSR arrays as constant initializers (checked
when the session is created), as graph inputs (checked on every call) and as initializers a feed overrides; plus
wrong dtypes, ranks and Y0 shapes, huge declared sizes, malformed nodes, a reused input buffer, and random
mutations of valid CSR arrays drawn by hypothesis (those still valid must match scipy).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ops_graphs import CSR_NAMES, INT8_NAMES, X_QUANT_NAMES, assert_matches, model_bytes, reference, session

I32, F32 = np.int32, np.float32
# A valid 3 x 4 matrix: rows {0, 1}, {}, {1, 2, 3}.
ROW_PTR = np.array([0, 2, 2, 5], I32)
COL_IDX = np.array([0, 1, 1, 2, 3], I32)
VALUES = np.array([1, 2, 3, 4, 5], F32)
X = np.arange(8, dtype=F32).reshape(2, 4)
_state = ort.capi.onnxruntime_pybind11_state
# What an onnxruntime error looks like in Python (onnxruntime 1.16, which calls the op's non-status entry points,
# reports the op's errors as RuntimeException; later versions as InvalidArgument).
ORT_ERRORS = (_state.Fail, _state.InvalidArgument, _state.RuntimeException, _state.InvalidGraph, _state.NotImplemented)


@dataclass
class Case:
    label: str
    arrays: dict[str, np.ndarray]
    expect: tuple[str, ...]  # the message must name one of these inputs ("" = any onnxruntime error will do)
    node_inputs: tuple[str, ...] = ("X", *CSR_NAMES)
    constant: tuple[str, ...] = ()
    overridable: tuple[str, ...] = ()
    shapes: dict[str, list] = field(default_factory=dict)
    defaults: dict[str, np.ndarray] = field(default_factory=dict)  # initializer values the feeds replace
    op_type: str = "SparseMatVec"


def arrays(**changes: np.ndarray) -> dict[str, np.ndarray]:
    base = {"X": X, "row_ptr": ROW_PTR, "col_idx": COL_IDX, "values": VALUES}
    return {**base, **changes}


def csr_breakages() -> list[tuple[str, dict[str, np.ndarray], str]]:
    """(label, arrays, input the message must name): every CSR invariant, rank and dtype broken alone."""
    big = np.iinfo(I32).max
    return [
        ("row_ptr[0] != 0", arrays(row_ptr=np.array([1, 2, 2, 5], I32)), "row_ptr"),
        ("row_ptr decreasing", arrays(row_ptr=np.array([0, 3, 2, 5], I32)), "row_ptr"),
        ("row_ptr negative", arrays(row_ptr=np.array([0, -1, 2, 5], I32)), "row_ptr"),
        ("row_ptr[M] > nnz", arrays(row_ptr=np.array([0, 2, 2, 6], I32)), "col_idx"),
        ("row_ptr[M] huge", arrays(row_ptr=np.array([0, 2, 2, big], I32)), "col_idx"),
        ("row_ptr[M] < nnz", arrays(row_ptr=np.array([0, 2, 2, 4], I32)), "col_idx"),
        ("row_ptr middle huge", arrays(row_ptr=np.array([0, big, 2, 5], I32)), "row_ptr"),
        ("row_ptr empty", arrays(row_ptr=np.zeros(0, I32)), "row_ptr"),
        ("values shorter", arrays(values=VALUES[:4]), "values"),
        ("values longer", arrays(values=np.ones(6, F32)), "values"),
        ("col_idx negative", arrays(col_idx=np.array([0, 1, -1, 2, 3], I32)), "col_idx"),
        ("col_idx == N", arrays(col_idx=np.array([0, 1, 1, 2, 4], I32)), "col_idx"),
        ("col_idx huge", arrays(col_idx=np.array([0, 1, big, 2, 3], I32)), "col_idx"),
        ("col_idx int32 min", arrays(col_idx=np.array([np.iinfo(I32).min, 1, 1, 2, 3], I32)), "col_idx"),
        ("row_ptr rank 2", arrays(row_ptr=ROW_PTR[None]), "row_ptr"),
        ("row_ptr rank 0", arrays(row_ptr=np.array(0, I32)), "row_ptr"),
        ("col_idx rank 2", arrays(col_idx=COL_IDX[None]), "col_idx"),
        ("values rank 2", arrays(values=VALUES[:, None]), "values"),
        ("values rank 0", arrays(values=np.array(1, F32), col_idx=np.array([0], I32),
                                 row_ptr=np.array([0, 1], I32)), "values"),
        ("row_ptr int64", arrays(row_ptr=ROW_PTR.astype(np.int64)), "row_ptr"),
        ("row_ptr float32", arrays(row_ptr=ROW_PTR.astype(F32)), "row_ptr"),
        ("col_idx int64", arrays(col_idx=COL_IDX.astype(np.int64)), "col_idx"),
        ("col_idx uint32", arrays(col_idx=COL_IDX.astype(np.uint32)), "col_idx"),
        ("values float64", arrays(values=VALUES.astype(np.float64)), "values"),
        ("values float16", arrays(values=VALUES.astype(np.float16)), "values"),
        ("values int32", arrays(values=VALUES.astype(I32)), "values"),
    ]


def curated_cases() -> list[Case]:
    cases: list[Case] = []
    for label, arrs, name in csr_breakages():
        cases.append(Case(f"{label} [constant]", arrs, (name,), constant=CSR_NAMES))
        cases.append(Case(f"{label} [graph input]", arrs, (name,)))
        # Valid defaults in the graph, the broken arrays fed over them: not constant, so checked at run time.
        if all(arrs[n].dtype == arrays()[n].dtype for n in CSR_NAMES):
            cases.append(
                Case(f"{label} [overridden initializer]", arrs, (name,), overridable=CSR_NAMES, defaults=arrays())
            )
    y0_shapes = {
        "Y0 [b, M+1]": (2, 4), "Y0 [b+1, M]": (3, 3), "Y0 [M+1]": (4,), "Y0 scalar": (), "Y0 [1, b, M]": (1, 2, 3),
        "Y0 [b]": (2,),
    }
    with_y0 = ("X", *CSR_NAMES, "Y0")
    for const in ((), CSR_NAMES):
        tag = "[constant CSR]" if const else "[graph-input CSR]"
        for label, x, name in [
            ("X float64", X.astype(np.float64), "X"),
            ("X int32", X.astype(I32), "X"),
            ("X float16", X.astype(np.float16), "X"),
            ("X scalar", np.array(1.0, F32), "X"),
            ("X with N < max column + 1", X[:, :3].copy(), "col_idx"),
            ("X rank 3 with N < max column + 1", np.ones((2, 2, 2), F32), "col_idx"),
            ("X with N == 0", np.ones((2, 0), F32), "col_idx"),
        ]:
            cases.append(Case(f"{label} {tag}", arrays(X=x), (name,), constant=const))
        for label, shape in y0_shapes.items():
            cases.append(Case(f"{label} {tag}", arrays(Y0=np.ones(shape, F32)), ("Y0",), with_y0, const))
        cases.append(Case(f"Y0 float64 {tag}", arrays(Y0=np.ones((2, 3))), ("Y0",), with_y0, const))
        cases.append(Case(f"Y0 int32 {tag}", arrays(Y0=np.ones((2, 3), I32)), ("Y0",), with_y0, const))
        rank1 = arrays(X=X[0].copy(), Y0=np.ones((1, 3), F32))
        cases.append(Case(f"Y0 [1, M] for X rank 1 {tag}", rank1, ("Y0",), with_y0, const))
    # Huge declared sizes: shapes in the graph that the feeds cannot have, outputs too large to exist.
    n0 = {"row_ptr": np.zeros(17, I32), "col_idx": np.zeros(0, I32), "values": np.zeros(0, F32)}  # 16 x 0, nnz 0
    x_huge = np.ones((2**30, 2**30, 0), F32)  # 2**60 rows of nothing: the output would have 2**64 elements
    cases += [
        Case("X declared [1, 2**40]", arrays(X=X[:1].copy()), ("X",), shapes={"X": [1, 2**40]}),
        Case("row_ptr declared [2**40]", arrays(), ("row_ptr",), shapes={"row_ptr": [2**40]}),
        Case("values declared [2**62]", arrays(), ("values",), shapes={"values": [2**62]}),
        Case("output of 2**44 elements", {"X": np.ones((2**40, 0), F32), **n0}, ("X", "Y"), constant=CSR_NAMES),
        Case("output of 2**64 elements", {"X": x_huge, **n0}, ("X", "Y"), constant=CSR_NAMES),
        Case("output of 2**64 elements, graph CSR", {"X": x_huge, **n0}, ("X", "Y")),
    ]
    # Malformed nodes: onnxruntime rejects them itself; any error will do.
    cases += [
        Case("3 inputs", arrays(), ("",), ("X", "row_ptr", "col_idx")),
        Case("6 inputs", arrays(Y0=np.ones((2, 3), F32), Z=np.ones(1, F32)), ("",), ("X", *CSR_NAMES, "Y0", "Z")),
        Case("X left out", arrays(), ("",), ("", *CSR_NAMES)),
        Case("row_ptr left out", arrays(), ("",), ("X", "", "col_idx", "values")),
        Case("everything constant, col_idx == N", arrays(col_idx=np.array([0, 1, 1, 2, 4], I32)), ("col_idx",),
             constant=("X", *CSR_NAMES)),
    ]
    return cases + int8_cases() + integer_cases() + kron_cases() + gap_cases()


def gap_cases() -> list[Case]:
    """uint8 col_idx (column gaps, summed within each row) that reach past N, or that row_ptr cannot delimit."""
    u8 = np.uint8
    gaps = np.array([0, 1, 1, 1, 1], u8)  # COL_IDX as gaps
    broken = [
        ("gaps reach N", {"col_idx": np.array([0, 1, 1, 1, 2], u8)}, "col_idx"),
        ("a gap of 255", {"col_idx": np.array([0, 1, 255, 1, 1], u8)}, "col_idx"),
        ("row_ptr[M] > nnz", {"col_idx": gaps, "row_ptr": np.array([0, 2, 2, 6], I32)}, "col_idx"),
        ("row_ptr decreasing", {"col_idx": gaps, "row_ptr": np.array([0, 3, 2, 5], I32)}, "row_ptr"),
        ("row_ptr middle huge", {"col_idx": gaps, "row_ptr": np.array([0, np.iinfo(I32).max, 2, 5], I32)},
         "row_ptr"),
        ("row_ptr[0] != 0", {"col_idx": gaps, "row_ptr": np.array([1, 2, 2, 5], I32)}, "row_ptr"),
    ]
    ops = (("float op", "SparseMatVec", arrays, CSR_NAMES, ("X", *CSR_NAMES)),
           ("int8 op", "SparseMatVecInt8", int8_arrays, INT8_NAMES, ("X", *INT8_NAMES)),
           ("integer op", "SparseMatVecInteger", integer_arrays, INT8_NAMES, ("X", *INT8_NAMES, *X_QUANT_NAMES)))
    cases: list[Case] = []
    for label, changes, name in broken:
        for tag, op_type, make, csr_names, names in ops:
            for const, where in ((csr_names, "[constant]"), ((), "[graph input]")):
                cases.append(Case(f"{tag}: uint8 col_idx, {label} {where}", make(**changes), (name,), names, const,
                                  op_type=op_type))
    return cases


def int8_arrays(**changes: np.ndarray) -> dict[str, np.ndarray]:
    base = arrays(values=np.array([1, -2, 3, 127, -127], np.int8), row_scale=np.array([0.5, 1, 0.25], F32))
    return {**base, **changes}


def int8_cases() -> list[Case]:
    """SparseMatVecInt8: its own inputs broken alone, and 16-bit columns (both ops) out of range."""
    u16 = np.uint16
    broken = [
        ("row_scale [M + 1]", int8_arrays(row_scale=np.ones(4, F32)), "row_scale"),
        ("row_scale [M - 1]", int8_arrays(row_scale=np.ones(2, F32)), "row_scale"),
        ("row_scale rank 2", int8_arrays(row_scale=np.ones((1, 3), F32)), "row_scale"),
        ("row_scale float64", int8_arrays(row_scale=np.ones(3)), "row_scale"),
        ("row_scale inf", int8_arrays(row_scale=np.array([0.5, np.inf, 0.25], F32)), "row_scale"),
        ("row_scale NaN", int8_arrays(row_scale=np.array([0.5, 1, np.nan], F32)), "row_scale"),
        ("values float32 in the int8 op", int8_arrays(values=VALUES), "values"),
        ("values shorter", int8_arrays(values=np.ones(4, np.int8)), "values"),
        ("uint16 col_idx == N", int8_arrays(col_idx=np.array([0, 1, 1, 2, 4], u16)), "col_idx"),
        ("uint16 col_idx 65535", int8_arrays(col_idx=np.array([0, 1, 1, 2, 65535], u16)), "col_idx"),
        ("col_idx int8", int8_arrays(col_idx=COL_IDX.astype(np.int8)), "col_idx"),
        ("row_ptr[M] > nnz", int8_arrays(row_ptr=np.array([0, 2, 2, 6], I32)), "col_idx"),
    ]
    cases: list[Case] = []
    for label, arrs, name in broken:
        for const, tag in ((INT8_NAMES, "[constant]"), ((), "[graph input]")):
            cases.append(Case(f"int8 op: {label} {tag}", arrs, (name,), ("X", *INT8_NAMES), const,
                              op_type="SparseMatVecInt8"))
    cases.append(Case("int8 op: row_scale left out", int8_arrays(), ("",), ("X", *CSR_NAMES),
                      op_type="SparseMatVecInt8"))
    with_y0 = ("X", *INT8_NAMES, "Y0")
    for label, y0 in (("Y0 [b, M+1]", np.ones((2, 4), F32)), ("Y0 float64", np.ones((2, 3))),
                      ("Y0 [M+1]", np.ones(4, F32))):
        cases.append(Case(f"int8 op: {label}", int8_arrays(Y0=y0), ("Y0",), with_y0, INT8_NAMES,
                          op_type="SparseMatVecInt8"))
    for const, tag in ((CSR_NAMES, "[constant]"), ((), "[graph input]")):
        cases.append(Case(f"float op: uint16 col_idx == N {tag}", arrays(col_idx=np.array([0, 1, 1, 2, 4], u16)),
                          ("col_idx",), constant=const))
    return cases


def integer_arrays(**changes: np.ndarray) -> dict[str, np.ndarray]:
    base = int8_arrays(X=np.arange(8, dtype=np.uint8).reshape(2, 4), x_scale=np.asarray(0.5, F32),
                       x_zero_point=np.asarray(3, np.uint8))
    return {**base, **changes}


def integer_cases() -> list[Case]:
    """SparseMatVecInteger: X, x_scale and x_zero_point broken alone (its CSR inputs are SparseMatVecInt8's,
    checked by the same code: two of those cases again)."""
    broken = [
        ("X float32 with x_scale and x_zero_point", integer_arrays(X=X), "x_scale"),
        ("X int8", integer_arrays(X=X.astype(np.int8)), "X"),
        ("X a scalar", integer_arrays(X=np.asarray(1, np.uint8)), "X"),
        ("X [b, N - 1]", integer_arrays(X=np.ones((2, 3), np.uint8)), "col_idx"),
        ("x_scale [2]", integer_arrays(x_scale=np.ones(2, F32)), "x_scale"),
        ("x_scale [1, 1]", integer_arrays(x_scale=np.ones((1, 1), F32)), "x_scale"),
        ("x_scale float64", integer_arrays(x_scale=np.asarray(0.5)), "x_scale"),
        ("x_scale empty", integer_arrays(x_scale=np.ones(0, F32)), "x_scale"),
        ("x_zero_point int8", integer_arrays(x_zero_point=np.asarray(3, np.int8)), "x_zero_point"),
        ("x_zero_point [3]", integer_arrays(x_zero_point=np.ones(3, np.uint8)), "x_zero_point"),
        ("row_scale NaN", integer_arrays(row_scale=np.array([0.5, 1, np.nan], F32)), "row_scale"),
        ("uint16 col_idx == N", integer_arrays(col_idx=np.array([0, 1, 1, 2, 4], np.uint16)), "col_idx"),
    ]
    names = ("X", *INT8_NAMES, *X_QUANT_NAMES)
    cases: list[Case] = []
    for label, arrs, name in broken:
        for const, tag in ((INT8_NAMES, "[constant]"), ((), "[graph input]")):
            cases.append(Case(f"integer op: {label} {tag}", arrs, (name,), names, const,
                              op_type="SparseMatVecInteger"))
    for left_out in X_QUANT_NAMES:
        cases.append(Case(f"integer op: {left_out} left out", integer_arrays(), ("",),
                          tuple("" if n == left_out else n for n in names), INT8_NAMES,
                          op_type="SparseMatVecInteger"))
    cases.append(Case("integer op: Y0 [b, M+1]", integer_arrays(Y0=np.ones((2, 4), F32)), ("Y0",), (*names, "Y0"),
                      INT8_NAMES, op_type="SparseMatVecInteger"))
    # X float32, which the node quantizes itself: x_scale and x_zero_point must then be left empty
    quantizing = ("X", *INT8_NAMES, "", "")
    for label, arrs, node_inputs, name in (
        ("float X with x_scale", integer_arrays(X=X), ("X", *INT8_NAMES, "x_scale", ""), "x_scale"),
        ("float X with x_zero_point", integer_arrays(X=X), ("X", *INT8_NAMES, "", "x_zero_point"), "x_scale"),
        ("X float64, quantized by the node", integer_arrays(X=X.astype(np.float64)), quantizing, "X"),
        ("X int32, quantized by the node", integer_arrays(X=X.astype(I32)), quantizing, "X"),
        ("float X a scalar", integer_arrays(X=np.asarray(1, F32)), quantizing, "X"),
        ("float X [b, N - 1]", integer_arrays(X=np.ones((2, 3), F32)), quantizing, "col_idx"),
        ("float X, row_scale left out", integer_arrays(X=X), ("X", *CSR_NAMES), ""),
        ("float X, Y0 [b, M+1]", integer_arrays(X=X, Y0=np.ones((2, 4), F32)), (*quantizing, "Y0"), "Y0"),
    ):
        for const, tag in ((INT8_NAMES, "[constant]"), ((), "[graph input]")):
            cases.append(Case(f"integer op: {label} {tag}", arrs, (name,), node_inputs, const,
                              op_type="SparseMatVecInteger"))
    return cases


def kron_cases() -> list[Case]:
    """The optional Kronecker half (B, C_T after Y0) broken alone, on each op (W: 3 x 4 = (1 x 2) kron (3 x 2))."""
    good = {"B": np.ones((1, 2), F32), "C_T": np.ones((2, 3), F32)}
    broken = [
        ("B without C_T", {"B": good["B"]}, ("B", ""), "C_T"),
        ("C_T without B", {"C_T": good["C_T"]}, ("", "C_T"), "B"),
        ("B rank 1", {**good, "B": np.ones(2, F32)}, ("B", "C_T"), "B"),
        ("C_T rank 3", {**good, "C_T": np.ones((2, 3, 1), F32)}, ("B", "C_T"), "C_T"),
        ("B int32", {**good, "B": np.ones((1, 2), I32)}, ("B", "C_T"), "B"),
        ("M1 * M2 != M", {**good, "B": np.ones((2, 2), F32)}, ("B", "C_T"), "B"),
        ("N1 * N2 != N", {**good, "C_T": np.ones((3, 3), F32)}, ("B", "C_T"), "C_T"),
        ("B empty", {**good, "B": np.ones((0, 2), F32)}, ("B", "C_T"), "B"),
    ]
    cases: list[Case] = []
    ops = (("float op", "SparseMatVec", arrays(), ("X", *CSR_NAMES)),
           ("int8 op", "SparseMatVecInt8", int8_arrays(), ("X", *INT8_NAMES)),
           ("integer op", "SparseMatVecInteger", integer_arrays(X_kron=X), ("X", *INT8_NAMES, *X_QUANT_NAMES)))
    for tag, op, base, head in ops:
        tail = ("X_kron",) if op == "SparseMatVecInteger" else ()
        for label, changes, kron_inputs, name in broken:
            cases.append(Case(f"{tag}: {label}", {**base, **changes}, (name,), (*head, "", *kron_inputs, *tail),
                              op_type=op))
    integer = ("X", *INT8_NAMES, *X_QUANT_NAMES, "")
    cases += [
        Case("integer op: X_kron missing", integer_arrays(**good), ("X_kron",), (*integer, "B", "C_T"),
             op_type="SparseMatVecInteger"),
        Case("integer op: X_kron [b, N + 1]", integer_arrays(**good, X_kron=np.ones((2, 5), F32)), ("X_kron",),
             (*integer, "B", "C_T", "X_kron"), op_type="SparseMatVecInteger"),
        Case("integer op: X_kron uint8", integer_arrays(**good, X_kron=np.ones((2, 4), np.uint8)), ("X_kron",),
             (*integer, "B", "C_T", "X_kron"), op_type="SparseMatVecInteger"),
        Case("integer op: X_kron without B and C_T", integer_arrays(X_kron=X), ("X_kron",),
             (*integer, "", "", "X_kron"), op_type="SparseMatVecInteger"),
        # float X (the node quantizes it): X_kron may be left out (the half reads X), but a given one is checked
        Case("integer op, float X: X_kron [b, N + 1]", integer_arrays(**good, X=X, X_kron=np.ones((2, 5), F32)),
             ("X_kron",), ("X", *INT8_NAMES, "", "", "", "B", "C_T", "X_kron"), op_type="SparseMatVecInteger"),
        Case("integer op, float X: M1 * M2 != M", integer_arrays(**{**good, "B": np.ones((2, 2), F32)}, X=X), ("B",),
             ("X", *INT8_NAMES, "", "", "", "B", "C_T"), op_type="SparseMatVecInteger"),
    ]
    return cases


def run(case: Case) -> str | None:
    """None when the case ended in an onnxruntime error naming an expected input, else what went wrong."""
    try:
        graph_arrays = {**case.arrays, **case.defaults}
        model = model_bytes(graph_arrays, case.node_inputs, case.constant, case.shapes, case.overridable,
                            case.op_type)
        sess = session(model)
        feeds = {n: case.arrays[n] for n in case.node_inputs if n and n not in case.constant}
        sess.run(None, feeds)
    except ORT_ERRORS as e:
        msg = str(e)
        if case.expect == ("",) or any(f"'{n}'" in msg or f"({n})" in msg or f": {n}" in msg for n in case.expect):
            return None
        return f"error does not name {case.expect}: {msg[:300]}"
    except Exception as e:  # noqa: BLE001 - anything else (e.g. a numpy or onnx error) is a defect of this script
        return f"not an onnxruntime error: {type(e).__name__}: {str(e)[:300]}"
    return "no error"


def reused_buffer_case() -> str | None:
    """A graph-input col_idx buffer refilled in place with an out-of-range column must be caught on the next run."""
    col_idx = COL_IDX.copy()
    sess = session(model_bytes(arrays(), ("X", *CSR_NAMES)))
    feeds = {"X": X, "row_ptr": ROW_PTR, "col_idx": col_idx, "values": VALUES}
    sess.run(None, feeds)
    col_idx[4] = 1000
    try:
        sess.run(None, feeds)
    except ORT_ERRORS as e:
        return None if "'col_idx'" in str(e) else f"error does not name col_idx: {e}"
    return "no error after the buffer changed"


def valid(row_ptr: np.ndarray, col_idx: np.ndarray, values: np.ndarray, n: int) -> bool:
    """The contract's CSR invariants, spelled out in numpy."""
    return bool(
        row_ptr.size >= 1 and row_ptr[0] == 0 and np.all(np.diff(row_ptr.astype(np.int64)) >= 0)
        and row_ptr[-1] == col_idx.size == values.size and np.all((col_idx >= 0) & (col_idx < n))
    )


def mutation_check(counts: dict[str, int], bad: list[str]) -> Callable[[], None]:
    @settings(
        max_examples=150, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(st.data())
    def check(data: st.DataObject) -> None:
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        m, n = data.draw(st.integers(0, 6)), data.draw(st.integers(1, 6))
        w = sp.random(m, n, density=0.5, format="csr", dtype=F32, random_state=rng)
        rp, ci, vals = w.indptr.astype(I32), w.indices.astype(I32), w.data.astype(F32)
        target = data.draw(st.sampled_from(["row_ptr", "col_idx", "values"]))
        arr = {"row_ptr": rp, "col_idx": ci, "values": vals}[target]
        kind = data.draw(st.sampled_from(["set", "drop", "append"]))
        special = st.sampled_from([-1, 0, 1, n - 1, n, n + 1, 2**31 - 1, -(2**31)])
        if kind == "set" and arr.size:
            arr = arr.copy()
            arr[data.draw(st.integers(0, arr.size - 1))] = data.draw(st.one_of(special, st.integers(-3, 9)))
        elif kind == "drop" and arr.size:
            arr = np.delete(arr, data.draw(st.integers(0, arr.size - 1)))
        else:
            arr = np.append(arr, np.array(data.draw(special), arr.dtype))
        mutated = {"row_ptr": rp, "col_idx": ci, "values": vals, target: arr}
        x = rng.standard_normal((data.draw(st.integers(1, 3)), n)).astype(F32)
        constant = CSR_NAMES if data.draw(st.booleans()) else ()
        case = Case(f"mutation {target} {kind}", {"X": x, **mutated}, CSR_NAMES, constant=constant)
        counts["tried"] += 1
        if valid(mutated["row_ptr"], mutated["col_idx"], mutated["values"], n):
            counts["still_valid"] += 1
            sess = session(model_bytes(case.arrays, case.node_inputs, constant))
            (got,) = sess.run(None, {k: v for k, v in case.arrays.items() if k not in constant})
            rows = len(mutated["row_ptr"]) - 1
            w2 = sp.csr_matrix((mutated["values"], mutated["col_idx"], mutated["row_ptr"]), shape=(rows, n))
            try:
                assert_matches(got, *reference(w2, x, None))
            except AssertionError as e:
                bad.append(f"{case.label}: valid CSR computed wrongly: {e}")
        elif (problem := run(case)) is not None:
            bad.append(f"{case.label} {mutated}: {problem}")

    return check


def main() -> int:
    bad: list[str] = []
    tried = 0
    for case in curated_cases():
        print(case.label, flush=True)
        tried += 1
        if (problem := run(case)) is not None:
            bad.append(f"{case.label}: {problem}")
    print("reused input buffer", flush=True)
    tried += 1
    if (problem := reused_buffer_case()) is not None:
        bad.append(f"reused input buffer: {problem}")
    counts = {"tried": 0, "still_valid": 0}
    mutation_check(counts, bad)()
    print("FUZZ " + json.dumps({"curated": tried, "mutations": counts["tried"], "still_valid": counts["still_valid"],
                                "tried": tried + counts["tried"], "bad": bad}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
