"""int8 doped files (`quantize="int8"`, weights only, and `"int8-dynamic"`, which also quantizes each W_s product's
input at run time): each file against a float64 reference built here from its dequantized weights (symmetric int8
per row, written independently of dkp_deploy) and, for int8-dynamic, W_s inputs through onnx.reference's
DynamicQuantizeLinear and DequantizeLinear; file sizes, validation and the CLI.

Tests marked `integer_op` run custom int8-dynamic files, i.e. `ai.dkp::SparseMatVecInteger` from the C++ op library
(ops/): until it is built they fail at session creation with an unknown-op error."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from _onnx_models import doped, int8_rows, lstm_lm, mlp, single
from onnx import numpy_helper
from torch import nn

import dkp_deploy
from dkp_deploy import cli, reference, runtime, signature
from dkp_deploy.converters.onnx import to_onnx
from dkp_deploy.converters.onnx.exported import load_exported
from dkp_deploy.errors import InputError
from dkp_deploy.spec import CSR, LSTM, DopedMatrix, Embedding, Linear, ModelSpec
from dkp_deploy.validate import validate, validate_export

DYN = "int8-dynamic"
MODES = ["int8", DYN]
INTEGER_OP = pytest.mark.integer_op  # runs ai.dkp::SparseMatVecInteger (the C++ op of int8-dynamic custom files)


def impl_modes(impls=("custom", "portable"), modes=MODES) -> list:
    """(impl, quantize) pairs; the custom int8-dynamic ones marked `integer_op`."""
    return [pytest.param(i, m, id=f"{i}-{m}", marks=[INTEGER_OP] if (i, m) == ("custom", DYN) else [])
            for m in modes for i in impls]


def _onnx_roundtrip_model() -> onnx.ModelProto:
    h = onnx.helper
    nodes = [h.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
             h.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    graph = h.make_graph(nodes, "roundtrip", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 21)])


_ROUNDTRIP = None


def roundtrip(x: np.ndarray) -> np.ndarray:
    """DequantizeLinear(DynamicQuantizeLinear(x)) by onnx.reference, in float32 (x as the file holds it), float64."""
    global _ROUNDTRIP
    if _ROUNDTRIP is None:
        from onnx.reference import ReferenceEvaluator

        _ROUNDTRIP = ReferenceEvaluator(_onnx_roundtrip_model())
    x = np.asarray(x, np.float32)
    return np.asarray(_ROUNDTRIP.run(None, {"x": x.reshape(-1, x.shape[-1])})[0], np.float64).reshape(x.shape)


def _apply(w: DopedMatrix, x: np.ndarray, quantize: str) -> np.ndarray:
    """x @ W^T in float64 for a (dequantized) W; int8-dynamic: a doped W with a W_s on roundtrip(x) (both halves),
    other W on x."""
    x = np.asarray(x, np.float64)
    if quantize != DYN or w.structure == "dense" or w.sparse is None or w.sparse.nnz == 0:
        return x @ w.dense(np.float64).T
    return roundtrip(x) @ w.dense(np.float64).T


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def forward(spec: ModelSpec, feeds: dict[str, np.ndarray], mode: str, quantize: str) -> dict[str, np.ndarray]:
    """The test's own float64 forward of an mlp / lstm / lstm_lm spec (weights as given), time-major."""
    if spec.arch == "mlp":
        x = np.asarray(feeds["x"], np.float64)
        for b in spec.blocks:
            if isinstance(b, Linear):
                x = _apply(b.weight, x, quantize) + (b.bias if b.bias is not None else 0)
            else:
                x = reference.activation(b.kind, x)
        return {"y": x}
    lstm = next(b for b in spec.blocks if isinstance(b, LSTM))
    emb = next((b for b in spec.blocks if isinstance(b, Embedding)), None)
    dec = spec.blocks[-1] if spec.arch == "lstm_lm" else None
    step = mode == "step"
    x = feeds["x_t" if step else "x"]
    x = emb.weight.astype(np.float64)[x] if emb is not None else np.asarray(x, np.float64)
    xs = x[None] if step else x
    h = np.array(feeds["h" if step else "h0"], np.float64)
    c = np.array(feeds["c" if step else "c0"], np.float64)
    H, ys = lstm.hidden_size, []
    for x_t in xs:
        for k, layer in enumerate(lstm.layers):
            gates = _apply(layer.weight, np.concatenate([x_t, h[k]], axis=-1), quantize) + layer.bias
            i, f, g, o = (gates[:, j * H:(j + 1) * H] for j in range(4))
            c[k] = _sigmoid(f) * c[k] + _sigmoid(i) * np.tanh(g)
            h[k] = x_t = _sigmoid(o) * np.tanh(c[k])
        ys.append(x_t)
    y = np.stack(ys)
    if dec is not None:
        y = _apply(dec.weight, y, quantize) + dec.bias
    if step:
        return {"y_t": y[0], "h_next": h, "c_next": c}
    return {"y": y, "hn": h, "cn": c}


