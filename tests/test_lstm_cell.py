"""ai.dkp::LSTMCell (the C++ op) against numpy in float64, its error messages, and the custom lowering's rule that
fuses the hub's cell into it (`dkp_deploy.lower.lstm_cell`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from scipy.special import expit

from dkp_deploy import ops
from dkp_deploy.hub.schema import register_schemas
from dkp_deploy.lower import lower
from dkp_deploy.lower.lstm_cell import fuse_lstm_cells

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(ops.library_path() is None, reason="the C++ op library is not built")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return expit(np.asarray(x, np.float64))  # accurate in the tails, where 1 / (1 + exp(-x)) would overflow


def cell64(gates: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(h_next, c_next, the scale of c_next's rounding error: |sigmoid(f) c| + |sigmoid(i) tanh(g)|) in float64."""
    i, f, g, o = np.split(gates.astype(np.float64), 4, axis=-1)
    fc, ig = _sigmoid(f) * c.astype(np.float64), _sigmoid(i) * np.tanh(g)
    c_next = fc + ig
    return _sigmoid(o) * np.tanh(c_next), c_next, np.abs(fc) + np.abs(ig)


def cell_model(gates_shape, c_shape) -> bytes:
    register_schemas()
    node = helper.make_node("LSTMCell", ["gates", "c"], ["h_next", "c_next"], domain="ai.dkp", name="cell")
    graph = helper.make_graph(
        [node], "cell",
        [helper.make_tensor_value_info("gates", TensorProto.FLOAT, gates_shape),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, c_shape)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("h_next", "c_next")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.dkp", 1)])
    return model.SerializeToString()


def run_cell(gates: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort

    options = ops.session_options(intra_op_num_threads=1, log_severity_level=4)
    gates, c = np.asarray(gates), np.asarray(c)
    sess = ort.InferenceSession(cell_model([None] * gates.ndim, [None] * c.ndim), options,
                                providers=["CPUExecutionProvider"])
    h, cn = sess.run(None, {"gates": gates, "c": c})
    return h, cn


def check_cell(gates: np.ndarray, c: np.ndarray) -> None:
    h, cn = run_cell(gates, c)
    h_ref, c_ref, scale = cell64(gates, c)
    assert h.shape == c.shape and cn.shape == c.shape
    # h = sigmoid(o) tanh(c_next): c_next's error passes through with a factor <= 1
    bounds = (("c_next", cn, c_ref, 1e-6 * scale), ("h_next", h, h_ref, 1e-6 * (scale + np.abs(h_ref))))
    for name, got, ref, bound in bounds:
        bad = np.argwhere(np.abs(got - ref) > bound + 1e-37)
        if bad.size:
            k = tuple(bad[0])
            hidden = c.shape[-1]
            g = [gates[(*k[:-1], q * hidden + k[-1])] for q in range(4)]
            raise AssertionError(f"{name}{list(k)}: {got[k]!r} vs {ref[k]!r} (gates i f g o {g}, c {c[k]!r})")


@st.composite
def cells(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    hidden = draw(st.sampled_from([1, 3, 4, 7, 8, 15, 16, 17, 33, 650]))  # every vector width and its tails
    lead = draw(st.sampled_from([(), (1,), (3,), (2, 5)]))
    spread = draw(st.sampled_from([0.1, 1.0, 4.0, 30.0]))
    gates = (rng.standard_normal((*lead, 4 * hidden)) * spread).astype(np.float32)
    c = (rng.standard_normal((*lead, hidden)) * spread).astype(np.float32)
    return gates, c


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells())
def test_cell_matches_float64(case) -> None:
    check_cell(*case)


def _run_cell_rows(i, f, g, o, c):
    return run_cell(np.concatenate([i, f, g, o], -1), c)


def test_tanh_and_sigmoid_to_a_few_ulp() -> None:
    x = np.linspace(-12, 12, 40001).astype(np.float32)
    x = np.concatenate([x, np.geomspace(1e-30, 1e-2, 200, dtype=np.float32), -np.geomspace(1e-30, 1e-2, 200,
                        dtype=np.float32), np.float32([0.5, -0.5, np.nextafter(np.float32(0.5), 0), 9, -9])])[None]
    big, zero = np.full_like(x, 100.0), np.zeros_like(x)
    _, tanh_out = _run_cell_rows(big, -big, x, big, zero)  # c_next = 1 * tanh(g)
    _, sig_out = _run_cell_rows(x, -big, big, big, zero)  # c_next = sigmoid(i) * 1
    x64 = x.astype(np.float64)
    ulp = np.finfo(np.float32).eps
    assert np.all(np.abs(tanh_out - np.tanh(x64)) <= 5 * ulp * np.abs(np.tanh(x64)))
    assert np.all(np.abs(sig_out - _sigmoid(x64)) <= 5 * ulp * _sigmoid(x64))


def test_non_finite_gates() -> None:
    """NaN in any gate reaches the outputs it feeds; +-inf saturates like the float64 formula."""
    nan, inf = np.float32(np.nan), np.float32(np.inf)
    i = np.float32([[nan, 0, 0, 0, inf, inf, 0]])
    f = np.float32([[0, nan, 0, 0, 0, 0, inf]])
    g = np.float32([[0, 0, nan, 0, inf, -inf, 0]])
    o = np.float32([[0, 0, 0, nan, 0, 0, -inf]])
    c = np.float32([[1, 1, 1, 1, 0, 0, 2]])
    h, cn = _run_cell_rows(i, f, g, o, c)
    assert np.isnan(cn[0, :3]).all() and np.isnan(h[0, :4]).all() and not np.isnan(cn[0, 3])
    np.testing.assert_allclose(cn[0, 4:], [1.0, -1.0, 2.0], rtol=1e-6)
    # sigmoid(-inf): exp's argument is clamped to 88.3, so it is ~4.5e-39 rather than 0
    np.testing.assert_allclose(h[0, 4:], [0.5 * np.tanh(1.0), -0.5 * np.tanh(1.0), 0.0], rtol=1e-6, atol=1e-38)


def test_empty_batch() -> None:
    h, cn = run_cell(np.zeros((0, 12), np.float32), np.zeros((0, 3), np.float32))
    assert h.shape == (0, 3) and cn.shape == (0, 3)


@pytest.mark.parametrize("gates_shape,c_shape", [((2, 12), (2, 4)), ((2, 16), (3, 4)), ((2, 2, 16), (2, 4)),
                                                 ((16,), (1, 4))])
def test_bad_shapes_name_the_node_and_input(gates_shape, c_shape) -> None:
    with pytest.raises(Exception, match=r"LSTMCell node 'cell': input 'gates' must have shape"):
        run_cell(np.zeros(gates_shape, np.float32), np.zeros(c_shape, np.float32))


def test_scalar_input_is_refused() -> None:
    with pytest.raises(Exception, match=r"LSTMCell node 'cell': input 'c' must have rank >= 1"):
        run_cell(np.zeros((4,), np.float32), np.float32(1.0))


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_capped_kernels_match_too(isa: str) -> None:
    """DKP_OPS_ISA=generic forces the baseline vectors (ARM's), =avx2 the AVX2 ones; checked in a child process."""
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DKP_OPS_ISA": isa})
    assert proc.returncode == 0 and "cells match" in proc.stdout, proc.stdout + proc.stderr


# --- the fusion rule ---------------------------------------------------------------------------------------------

def _cell_graph(axis: int = 1, sizes: list[int] | None = None, c_shape=("batch", 5), gates_width: int = 20,
                swap: bool = False) -> onnx.ModelProto:
    """The hub's cell written by hand: Split, Sigmoid, Tanh, Mul, Add (`swap`: operands of every Mul / Add swapped,
    as another exporter might write them)."""
    def mul(a, b, out):
        return helper.make_node("Mul", [b, a] if swap else [a, b], [out])

    split_inputs = ["gates"] + (["sizes"] if sizes is not None else [])
    nodes = [
        helper.make_node("Split", split_inputs, ["i", "f", "g", "o"], axis=axis, name="scope/split",
                         **({} if sizes is not None else {"num_outputs": 4})),
        helper.make_node("Sigmoid", ["i"], ["si"]), helper.make_node("Sigmoid", ["f"], ["sf"]),
        helper.make_node("Tanh", ["g"], ["tg"]), helper.make_node("Sigmoid", ["o"], ["so"]),
        mul("sf", "c", "fc"), mul("si", "tg", "ig"),
        helper.make_node("Add", ["ig", "fc"] if swap else ["fc", "ig"], ["c_next"]),
        helper.make_node("Tanh", ["c_next"], ["tc"]), mul("so", "tc", "h_next"),
    ]
    inits = [numpy_helper.from_array(np.asarray(sizes, np.int64), "sizes")] if sizes is not None else []
    lead = ("batch",) if axis in (1, -1) else ()
    graph = helper.make_graph(
        nodes, "cell",
        [helper.make_tensor_value_info("gates", TensorProto.FLOAT, [*lead, gates_width] if lead else [gates_width, 3]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, list(c_shape))],
        [helper.make_tensor_value_info("h_next", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("c_next", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _op_types(model: onnx.ModelProto) -> list[str]:
    from dkp_deploy.converters.onnx.graph import all_graphs

    return [n.op_type for g in all_graphs(model.graph) for n in g.node]


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("sizes", [None, [5, 5, 5, 5]])
def test_rule_fuses_a_cell_and_keeps_its_values(sizes, swap) -> None:
    import onnxruntime as ort

    model = _cell_graph(sizes=sizes, swap=swap)
    fused = fuse_lstm_cells(model)
    assert _op_types(fused) == ["LSTMCell"]
    assert fused.graph.node[0].name == "scope/lstm_cell"
    assert not fused.graph.initializer  # the Split sizes went with the Split
    rng = np.random.default_rng(3)
    feeds = {"gates": (rng.standard_normal((3, 20)) * 3).astype(np.float32),
             "c": rng.standard_normal((3, 5)).astype(np.float32)}
    options = ops.session_options(intra_op_num_threads=1, log_severity_level=4)
    h, cn = ort.InferenceSession(fused.SerializeToString(), options,
                                 providers=["CPUExecutionProvider"]).run(["h_next", "c_next"], feeds)
    h_ref, c_ref, _ = cell64(feeds["gates"], feeds["c"])
    np.testing.assert_allclose(cn, c_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", [
    {"axis": 0},  # not the gate axis
    {"sizes": [4, 6, 5, 5]},  # unequal parts
    {"c_shape": (1, 5)},  # c broadcasts over the batch: not the op's contract
    {"c_shape": ("batch", 4)},  # 4 * 4 != 20: a shape error the graph itself would raise, left to it
    {"c_shape": ("other", 5)},  # leading dims not known to match
])
def test_rule_leaves_what_is_not_a_cell(case) -> None:
    model = _cell_graph(**case)
    assert "LSTMCell" not in _op_types(fuse_lstm_cells(model))


def test_custom_lowering_fuses_every_layer() -> None:
    """A 2-layer doped LSTM's hub (Scan bodies) and its step graph: one LSTMCell per layer in the custom file, no
    Sigmoid or Tanh left; the portable and dense files keep standard ops."""
    from dkp_deploy.bench.workloads import doped_matrix
    from dkp_deploy.converters.onnx.model import hub as hub_of
    from dkp_deploy.spec import LSTM, LSTMLayer, ModelSpec

    rng = np.random.default_rng(0)
    hidden, inp = 8, 8
    layers = [LSTMLayer(doped_matrix(4 * hidden, inp + hidden, 2, rng, ((4, 2), (8, 8))),
                        rng.standard_normal(4 * hidden).astype(np.float32)) for _ in range(2)]
    spec = ModelSpec("lstm", [LSTM("lstm", inp, hidden, layers)])
    for mode in ("sequence", "step"):
        hub = hub_of(spec, mode=mode, quiet=True)
        custom = _op_types(lower(hub, "custom"))
        assert custom.count("LSTMCell") == 2 and "Sigmoid" not in custom and "Tanh" not in custom, mode
        for impl in ("portable", "dense"):
            assert "LSTMCell" not in _op_types(lower(hub, impl)), (mode, impl)


def test_a_users_own_cell_exported_from_torch_fuses(tmp_path) -> None:
    """An LSTM cell a user wrote by hand (chunk, sigmoid, tanh), through dkp_deploy.export: one LSTMCell in the
    custom file, outputs as torch's in float64."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    import dkp_deploy
    from dkp_deploy import runtime

    class Cell(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gates = torch.nn.Linear(8 + 16, 64)

        def forward(self, x, h, c):
            i, f, g, o = self.gates(torch.cat([x, h], 1)).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c

    torch.manual_seed(0)
    model = dkp_deploy.compress(Cell(), cf=2).eval()
    args = tuple(torch.randn(3, n) for n in (8, 16, 16))
    path = dkp_deploy.export(model, args, tmp_path / "cell.onnx")
    assert _op_types(onnx.load(str(path))).count("LSTMCell") == 1
    sess = runtime.session(path)
    got = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)})
    with torch.no_grad():
        ref = model.double()(*(a.double() for a in args))
    for out, r in zip(got, ref):
        np.testing.assert_allclose(out, r.numpy(), rtol=1e-5, atol=1e-6)


if __name__ == "__main__":  # the child of test_capped_kernels_match_too, under its DKP_OPS_ISA
    rng = np.random.default_rng(11)
    for hidden in (1, 3, 4, 7, 8, 9, 15, 16, 17, 33, 650):
        for lead in ((), (3,), (2, 5)):
            for spread in (0.1, 1.0, 4.0, 30.0):
                check_cell((rng.standard_normal((*lead, 4 * hidden)) * spread).astype(np.float32),
                           (rng.standard_normal((*lead, hidden)) * spread).astype(np.float32))
    test_tanh_and_sigmoid_to_a_few_ulp()
    test_non_finite_gates()
    print("cells match")
