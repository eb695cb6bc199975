"""What the exported ONNX file holds: no M x N tensor, size bound, metadata, names, tied weights, options."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from _onnx_models import bias, big_mlp, doped, lstm, lstm_lm, mlp, must_hold_bytes, single
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

from dkp_deploy import reference, runtime, signature
from dkp_deploy.converters.onnx import SPARSE_IMPLS, load_exported, to_onnx
from dkp_deploy.errors import InputError
from dkp_deploy.spec import CSR, replace


def _graphs(g: onnx.GraphProto):
    yield g
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(a.g)


def _initializers(model):
    return [t for g in _graphs(model.graph) for t in g.initializer]


def _nodes(model):
    return [n for g in _graphs(model.graph) for n in g.node]


@pytest.mark.parametrize("impl", ["custom", "portable"])
@pytest.mark.parametrize("make", [big_mlp, mlp, lstm, lstm_lm])
@pytest.mark.parametrize("mode", ["sequence", "step"])
def test_no_dense_w_and_size_bound(tmp_path, impl, make, mode):
    spec = make()
    path = to_onnx(spec, tmp_path / "m.onnx", sparse_impl=impl, mode=mode, quiet=True)
    model = onnx.load(str(path))
    sizes = [int(np.prod(t.dims)) for t in _initializers(model)]
    for name, w in spec.matrices().items():
        if w.structure != "dense":
            assert max(sizes) < w.shape[0] * w.shape[1], name
    assert all(len(t.raw_data) == int(np.prod(t.dims)) * numpy_helper.to_array(t).itemsize
               for t in _initializers(model) if np.prod(t.dims) > 4), "initializers are stored raw"
    for g in _graphs(model.graph):  # every stored tensor is used (no dead bytes)
        used = {i for n in _nodes(model) for i in n.input} | {i.name for i in g.input}
        assert not [t.name for t in g.initializer if t.name not in used]
    if make is big_mlp:  # large enough that the graph itself is small next to the weights
        assert path.stat().st_size <= 1.1 * must_hold_bytes(spec)


def test_dense_impl_holds_folded_w(tmp_path):
    spec = big_mlp()
    model = onnx.load(str(to_onnx(spec, tmp_path / "d.onnx", sparse_impl="dense", quiet=True)))
    shapes = {tuple(t.dims) for t in _initializers(model)}
    assert {(512, 256), (128, 512)} <= shapes


@pytest.mark.parametrize("make,batch_first", [(mlp, None), (lstm, False), (lstm, True), (lstm_lm, False),
                                              (lstm_lm, True)])
@pytest.mark.parametrize("mode", ["sequence", "step"])
def test_graph_shape_and_names(tmp_path, make, batch_first, mode):
    spec = make() if batch_first is None else make(batch_first=batch_first)
    model = onnx.load(str(to_onnx(spec, tmp_path / "m.onnx", mode=mode, quiet=True)))
    nodes = _nodes(model)
    transposes = sorted(n.name for n in nodes if n.op_type == "Transpose")
    # the only Transposes: batch_first input and output of a sequence graph
    assert transposes == (["lstm/batch_major", "lstm/time_major"] if batch_first and mode == "sequence" else [])
    names = [n.name for n in nodes]
    assert len(set(names)) == len(names) and all(names)
    for matrix in spec.matrices():
        assert any(n.startswith((matrix + "/", "scan/" + matrix + "/")) for n in names), matrix
    # a kron half with a W_s goes into the SparseMatVec node (its B, C_T inputs); without one, two MatMuls
    kron = [n for n in nodes if "/kron/" in n.name]
    matrices = spec.matrices().values()
    assert [n.op_type for n in kron].count("MatMul") == 2 * sum(w.structure == "kron" and w.nnz == 0 for w in matrices)
    sparse = [n for n in nodes if n.op_type == "SparseMatVec" and n.domain == "ai.dkp"]
    assert len(sparse) == sum(w.nnz > 0 and w.structure != "dense" for w in matrices)
    assert sum(len(n.input) == 7 and n.input[5].endswith("/B") for n in sparse) == sum(
        w.structure == "kron" and w.nnz > 0 for w in matrices)
    io = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    want = ([s.name for s in signature.inputs(spec, mode)], [s.name for s in signature.outputs(spec, mode)])
    assert io == want


def test_metadata(tmp_path):
    spec = lstm_lm()
    model = onnx.load(str(to_onnx(spec, tmp_path / "m.onnx", sparse_impl="portable", mode="step", quiet=True)))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["dkp.mode"] == "step" and meta["dkp.sparse_impl"] == "portable" and meta["dkp.arch"] == "lstm_lm"
    assert float(meta["dkp.compression_factor"]) == pytest.approx(spec.summary()["compression_factor"], rel=1e-5)
    layers = json.loads(meta["dkp.layers"])
    assert set(layers) == set(spec.matrices())
    for name, w in spec.matrices().items():
        assert layers[name]["shape"] == list(w.shape) and layers[name]["nnz"] == w.nnz
    assert meta["dkp.tool_version"] and model.producer_name == "dkp-deploy"


def test_tied_embedding_is_one_initializer(tmp_path):
    spec = lstm_lm(vocab=13)
    for mode in ("sequence", "step"):
        model = onnx.load(str(to_onnx(spec, tmp_path / f"{mode}.onnx", mode=mode, quiet=True)))
        assert [tuple(t.dims) for t in _initializers(model)].count((13, 4)) == 1
        exported = load_exported(tmp_path / f"{mode}.onnx")
        np.testing.assert_array_equal(exported.matrices["decoder"], spec.blocks[0].weight.astype(np.float64))


@pytest.mark.parametrize("impl", SPARSE_IMPLS)
def test_load_exported_rebuilds_w(tmp_path, impl):
    spec = lstm(batch_first=True)
    for mode in ("sequence", "step"):
        exported = load_exported(to_onnx(spec, tmp_path / f"{mode}.onnx", sparse_impl=impl, mode=mode, quiet=True))
        assert exported.mode == mode and exported.format == "onnx"
        for name, w in spec.matrices().items():
            # exact for factored files; float32 rounding of the folded W for the dense baseline
            np.testing.assert_allclose(exported.matrices[name], w.dense(), rtol=0, atol=1e-6 if impl == "dense" else 0)


@pytest.mark.parametrize("skewed", [False, True])
def test_portable_formulations(tmp_path, skewed):
    """Rows of similar length run as padded rows (ReduceSum); one long row falls back to ScatterElements."""
    rng = np.random.default_rng(5)
    w = doped(rng, 40, 30, "kron", kron=((8, 6), (5, 5)), density=0.1 if skewed else 0.5)
    if skewed:
        dense = w.sparse.to_dense(np.float32)
        dense[3:6] = rng.standard_normal((3, 30))
        w = replace(w, sparse=CSR.from_dense(dense))
    spec = single(w, bias(rng, 40))
    path = to_onnx(spec, tmp_path / "p.onnx", sparse_impl="portable", quiet=True)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ("ScatterElements" in ops and "ReduceSum" not in ops) if skewed else ("ReduceSum" in ops)
    feeds = signature.random_feeds(spec, batch=3)
    np.testing.assert_allclose(runtime.run(path, feeds)["y"], reference.run(spec, feeds)["y"], atol=2e-6)


def test_portable_index_work_is_folded_by_onnxruntime(tmp_path):
    import onnxruntime as ort

    spec = big_mlp()
    path = to_onnx(spec, tmp_path / "p.onnx", sparse_impl="portable", quiet=True)
    optimized = tmp_path / "opt.onnx"
    runtime.session(path, optimized_model_filepath=str(optimized),
                    graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    ops = {n.op_type for n in onnx.load(str(optimized)).graph.node}
    # the padded-row positions and the columns rebuilt from their uint8 gaps (CumSum, Gather, Sub, Cast)
    assert not ops & {"Where", "CumSum", "ConstantOfShape", "Less", "Min", "Gather", "Sub", "Cast"}, ops


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    m1=st.integers(1, 4), n1=st.integers(1, 4), m2=st.integers(1, 4), n2=st.integers(1, 4),
    structure=st.sampled_from(["kron", "kron", "lmf", "hmd", "none"]),
    density=st.sampled_from([0.0, 0.05, 0.3, 1.0]), with_bias=st.booleans(), batch=st.integers(1, 3),
    impl=st.sampled_from(SPARSE_IMPLS), seed=st.integers(0, 2**16),
)
def test_doped_layer_property(tmp_path, m1, n1, m2, n2, structure, density, with_bias, batch, impl, seed):
    """Any kron shape (1-wide included), any structure, any density (no nonzeros, empty rows, full), any batch."""
    rng = np.random.default_rng(seed)
    m, n = m1 * m2, n1 * n2
    top = 1 if m > 1 else 0
    w = doped(rng, m, n, structure, kron=((m1, n1), (m2, n2)), top=top, rank=2, density=density)
    spec = single(w, bias(rng, m) if with_bias else None)
    path = to_onnx(spec, tmp_path / "k.onnx", sparse_impl=impl, quiet=True)
    feeds = signature.random_feeds(spec, batch=batch, seed=seed)
    np.testing.assert_allclose(runtime.run(path, feeds)["y"], reference.run(spec, feeds)["y"], atol=2e-6)


@pytest.mark.parametrize("opset", [17, 18, 20, 21])
@pytest.mark.parametrize("make,mode", [(mlp, "sequence"), (lstm_lm, "step"), (lstm, "sequence")])
def test_opsets(tmp_path, opset, make, mode):
    spec = make()
    path = to_onnx(spec, tmp_path / "o.onnx", opset=opset, mode=mode, sparse_impl="portable", quiet=True)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import} == {"": opset}
    feeds = signature.random_feeds(spec, mode, batch=2)
    out, ref = runtime.run(path, feeds), reference.run(spec, feeds, mode)
    for name in ref:
        np.testing.assert_allclose(out[name], ref[name], atol=2e-6)


def test_bad_options_and_inputs(tmp_path):
    spec = mlp()
    with pytest.raises(ValueError, match="sparse_impl"):
        to_onnx(spec, tmp_path / "a.onnx", sparse_impl="csr")
    with pytest.raises(ValueError, match="mode"):
        to_onnx(lstm(), tmp_path / "a.onnx", mode="stream")
    with pytest.raises(ValueError, match="opset"):
        to_onnx(spec, tmp_path / "a.onnx", opset=11)
    with pytest.raises(InputError, match="does not exist"):
        to_onnx(spec, tmp_path / "missing" / "a.onnx")
    bad = mlp()
    bad.blocks[0].bias[0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        to_onnx(bad, tmp_path / "a.onnx")
    assert not list(tmp_path.iterdir())


def _columns_from_gaps(row_ptr: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """The columns of uint8 gaps, row by row (independent of `CSR.from_column_gaps`)."""
    cols = np.zeros(gaps.size, np.int64)
    for i in range(row_ptr.size - 1):
        cols[row_ptr[i]:row_ptr[i + 1]] = np.cumsum(gaps[row_ptr[i]:row_ptr[i + 1]].astype(np.int64))
    return cols


@pytest.mark.parametrize("quantize", [None, "int8", "int8-dynamic"])
def test_custom_files_store_column_gaps(tmp_path, quantize):
    """custom files hold each W_s's columns as uint8 gaps: 1 byte per non-zero, which rebuild W_s exactly."""
    spec = big_mlp()
    path = to_onnx(spec, tmp_path / "m.onnx", sparse_impl="custom", quantize=quantize, quiet=True)
    model = onnx.load(str(path))
    arrays = {t.name: numpy_helper.to_array(t) for t in _initializers(model)}
    layers = json.loads({p.key: p.value for p in model.metadata_props}["dkp.layers"])
    checked = 0
    for name, w in spec.matrices().items():
        if w.sparse is None or w.sparse.nnz == 0 or w.structure == "dense":
            continue
        t = {role: arrays[tname] for role, tname in layers[name]["tensors"].items()}
        assert t["col_idx"].dtype == np.uint8
        values = t["values"].astype(np.float64)
        if quantize:
            values = values * np.repeat(t["row_scale"].astype(np.float64), np.diff(t["row_ptr"]))
        rows = np.repeat(np.arange(w.shape[0]), np.diff(t["row_ptr"]))
        got = np.zeros(w.shape)
        np.add.at(got, (rows, _columns_from_gaps(t["row_ptr"], t["col_idx"])), values)
        want = w.sparse.to_dense()
        if quantize is None:
            np.testing.assert_array_equal(got, want)
        else:  # int8 values: within half a step of their row's scale
            half_step = 0.5 * t["row_scale"].astype(np.float64)[:, None] * (1 + 1e-6)
            assert np.all(np.abs(got - want) <= half_step), name
        checked += 1
    assert checked


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 6), st.integers(1, 1500), st.sampled_from([0.0005, 0.003, 0.05, 0.5]), st.integers(0, 2**31))
def test_column_gaps_round_trip(m, n, density, seed):
    """`CSR.column_gaps` against the ops tests' entry-by-entry gap_form, and back through `from_column_gaps`."""
    import scipy.sparse as sp
    from ops_graphs import gap_form

    rng = np.random.default_rng(seed)
    dense = (rng.random((m, n)) < density) * rng.standard_normal((m, n))
    csr = CSR.from_dense(dense)
    filled, gaps = csr.column_gaps()
    ref, ref_gaps = gap_form(sp.csr_matrix(dense.astype(np.float32)))
    np.testing.assert_array_equal(gaps, ref_gaps)
    np.testing.assert_array_equal(filled.row_ptr, ref.indptr)
    np.testing.assert_array_equal(filled.col_idx, ref.indices)
    np.testing.assert_array_equal(filled.values, ref.data)
    back = CSR.from_column_gaps(csr.shape, filled.row_ptr, gaps, filled.values)
    np.testing.assert_array_equal(back.col_idx, filled.col_idx)
    np.testing.assert_array_equal(back.to_dense(), csr.to_dense())