def _dequantized(w: DopedMatrix) -> DopedMatrix:
    if w.structure == "dense":
        return w
    factors = {k: int8_rows(v).astype(np.float32) for k, v in w.factors.items()}
    sp = w.sparse
    if sp is not None and sp.nnz:
        rows = np.repeat(np.arange(sp.shape[0]), np.diff(sp.row_ptr))
        dense_rows = np.zeros(sp.shape, np.float64)
        dense_rows[rows, sp.col_idx] = sp.values
        q = int8_rows(dense_rows)[rows, sp.col_idx].astype(np.float32)
        sp = CSR(sp.shape, sp.row_ptr, sp.col_idx, q)
    return DopedMatrix(w.shape, w.structure, factors, sp)


def _close(got: np.ndarray, want: np.ndarray, rel: float = 1e-5, floor: float = 1e-6) -> None:
    err = np.abs(got.astype(np.float64) - want)
    assert err.max() <= rel * np.abs(want).max() + floor, f"max error {err.max():.3g} vs |want| {np.abs(want).max()}"


def _dql_inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    xs = [rng.standard_normal((3, 40)) * 10.0 ** rng.uniform(-4, 4) for _ in range(20)]
    xs += [np.abs(rng.standard_normal((2, 30))) + 0.5, -np.abs(rng.standard_normal((2, 30))) - 0.5,  # one-signed
           np.zeros((2, 5)), np.full((1, 4), 3.0), -np.ones((1, 4)), rng.standard_normal((8, 4096)),
           np.array([[-1.0, 0.0, 1.0, -0.5, 0.5]])]
    for k in range(-3, 8):  # range 255 * 2^-k: scale 2^-k exactly, so (i + 0.5) * 2^-k are exact ties
        step = 2.0 ** -k
        ties = (rng.integers(-120, 120, 60) + 0.5) * step
        xs.append(np.concatenate([ties, [-128 * step, 127 * step]])[None, :])
        xs.append((np.arange(0, 256) + 0.5)[None, :] * step / 2)  # all positive, ties of the zero-point-0 grid
    return [np.asarray(x, np.float32) for x in xs]


