"""TFLite converter: parity with the float64 reference, what the file holds, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import flatbuffers
import numpy as np
import pytest
import tflite
from _onnx_models import bias, big_mlp, doped, lstm, lstm_lm, mlp, must_hold_bytes, single
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dkp_deploy import reference, signature, validate
from dkp_deploy import tflite as rt
from dkp_deploy.converters import to_tflite
from dkp_deploy.converters.tflite import load_exported
from dkp_deploy.converters.tflite.matrix import kron_order
from dkp_deploy.errors import InputError


def _error(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| / max(1, max |ref|): the validator's end-to-end error."""
    assert out.shape == ref.shape
    return float(np.abs(out - ref).max() / max(1.0, np.abs(ref).max()))


def _model(path):
    return tflite.Model.GetRootAs(path.read_bytes(), 0)


def _tensors(model):
    sub = model.Subgraphs(0)
    return [sub.Tensors(i) for i in range(sub.TensorsLength())]


# -- parity -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [mlp, lstm, lstm_lm, big_mlp])
@pytest.mark.parametrize("batch", [1, 3])
def test_parity_with_reference(tmp_path, make, batch):
    """Every structure (kron, lmf, hmd, none, dense), every activation, LSTM gates, embedding, decoder."""
    spec = make()
    path = to_tflite(spec, tmp_path / "m.tflite", quiet=True)
    feeds = signature.random_feeds(spec, "step", batch=batch, seed=batch)
    ref = reference.run(spec, feeds, "step")
    out = rt.run(path, feeds)
    assert sorted(out) == sorted(ref)
    for name in ref:
        assert _error(out[name], ref[name]) < 1e-5, name


def test_one_interpreter_runs_any_batch(tmp_path):
    spec = lstm_lm()
    interp = rt.interpreter(to_tflite(spec, tmp_path / "lm.tflite", quiet=True))
    for batch in (4, 1, 2):
        feeds = signature.random_feeds(spec, "step", batch=batch, seed=batch)
        ref, out = reference.run(spec, feeds, "step"), rt.run(interp, feeds)
        for name in ref:
            assert _error(out[name], ref[name]) < 1e-5, (batch, name)