def test_column_gaps_that_row_ptr_cannot_delimit():
    gaps = np.array([0, 1, 1], np.uint8)
    for rp in ([0, 2], [0, 2, 4], [1, 3], [0, 3, 2, 3], []):
        with pytest.raises(InputError, match="row_ptr"):
            CSR.from_column_gaps((3, 4), np.array(rp, np.int32), gaps, np.ones(3, np.float32))


def _column_layouts():
    """W_s layouts the writer must store faithfully: a few gaps over 255 (bridged by zero entries), a row whose
    entries are not sorted by column, and a W_s so sparse that bridging would add over 1% of entries (uint16 then)."""
    rng = np.random.default_rng(21)
    n = 1200
    dense = np.where(rng.random((40, n)) < 0.1, rng.standard_normal((40, n)), 0).astype(np.float32)
    dense[5] = 0
    dense[5, [3, 700, 1199]] = [1.0, -2.0, 0.5]  # gaps 697 and 499: three zero entries in ~4,800
    sp = CSR.from_dense(dense)
    yield "fillers", sp, np.uint8
    a, b = sp.row_ptr[2], sp.row_ptr[3]
    cols, vals = sp.col_idx.copy(), sp.values.copy()
    cols[a:b], vals[a:b] = cols[a:b][::-1].copy(), vals[a:b][::-1].copy()
    yield "unsorted row", CSR(sp.shape, sp.row_ptr, cols, vals), np.uint8
    very = np.where(rng.random((40, n)) < 0.004, rng.standard_normal((40, n)), 0).astype(np.float32)
    yield "very sparse", CSR.from_dense(very), np.uint16