def test_dynamic_quantize_is_onnx_dynamic_quantize_linear():
    """dkp_deploy.quantize.dynamic_quantize / dynamic_dequantize against onnx.reference and onnxruntime."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    from dkp_deploy.quantize import dynamic_dequantize, dynamic_quantize

    h = onnx.helper
    graph = h.make_graph([h.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
                          h.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "dql",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
                         [h.make_tensor_value_info(n, t, None) for n, t in (
                             ("q", onnx.TensorProto.UINT8), ("s", onnx.TensorProto.FLOAT),
                             ("z", onnx.TensorProto.UINT8), ("y", onnx.TensorProto.FLOAT))])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)])
    model.ir_version = 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = ReferenceEvaluator(model)
    for x in _dql_inputs():
        q, scale, zp = dynamic_quantize(x)
        assert q.dtype == np.uint8 and q.shape == x.shape
        y = dynamic_dequantize(q, scale, zp)
        assert y.dtype == np.float32
        for name, (oq, os_, oz, oy) in (("ort", sess.run(None, {"x": x})), ("reference", ref.run(None, {"x": x}))):
            np.testing.assert_array_equal(q, oq, err_msg=name)
            assert np.uint8(oz) == zp, name
            np.testing.assert_array_equal(y, oy, err_msg=name)
            if x.any():
                assert np.float32(os_) == scale, name
        if not x.any():  # all zeros: onnxruntime's scale 1 (onnx.reference: 1/255), zero point 0
            assert (scale, zp) == (np.float32(1), 0) and not y.any()


@pytest.mark.parametrize("impl, quantize", impl_modes())
def test_layer_matches_its_dequantized_weights(tmp_path, impl, quantize):
    """One layer (x given): the file is the layer with the dequantized weights, at 1e-5; int8-dynamic: with W
    applied to onnx.reference's DequantizeLinear(DynamicQuantizeLinear(x)) (both halves)."""
    rng = np.random.default_rng(0)
    w = doped(rng, 96, 60, "kron", kron=((8, 6), (12, 10)), density=0.08)
    b = (0.1 * rng.standard_normal(96)).astype(np.float32)
    spec = single(w, b)
    path = to_onnx(spec, tmp_path / "q.onnx", sparse_impl=impl, quantize=quantize, quiet=True)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    wq = _dequantized(w)
    wd = wq.dense(np.float64)
    for batch in (1, 8, 17):
        x = rng.standard_normal((batch, 60)).astype(np.float32)
        x[0, :3] = 0  # a few exact zeros: the zero point
        (y,) = runtime.run(path, {"x": x}).values()
        _close(y, _apply(wq, x, quantize) + b)
        if quantize == DYN:  # the activation quantization is real: far from the weights-only function
            assert np.abs(y - (x.astype(np.float64) @ wd.T + b)).max() > 1e-3 * np.abs(y).max()
    # and it is not the float layer: the quantization is real
    assert np.abs(wd - w.dense(np.float64)).max() > 1e-4
    # the matrix rebuilt from the file's own tensors is the dequantized one
    np.testing.assert_allclose(load_exported(path).matrices["fc"], wd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", [pytest.param("custom", marks=INTEGER_OP), "portable"])
@pytest.mark.parametrize("structure", ["lmf", "hmd", "none"])
def test_dynamic_layer_of_each_structure_and_wide_input(tmp_path, impl, structure):
    """lmf / hmd (structured half on float x) and "none" (W_s only, no Y0, no bias), and an input wider than
    65536 (int32 column indices), at batch 1 and 8."""
    rng = np.random.default_rng(8)
    n = 70000 if structure == "none" else 48
    w = doped(rng, 40, n, structure, rank=3, top=4, density=0.002 if structure == "none" else 0.2)
    b = None if structure == "none" else (0.1 * rng.standard_normal(40)).astype(np.float32)
    path = to_onnx(single(w, b), tmp_path / "q.onnx", sparse_impl=impl, quantize=DYN, quiet=True)
    wq = _dequantized(w)
    for batch in (1, 8):
        x = (3 * rng.standard_normal((batch, n)) + 1).astype(np.float32)
        (y,) = runtime.run(path, {"x": x}).values()
        _close(y, _apply(wq, x, DYN) + (0 if b is None else b))


def test_portable_dynamic_quantization_is_not_fused_away(tmp_path):
    """onnxruntime at every optimisation level computes the portable file's DequantizeLinear(DynamicQuantizeLinear(x))
    W_s input as the operators define it (no fusion into an integer product of another rounding)."""
    import onnxruntime as ort

    rng = np.random.default_rng(4)
    w = doped(rng, 64, 96, "kron", kron=((8, 8), (8, 12)), density=0.1)
    path = to_onnx(single(w), tmp_path / "q.onnx", sparse_impl="portable", quantize=DYN, quiet=True)
    x = (rng.standard_normal((8, 96)) * 2).astype(np.float32)
    want = _apply(_dequantized(w), x, DYN)
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        sess = runtime.session(path, graph_optimization_level=level)
        _close(runtime.run(sess, {"x": x})["y"], want)


def test_file_holds_int8_values_and_8_bit_column_gaps(tmp_path):
    rng = np.random.default_rng(1)
    w = doped(rng, 200, 120, "kron", kron=((20, 12), (10, 10)), density=0.1)
    spec = single(w)
    fp32 = to_onnx(spec, tmp_path / "f.onnx", quiet=True)
    int8 = to_onnx(spec, tmp_path / "q.onnx", quantize="int8", quiet=True)

    def types(path) -> dict[str, int]:  # element type per role, through the dkp.layers metadata
        model = onnx.load(str(path))
        roles = json.loads({p.key: p.value for p in model.metadata_props}["dkp.layers"])["fc"]["tensors"]
        by_name = {t.name: t.data_type for t in model.graph.initializer}
        return {role: by_name[name] for role, name in roles.items()}

    t = types(int8)
    assert t["values"] == t["B"] == t["C_T"] == onnx.TensorProto.INT8
    assert t["col_idx"] == types(fp32)["col_idx"] == onnx.TensorProto.UINT8
    assert t["row_scale"] == t["B_scale"] == onnx.TensorProto.FLOAT
    nnz = w.nnz
    # 2 bytes per non-zero + row pointers + small factors and scales, plus the graph itself
    need = 2 * nnz + 4 * 201 + 4 * 200 + 20 * 12 + 10 * 10 + 4 * 30
    assert int8.stat().st_size <= 1.2 * need + 4096

    def tensor_bytes(path) -> int:
        return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer)

    assert tensor_bytes(int8) < 0.5 * tensor_bytes(fp32)  # 2 bytes per non-zero instead of 5; row_ptr stays
    meta = {p.key: p.value for p in onnx.load(str(int8)).metadata_props}
    assert meta["dkp.quantize"] == "int8"