def test_step_iterated_follows_the_sequence(tmp_path):
    """Feeding h_next / c_next back for T steps gives the reference's sequence outputs."""
    spec = lstm()
    interp = rt.interpreter(to_tflite(spec, tmp_path / "l.tflite", quiet=True))
    seq = signature.random_feeds(spec, "sequence", batch=2, time=6, seed=3)
    ref = reference.run(spec, seq, "sequence")
    h, c = seq["h0"], seq["c0"]
    for t in range(6):
        out = rt.run(interp, {"x_t": seq["x"][t], "h": h, "c": c})
        assert _error(out["y_t"], ref["y"][t]) < 1e-5
        h, c = out["h_next"], out["c_next"]
    assert _error(h, ref["hn"]) < 1e-5 and _error(c, ref["cn"]) < 1e-5


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    m1=st.integers(1, 4), n1=st.integers(1, 4), m2=st.integers(1, 4), n2=st.integers(1, 4),
    structure=st.sampled_from(["kron", "kron", "lmf", "hmd", "none", "dense"]),
    density=st.sampled_from([0.0, 0.05, 0.3, 1.0]), with_bias=st.booleans(), batch=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_doped_layer_property(tmp_path, m1, n1, m2, n2, structure, density, with_bias, batch, seed):
    """Any kron shape (1-wide included), any structure, any density (no nonzeros, empty rows, full), any batch."""
    rng = np.random.default_rng(seed)
    m, n = m1 * m2, n1 * n2
    w = doped(rng, m, n, structure, kron=((m1, n1), (m2, n2)), top=1 if m > 1 else 0, rank=2, density=density)
    spec = single(w, bias(rng, m) if with_bias else None)
    path = to_tflite(spec, tmp_path / "k.tflite", quiet=True)
    feeds = signature.random_feeds(spec, batch=batch, seed=seed)
    np.testing.assert_allclose(rt.run(path, feeds)["y"], reference.run(spec, feeds)["y"], atol=2e-6)
    np.testing.assert_allclose(load_exported(path).matrices["fc"], w.dense(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("kron,order", [(((2, 8), (8, 2)), "B"), (((8, 2), (2, 8)), "C")])
def test_kron_contracts_the_cheaper_factor_first(tmp_path, kron, order):
    assert kron_order(*kron) == order
    rng = np.random.default_rng(7)
    spec = single(doped(rng, 16, 16, "kron", kron=kron, density=0.1), bias(rng, 16))
    path = to_tflite(spec, tmp_path / "k.tflite", quiet=True)
    feeds = signature.random_feeds(spec, batch=3, seed=1)
    np.testing.assert_allclose(rt.run(path, feeds)["y"], reference.run(spec, feeds)["y"], atol=2e-6)
    ops = {tflite.Model.GetRootAs(path.read_bytes(), 0).OperatorCodes(i).BuiltinCode()
           for i in range(tflite.Model.GetRootAs(path.read_bytes(), 0).OperatorCodesLength())}
    assert tflite.BuiltinOperator.TRANSPOSE in ops and tflite.BuiltinOperator.BATCH_MATMUL not in ops


def test_validator_passes_and_catches_altered_weights(tmp_path):
    spec = lstm_lm()
    path = to_tflite(spec, tmp_path / "lm.tflite", quiet=True)
    report = validate.validate(spec, path)
    assert report.passed, report.table()
    assert report.format == "tflite" and report.mode == "step"
    # Change one float of layer 0's C factor in the file: both the per-layer and the end-to-end rows must fail.
    c = spec.lstm.layers[0].weight.factors["C"]
    data = bytearray(path.read_bytes())
    at = data.find(c.astype("<f4").tobytes())
    assert at > 0 and data.count(c.astype("<f4").tobytes()) == 1
    data[at : at + 4] = np.float32(c.flat[0] + 0.5).tobytes()
    path.write_bytes(bytes(data))
    report = validate.validate(spec, path)
    assert not report.passed
    assert {r.kind for r in report.rows if not r.passed} == {"layer", "e2e"}


# -- the file ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [mlp, lstm, lstm_lm, big_mlp])
def test_load_exported_rebuilds_every_w(tmp_path, make):
    spec = make()
    exported = load_exported(to_tflite(spec, tmp_path / "m.tflite", quiet=True))
    assert exported.format == "tflite" and exported.mode == "step"
    assert sorted(exported.matrices) == sorted(spec.matrices())
    for name, w in spec.matrices().items():
        np.testing.assert_allclose(exported.matrices[name], w.dense(), rtol=0, atol=1e-7, err_msg=name)
    layers = json.loads(exported.metadata["dkp.layers"])
    assert {k: v["nnz"] for k, v in layers.items()} == {k: w.nnz for k, w in spec.matrices().items()}
    assert exported.metadata["dkp.arch"] == spec.arch


@pytest.mark.parametrize("make", [big_mlp, mlp, lstm, lstm_lm])
def test_no_dense_w_and_size_bound(tmp_path, make):
    spec = make()
    path = to_tflite(spec, tmp_path / "m.tflite", quiet=True)
    model = _model(path)
    matrices = spec.matrices()
    doped_shapes = {tuple(w.shape) for w in matrices.values() if w.structure != "dense"}
    sparse = 0
    for t in _tensors(model):
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        data = model.Buffers(t.Buffer()).DataLength()
        if shape in doped_shapes and data:
            # The only M x N tensor of a doped layer is W_s, whose buffer holds nnz values, not M*N.
            assert t.Sparsity() is not None, t.Name()
            w = matrices[t.Name().decode().removesuffix("/W_s")]
            assert data == 4 * max(w.nnz, 1), t.Name()
            sparse += 1
    assert sparse == sum(w.structure != "dense" for w in matrices.values())
    if make is big_mlp:  # small models are mostly graph structure; the bound is about the weights
        assert path.stat().st_size <= 1.1 * must_hold_bytes(spec)


def test_sparse_weight_layout(tmp_path):
    spec = big_mlp()
    w_s = spec.blocks[0].weight.sparse
    model = _model(to_tflite(spec, tmp_path / "m.tflite", quiet=True))
    t = next(t for t in _tensors(model) if t.Name() == b"fc1/W_s")
    s = t.Sparsity()
    assert list(s.TraversalOrderAsNumpy()) == [0, 1] and s.BlockMapLength() == 0
    d0, d1 = s.DimMetadata(0), s.DimMetadata(1)
    assert (d0.Format(), d0.DenseSize()) == (tflite.DimensionType.DENSE, w_s.shape[0])
    assert d1.Format() == tflite.DimensionType.SPARSE_CSR
    assert d1.ArraySegmentsType() == d1.ArrayIndicesType() == tflite.SparseIndexVector.Int32Vector
    for table, want in ((d1.ArraySegments(), w_s.row_ptr), (d1.ArrayIndices(), w_s.col_idx)):
        vec = tflite.Int32Vector()
        vec.Init(table.Bytes, table.Pos)
        np.testing.assert_array_equal(vec.ValuesAsNumpy(), want)
    np.testing.assert_array_equal(model.Buffers(t.Buffer()).DataAsNumpy().view("<f4"), w_s.values)
    # The FC reading it is declared at op version 8 (sparse weights): at any other version the default XNNPACK
    # delegate claims it and computes garbage (tests/test_tflite_runtime.py).
    sub, index = model.Subgraphs(0), [x.Name() for x in _tensors(model)].index(b"fc1/W_s")
    ops = [sub.Operators(i) for i in range(sub.OperatorsLength())]
    codes = [model.OperatorCodes(op.OpcodeIndex()) for op in ops if index in list(op.InputsAsNumpy())]
    assert [(c.BuiltinCode(), c.Version()) for c in codes] == [(tflite.BuiltinOperator.FULLY_CONNECTED, 8)]


def test_block_sparse_weight_layout(tmp_path):
    """1 x 4 block W_s: TFLite's block CSR (order [0, 1, 2], block map [1], dims DENSE M / SPARSE_CSR / DENSE 4),
    which picks the optimized FullyConnectedSparseWeight1x4 kernel; right against the reference, rebuilt by the
    reader, and a pattern that is not whole aligned blocks stays random-sparse CSR."""
    from _onnx_models import block_lstm

    from dkp_deploy.converters.tflite import load_exported

    spec = block_lstm()
    path = to_tflite(spec, tmp_path / "b.tflite", mode="step", quiet=True)
    model = _model(path)
    w_s = spec.lstm.layers[0].weight.sparse
    t = next(t for t in _tensors(model) if t.Name() == b"lstm.0/W_s")
    s = t.Sparsity()
    assert list(s.TraversalOrderAsNumpy()) == [0, 1, 2] and list(s.BlockMapAsNumpy()) == [1]
    d1, d2 = s.DimMetadata(1), s.DimMetadata(2)
    assert d1.Format() == tflite.DimensionType.SPARSE_CSR and (d2.Format(), d2.DenseSize()) == (
        tflite.DimensionType.DENSE, 4)
    for table, want in ((d1.ArraySegments(), w_s.row_ptr // 4), (d1.ArrayIndices(), w_s.col_idx[::4] // 4)):
        vec = tflite.Int32Vector()
        vec.Init(table.Bytes, table.Pos)
        np.testing.assert_array_equal(vec.ValuesAsNumpy(), want)
    np.testing.assert_array_equal(model.Buffers(t.Buffer()).DataAsNumpy().view("<f4"), w_s.values)
    for k, layer in enumerate(spec.lstm.layers):
        np.testing.assert_allclose(load_exported(path).matrices[f"lstm.{k}"], layer.weight.dense(), atol=1e-7)
    feeds = signature.random_feeds(spec, "step", batch=3, seed=2)
    out, ref = rt.run(path, feeds), reference.run(spec, feeds, "step")
    for name in ref:
        np.testing.assert_allclose(out[name], ref[name], atol=2e-6)
    # only whole aligned 1 x 4 blocks count (anything else is written as random-sparse CSR)
    from dkp_deploy.spec import CSR

    def row(cols: list[int]) -> CSR:
        return CSR((1, 8), np.array([0, len(cols)], np.int32), np.array(cols, np.int32), np.ones(len(cols), np.float32))

    assert list(row([4, 5, 6, 7]).block_columns(4)) == [1]
    assert list(row([0, 1, 2, 3, 4, 5, 6, 7]).block_columns(4)) == [0, 1]
    assert row([1, 2, 3, 4]).block_columns(4) is None and row([0, 1, 2]).block_columns(4) is None
    assert row([0, 1, 3, 2]).block_columns(4) is None


def test_buffers_aligned_and_signature(tmp_path):
    spec = lstm_lm()
    path = to_tflite(spec, tmp_path / "lm.tflite", quiet=True)
    model = _model(path)
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.DataLength():
            start = buf._tab.Vector(flatbuffers.number_types.UOffsetTFlags.py_type(buf._tab.Offset(4)))
            assert start % 16 == 0, i
    sig = model.SignatureDefs(0)
    assert sig.SignatureKey() == b"serving_default"
    names = [sig.Inputs(i).Name().decode() for i in range(sig.InputsLength())]
    assert names == [s.name for s in signature.inputs(spec, "step")]
    names = [sig.Outputs(i).Name().decode() for i in range(sig.OutputsLength())]
    assert names == [s.name for s in signature.outputs(spec, "step")]
    details = rt.interpreter(path).get_signature_runner().get_input_details()
    assert details["x_t"]["dtype"] == np.int64 and details["h"]["dtype"] == np.float32


@pytest.mark.parametrize("make", [mlp, lstm, lstm_lm])
def test_builtin_ops_only(tmp_path, make):
    """No custom op: every operator is one of the builtins docs/tflite.md lists."""
    op = tflite.BuiltinOperator
    documented = {op.RESHAPE, op.TRANSPOSE, op.FULLY_CONNECTED, op.CONCATENATION, op.ADD, op.MUL, op.SPLIT, op.RELU,
                  op.TANH, op.LOGISTIC, op.GELU, op.GATHER, op.SQUEEZE, op.EXPAND_DIMS}
    model = _model(to_tflite(make(), tmp_path / "m.tflite", quiet=True))
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    assert all(c.CustomCode() is None for c in codes)
    assert {c.BuiltinCode() for c in codes} <= documented


def test_tied_embedding_stored_once(tmp_path):
    spec = lstm_lm()
    model = _model(to_tflite(spec, tmp_path / "lm.tflite", quiet=True))
    emb = spec.blocks[0].weight.astype("<f4").tobytes()
    assert sum(model.Buffers(i).DataAsNumpy().tobytes() == emb for i in range(model.BuffersLength())
               if model.Buffers(i).DataLength()) == 1


def test_deploy_side_imports_without_torch():
    code = ("import sys; import dkp_deploy.converters.tflite, dkp_deploy.tflite; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lstm, lstm_lm, lambda: lstm(batch_first=True)])
def test_sequence_mode_is_a_while_over_time(tmp_path, make):
    """mode="sequence": the hub's Scans as TFLite WHILE loops: right at any T and batch, with and without state."""
    spec = make()
    path = to_tflite(spec, tmp_path / "s.tflite", mode="sequence", quiet=True)
    model = _model(path)
    codes = {model.OperatorCodes(i).BuiltinCode() for i in range(model.OperatorCodesLength())}
    assert tflite.BuiltinOperator.WHILE in codes and model.SubgraphsLength() == 1 + 2 * spec.lstm.num_layers
    interp = rt.interpreter(path)
    for time, batch in ((5, 2), (1, 1), (9, 3)):
        feeds = signature.random_feeds(spec, "sequence", batch=batch, time=time, seed=time)
        out, ref = rt.run(interp, feeds), reference.run(spec, feeds, "sequence")
        for name in ref:
            np.testing.assert_allclose(out[name], ref[name], atol=3e-6, err_msg=f"{name} T={time}")
    assert validate.validate(spec, path).passed
    with pytest.raises(ValueError, match="mode"):
        to_tflite(spec, tmp_path / "l.tflite", mode="stream")


def test_bad_sources_and_outputs_leave_no_file(tmp_path):
    bad = mlp()
    bad.blocks[0].bias[0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        to_tflite(bad, tmp_path / "a.tflite")
    with pytest.raises(InputError, match="no such file"):
        to_tflite(tmp_path / "missing.pt", tmp_path / "a.tflite")
    with pytest.raises(InputError, match="does not exist"):
        to_tflite(mlp(), tmp_path / "missing" / "a.tflite")
    with pytest.raises(InputError, match="directory"):
        to_tflite(mlp(), tmp_path)
    inconsistent = mlp()
    inconsistent.blocks[0].weight.sparse.col_idx[0] = 10_000
    with pytest.raises(InputError, match="col_idx"):
        to_tflite(inconsistent, tmp_path / "a.tflite")
    assert not list(tmp_path.iterdir())
    (tmp_path / "keep.tflite").write_bytes(b"old")
    with pytest.raises(InputError):
        to_tflite(bad, tmp_path / "keep.tflite")
    assert (tmp_path / "keep.tflite").read_bytes() == b"old"


def test_bad_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_exported(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer at all")
    for fn in (load_exported, rt.interpreter, lambda p: rt.run(p, {})):
        with pytest.raises(InputError, match="TFL3"):
            fn(junk)
    path = to_tflite(mlp(), tmp_path / "m.tflite", quiet=True)
    with pytest.raises(InputError, match="expected"):
        rt.run(path, {"x": np.zeros((1, 6), np.float32), "h": np.zeros(1)})
    with pytest.raises(InputError, match="missing"):
        rt.run(path, {})


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_damaged_files_never_crash_load_exported(tmp_path_factory, data):
    """Truncated or bit-flipped files: `load_exported` returns or raises InputError, nothing else."""
    path = tmp_path_factory.mktemp("dmg") / "m.tflite"
    to_tflite(lstm(), path, quiet=True)
    raw = bytearray(path.read_bytes())
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(8, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path.write_bytes(bytes(raw))
    try:
        load_exported(path)
    except InputError:
        pass