@pytest.mark.parametrize("quantize", [None, "int8"])
@pytest.mark.parametrize("impl", ["custom", "portable"])
def test_column_layouts_round_trip_through_files(tmp_path, impl, quantize):
    """Each layout runs (onnxruntime vs float64 numpy on the file's own tensors, decoded here) and reads back."""
    from dkp_deploy.spec import DopedMatrix

    x = np.random.default_rng(22).standard_normal((3, 1200)).astype(np.float32)
    for label, sp, col_dtype in _column_layouts():
        spec = single(DopedMatrix(sp.shape, "none", {}, sp))
        path = to_onnx(spec, tmp_path / "m.onnx", sparse_impl=impl, quantize=quantize, quiet=True)
        model = onnx.load(str(path))
        arrays = {t.name: numpy_helper.to_array(t) for t in _initializers(model)}
        roles = json.loads({p.key: p.value for p in model.metadata_props}["dkp.layers"])["fc"]["tensors"]
        t = {role: arrays[name] for role, name in roles.items()}
        assert t["col_idx"].dtype == col_dtype, label
        cols = _columns_from_gaps(t["row_ptr"], t["col_idx"]) if col_dtype == np.uint8 else t["col_idx"]
        values = t["values"].astype(np.float64)
        if quantize:
            values = values * np.repeat(t["row_scale"].astype(np.float64), np.diff(t["row_ptr"]))
        w = np.zeros(sp.shape)
        np.add.at(w, (np.repeat(np.arange(sp.shape[0]), np.diff(t["row_ptr"])), cols), values)
        if quantize is None:
            np.testing.assert_array_equal(w, sp.to_dense(), err_msg=label)
        out = runtime.run(path, {"x": x})["y"]
        ref = x.astype(np.float64) @ w.T
        assert np.all(np.abs(out - ref) <= 1e-5 * (np.abs(x).astype(np.float64) @ np.abs(w).T) + 1e-6), label
        np.testing.assert_array_equal(load_exported(path).matrices["fc"], w.astype(np.float32).astype(np.float64)
                                      if quantize else w, err_msg=label)