@pytest.mark.parametrize("impl", ["custom", "portable"])
def test_dynamic_file_holds_the_int8_tensors_and_quantizes_the_w_s_input(tmp_path, impl):
    """int8-dynamic: the int8 file's initializers (names, types, bytes) and dkp.layers. custom: one node,
    SparseMatVecInteger(x float, row_ptr, col_idx, values, row_scale, "", "", Y0, B, C_T), which quantizes x
    itself, typed by strict shape inference; portable: one DynamicQuantizeLinear per W_s, of the layer's input,
    into DequantizeLinear, no ai.dkp node."""
    rng = np.random.default_rng(1)
    w = doped(rng, 200, 120, "kron", kron=((20, 12), (10, 10)), density=0.1)
    spec = single(w, (0.1 * rng.standard_normal(200)).astype(np.float32))
    int8 = onnx.load(str(to_onnx(spec, tmp_path / "q8.onnx", sparse_impl=impl, quantize="int8", quiet=True)))
    dyn = onnx.load(str(to_onnx(spec, tmp_path / "qd.onnx", sparse_impl=impl, quantize=DYN, quiet=True)))

    def tensors(m):
        return {t.name: (t.data_type, numpy_helper.to_array(t).tobytes()) for t in m.graph.initializer}

    assert tensors(dyn) == tensors(int8)
    meta8, meta = ({p.key: p.value for p in m.metadata_props} for m in (int8, dyn))
    assert meta["dkp.quantize"] == DYN and meta["dkp.layers"] == meta8["dkp.layers"]
    roles = json.loads(meta["dkp.layers"])["fc"]["tensors"]
    nodes = list(dyn.graph.node)
    dqls = [n for n in nodes if n.op_type == "DynamicQuantizeLinear"]
    dkp = [n for n in nodes if n.domain == "ai.dkp"]
    if impl == "custom":
        (op,) = dkp
        assert not dqls and op.op_type == "SparseMatVecInteger" and not op.attribute
        assert list(op.input[:7]) == ["x", roles["row_ptr"], roles["col_idx"], roles["values"],
                                      roles["row_scale"], "", ""]
        # Y0 = the bias, then the Kronecker half in the same node: B, C_T (int8 behind Cast + Mul), on x itself
        assert list(op.input[8:]) == ["fc/B/dequantize", "fc/C_T/dequantize"] and op.input[7] == "fc/bias"
        from dkp_deploy.hub.schema import register_schemas

        register_schemas()
        inferred = onnx.shape_inference.infer_shapes(dyn, strict_mode=True, check_type=True)
        (y,) = [v for v in [*inferred.graph.value_info, *inferred.graph.output] if v.name == op.output[0]]
        assert y.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert y.type.tensor_type.shape.dim[-1].dim_value == 200
    else:
        (dql,) = dqls
        assert list(dql.input) == ["x"] and len(dql.output) == 3
        assert not dkp and not any(o.domain == "ai.dkp" for o in dyn.opset_import)
        (dq,) = [n for n in nodes if n.op_type == "DequantizeLinear"]
        assert list(dq.input) == list(dql.output)
    onnx.checker.check_model(dyn, full_check=True)


@pytest.mark.parametrize("impl, quantize", impl_modes())
def test_every_structure_and_the_lm(tmp_path, impl, quantize):
    """kron, lmf, hmd, none and an undoped dense layer (left float), a step LM and a sequence LM: against the
    test's float64 forward of the model with its dequantized weights (int8-dynamic: W_s inputs quantized).
    int8-dynamic through several layers or steps: a file value an ulp from the float64 one could round to the
    other uint8 step (~1e-3 here); these seeds have none, as measured."""
    for name, spec, mode in (("mlp", mlp(), "sequence"), ("lm", lstm_lm(), "step"), ("lms", lstm_lm(), "sequence")):
        path = to_onnx(spec, tmp_path / f"{name}.onnx", sparse_impl=impl, mode=mode, quantize=quantize, quiet=True)
        ref_spec = spec.map_matrices(_dequantized)
        feeds = signature.random_feeds(spec, mode, batch=3, seed=4, **({"time": 6} if mode == "sequence" else {}))
        out = runtime.run(path, feeds)
        want = forward(ref_spec, feeds, mode, quantize)
        for k, ref in reference.run(ref_spec, feeds, mode).items():
            if quantize == "int8":
                np.testing.assert_allclose(want[k], ref, rtol=0, atol=1e-12)  # the test's forward is the reference
            np.testing.assert_allclose(out[k], want[k], rtol=0, atol=2e-6, err_msg=f"{name}: {k}")
        if quantize == DYN:  # the validator's int8-dynamic reference is the test's
            from dkp_deploy.quantize import dynamic_roundtrip

            got = reference.run(ref_spec, feeds, mode, matrix_input=dynamic_roundtrip)
            for k, ref in want.items():
                np.testing.assert_allclose(got[k], ref, rtol=0, atol=1e-9, err_msg=f"{name}: {k}")
        report = validate(spec, path)
        assert report.passed, report.table()
        assert any(quantize in n for n in report.notes)


@pytest.mark.parametrize("impl", [pytest.param("custom", marks=INTEGER_OP), "portable"])
def test_dynamic_lstm_sequence(tmp_path, impl):
    """A 2-layer LSTM (kron and hmd gates on [x_t, h]) over T = 7 with a state in: every step's W_s input
    quantized over [batch, I + H], against the test's forward; validate() passes."""
    from _onnx_models import lstm

    spec = lstm()
    path = to_onnx(spec, tmp_path / "lstm.onnx", sparse_impl=impl, quantize=DYN, quiet=True)
    feeds = signature.random_feeds(spec, "sequence", batch=4, time=7, seed=5)
    out = runtime.run(path, feeds)
    for k, want in forward(spec.map_matrices(_dequantized), feeds, "sequence", DYN).items():
        np.testing.assert_allclose(out[k], want, rtol=0, atol=2e-6, err_msg=k)
    report = validate(spec, path)
    assert report.passed, report.table()


@pytest.mark.parametrize("impl, quantize", impl_modes())
def test_validation_fails_when_a_scale_is_wrong(tmp_path, impl, quantize):
    spec = single(doped(np.random.default_rng(2), 40, 30, "kron", kron=((8, 6), (5, 5)), density=0.2))
    path = to_onnx(spec, tmp_path / "q.onnx", sparse_impl=impl, quantize=quantize, quiet=True)
    assert validate(spec, path).passed
    model = onnx.load(str(path))
    for t in model.graph.initializer:
        if t.name == "fc/W_s/row_scale":
            s = numpy_helper.to_array(t).copy()
            s[3] *= 1.01
            t.CopyFrom(numpy_helper.from_array(s, t.name))
    onnx.save(model, str(path))
    report = validate(spec, path)
    assert not report.passed
    assert [r.passed for r in report.rows if r.kind == "layer" and r.name == "fc"] == [False]


@pytest.mark.parametrize("quantize", MODES)
def test_quantize_refuses_what_it_does_not_cover(tmp_path, quantize):
    from dkp_deploy.converters.onnx.model import hub
    from dkp_deploy.export import write

    spec = single(doped(np.random.default_rng(3), 8, 6, "kron", kron=((4, 2), (2, 3))))
    with pytest.raises(ValueError, match="quantize"):
        to_onnx(spec, tmp_path / "d.onnx", sparse_impl="dense", quantize=quantize, quiet=True)
    with pytest.raises(ValueError, match="quantize must be"):
        to_onnx(spec, tmp_path / "d.onnx", quantize="int4", quiet=True)
    for name, impl in (("q.tflite", "custom"), ("d.onnx", "dense")):
        with pytest.raises(InputError, match="quantize"):
            write(hub(spec, quiet=True), tmp_path / name, impl, quantize)


class _Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.rnn = nn.LSTM(16, 24, batch_first=True)
        self.fc = nn.Linear(24, 20)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(self.emb(ids))[0])


def test_general_path_exports_and_validates_against_its_hub(tmp_path):
    torch.manual_seed(0)
    model = dkp_deploy.compress(_Tagger().eval(), cf=4, include=["rnn", "fc"])
    ids = torch.randint(0, 20, (2, 5))
    dyn = {"ids": {0: torch.export.Dim("batch"), 1: torch.export.Dim("time")}}
    hub = dkp_deploy.export(model, (ids,), tmp_path / "hub.onnx", dynamic_shapes=dyn, sparse_impl="hub")
    path = dkp_deploy.export(model, (ids,), tmp_path / "q.onnx", dynamic_shapes=dyn, quantize="int8")
    report = validate_export(path, hub=hub, model=model, args=(ids,))
    assert report.passed, report.table()
    assert any("torch model" in n for n in report.notes)
    with pytest.raises(InputError, match="hub"):
        validate_export(path, model=model, args=(ids,))
    # the quantization error against the float model is small but not zero
    x = np.random.default_rng(0).integers(0, 20, (2, 7))
    (y,) = runtime.run(path, {"ids": x}).values()
    with torch.no_grad():
        want = model.double()(torch.from_numpy(x)).numpy()
    err = np.abs(y - want).max()
    assert 1e-6 < err < 0.05 * np.abs(want).max()
    # int8-dynamic from the same hub (no second torch export): validates against it; its W_s inputs quantized
    from dkp_deploy.export import load_hub, write
    from dkp_deploy.hub import reference as hub_reference
    from dkp_deploy.quantize import dequantize_hub

    for impl in ("custom", "portable"):
        dyn = write(load_hub(hub), tmp_path / f"d_{impl}.onnx", impl, DYN)
        report = validate_export(dyn, hub=hub)
        assert report.passed, report.table()
        (yd,) = runtime.run(dyn, {"ids": x}).values()
        # the float64 hub with the dequantized weights and the test's own DynamicQuantizeLinear round trip
        (ref,) = hub_reference.run(dequantize_hub(onnx.load(str(hub))), {"ids": x}, matrix_input=roundtrip).values()
        np.testing.assert_allclose(yd, ref, rtol=0, atol=2e-6 * max(1, np.abs(ref).max()), err_msg=impl)
        assert np.abs(yd - y).max() > 1e-5  # not the weights-only function


class _TiedEmbedding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(24, 16)
        self.fc = nn.Linear(16, 24)
        self.fc.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.emb(ids)))


@pytest.mark.parametrize("impl", [pytest.param("custom", marks=INTEGER_OP), "portable"])
def test_dynamic_doped_embedding_and_tied_decoder(tmp_path, impl):
    """A doped embedding (DopedGather: no activation, the int8 file's lookup) and its tied doped decoder (W_s input
    quantized): against the float64 hub with the dequantized weights and the test's round trip; validates."""
    from dkp_deploy.export import load_hub, write
    from dkp_deploy.hub import reference as hub_reference
    from dkp_deploy.quantize import dequantize_hub

    torch.manual_seed(1)
    model = dkp_deploy.compress(_TiedEmbedding().eval(), cf=2, include=["emb", "fc"])
    ids = torch.randint(0, 24, (3, 4))
    dyn_shapes = {"ids": {0: torch.export.Dim("batch"), 1: torch.export.Dim("time")}}
    hub = dkp_deploy.export(model, (ids,), tmp_path / "hub.onnx", dynamic_shapes=dyn_shapes, sparse_impl="hub")
    int8 = onnx.load(str(write(load_hub(hub), tmp_path / "q8.onnx", impl, "int8")))
    path = write(load_hub(hub), tmp_path / "qd.onnx", impl, DYN)
    dyn = onnx.load(str(path))
    assert {t.name for t in dyn.graph.initializer} == {t.name for t in int8.graph.initializer}
    layers = json.loads({p.key: p.value for p in dyn.metadata_props}["dkp.layers"])
    assert sum(info.get("kind") == "embedding" for info in layers.values()) == 1
    # the decoder's W_s only quantizes its input (custom: inside the SparseMatVecInteger node, float x)
    quantizers = [n for n in dyn.graph.node if n.op_type in ("DynamicQuantizeLinear", "SparseMatVecInteger")]
    assert [n.op_type for n in quantizers] == ["SparseMatVecInteger" if impl == "custom" else "DynamicQuantizeLinear"]
    x = np.random.default_rng(2).integers(0, 24, (2, 5))
    (y,) = runtime.run(path, {"ids": x}).values()
    (ref,) = hub_reference.run(dequantize_hub(onnx.load(str(hub))), {"ids": x}, matrix_input=roundtrip).values()
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-6 * max(1, np.abs(ref).max()))
    report = validate_export(path, hub=hub)
    assert report.passed, report.table()


@pytest.mark.parametrize("quantize", [pytest.param("int8"), pytest.param(DYN, marks=INTEGER_OP)])
def test_cli_quantize(tmp_path, capsys, quantize):
    from _onnx_models import mlp as make_mlp

    ckpt = tmp_path / "m.pt"
    dkp_deploy.save(make_mlp(), ckpt)
    out = tmp_path / "m.onnx"
    assert cli.convert_main([str(ckpt), "-o", str(out), "--quantize", quantize, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["quantize"] == quantize and out.exists()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["dkp.quantize"] == quantize
    assert cli.validate_main([str(ckpt), str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    tol = {r["tol"] for r in report["rows"] if r["kind"] == "e2e"}
    from dkp_deploy.validate import INT8_DYNAMIC_ATOL

    assert tol == {INT8_DYNAMIC_ATOL if quantize == DYN else 1e-4}
    for extra in (["-o", str(tmp_path / "m.tflite")], ["-o", str(tmp_path / "d.onnx"), "--sparse-impl", "dense"]):
        assert cli.convert_main([str(ckpt), *extra, "--quantize", quantize]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--quantize" in err[0]
    assert not (tmp_path / "m.tflite").exists() and not (tmp_path / "d.onnx").exists()


@pytest.mark.parametrize("quantize", [pytest.param("int8"), pytest.param(DYN, marks=INTEGER_OP)])
def test_untied_embedding_table_is_int8_and_tied_stays_float(tmp_path, quantize):
    """An embedding table only Gather reads is stored int8 (rows scaled at run time); a tied one stays float."""
    tied = lstm_lm(vocab=50)
    emb, lstm, dec = tied.blocks
    rng = np.random.default_rng(9)
    w = DopedMatrix(dec.weight.shape, "dense", {"W": (0.5 * rng.standard_normal(dec.weight.shape)).astype(np.float32)})
    untied = ModelSpec("lstm_lm", [emb, lstm, Linear(dec.name, w, dec.bias)])
    for spec, int8_table in ((untied, True), (tied, False)):
        path = to_onnx(spec, tmp_path / "lm.onnx", mode="step", quantize=quantize, quiet=True)
        kinds = {t.data_type for t in onnx.load(str(path)).graph.initializer if list(t.dims) == [50, 4]}
        assert (onnx.TensorProto.INT8 in kinds) == int8_table
        table = int8_rows(emb.weight).astype(np.float32) if int8_table else emb.weight
        ref_spec = ModelSpec("lstm_lm", [Embedding(emb.name, table), *spec.map_matrices(_dequantized).blocks[1:]])
        feeds = signature.random_feeds(spec, "step", batch=4, seed=3)
        out = runtime.run(path, feeds)
        for k, want in forward(ref_spec, feeds, "step", quantize).items():
            np.testing.assert_allclose(out[k], want, rtol=0, atol=2e-6, err_msg=k)
        assert validate(spec, path).passed


def test_validation_checks_the_quantizer_against_the_float_weights(tmp_path, monkeypatch):
    """A quantizer that is wrong the same way in the file and in its reference (here: scales 4x too small, so
    values clip) is caught by the comparison with the float weights, which does not go through it."""
    import dkp_deploy.quantize as q

    spec = single(doped(np.random.default_rng(5), 40, 30, "kron", kron=((8, 6), (5, 5)), density=0.2))
    good = to_onnx(spec, tmp_path / "good.onnx", quantize="int8", quiet=True)
    rows = [r for r in validate(spec, good).rows if r.kind == "int8"]
    assert rows and all(r.passed for r in rows) and 0 < rows[0].error < 0.02
    real = q.quantize_csr

    def clipping(sp):
        values, scale = real(sp)
        scale = scale / 4
        return np.clip(np.rint(sp.values / scale[q.csr_rows(sp)]), -127, 127).astype(np.int8), scale

    monkeypatch.setattr(q, "quantize_csr", clipping)
    monkeypatch.setattr("dkp_deploy.converters.onnx.matrix.quantize_csr", clipping)
    bad = to_onnx(spec, tmp_path / "bad.onnx", quantize="int8", quiet=True)
    report = validate(spec, bad)
    assert all(r.passed for r in report.rows if r.kind == "layer")  # the file matches its (wrong) dequantization
    assert not report.passed and [r.passed for r in report.rows if r.kind == "int8"] == [False]
