"""int8 doped files (`quantize="int8"`): each file against a float64 reference built here from its dequantized
weights (symmetric int8 per row, written independently of dkp_deploy), file sizes, validation and the CLI."""

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
from dkp_deploy.spec import CSR, DopedMatrix
from dkp_deploy.validate import validate, validate_export


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


@pytest.mark.parametrize("impl", ["custom", "portable"])
def test_layer_matches_its_dequantized_weights(tmp_path, impl):
    rng = np.random.default_rng(0)
    w = doped(rng, 96, 60, "kron", kron=((8, 6), (12, 10)), density=0.08)
    b = (0.1 * rng.standard_normal(96)).astype(np.float32)
    spec = single(w, b)
    path = to_onnx(spec, tmp_path / "q.onnx", sparse_impl=impl, quantize="int8", quiet=True)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    wd = _dequantized(w).dense(np.float64)
    for batch in (1, 5, 17):
        x = rng.standard_normal((batch, 60)).astype(np.float32)
        (y,) = runtime.run(path, {"x": x}).values()
        _close(y, x.astype(np.float64) @ wd.T + b)
    # and it is not the float layer: the quantization is real
    assert np.abs(wd - w.dense(np.float64)).max() > 1e-4
    # the matrix rebuilt from the file's own tensors is the dequantized one
    np.testing.assert_allclose(load_exported(path).matrices["fc"], wd, rtol=1e-6, atol=1e-7)


def test_file_holds_int8_values_and_16_bit_columns(tmp_path):
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
    assert t["col_idx"] == types(fp32)["col_idx"] == onnx.TensorProto.UINT16
    assert t["row_scale"] == t["B_scale"] == onnx.TensorProto.FLOAT
    nnz = w.nnz
    # 3 bytes per non-zero + row pointers + small factors and scales, plus the graph itself
    need = 3 * nnz + 4 * 201 + 4 * 200 + 20 * 12 + 10 * 10 + 4 * 30
    assert int8.stat().st_size <= 1.2 * need + 4096

    def tensor_bytes(path) -> int:
        return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer)

    assert tensor_bytes(int8) < 0.6 * tensor_bytes(fp32)  # 3 bytes per non-zero instead of 6; row_ptr stays
    meta = {p.key: p.value for p in onnx.load(str(int8)).metadata_props}
    assert meta["dkp.quantize"] == "int8"


@pytest.mark.parametrize("impl", ["custom", "portable"])
def test_every_structure_and_the_lm(tmp_path, impl):
    """kron, lmf, hmd, none and an undoped dense layer (left float), and a step LM: against the float64 reference
    of the model with the test's dequantized weights."""
    for name, spec, mode in (("mlp", mlp(), "sequence"), ("lm", lstm_lm(), "step"), ("lms", lstm_lm(), "sequence")):
        path = to_onnx(spec, tmp_path / f"{name}.onnx", sparse_impl=impl, mode=mode, quantize="int8", quiet=True)
        ref_spec = spec.map_matrices(_dequantized)
        feeds = signature.random_feeds(spec, mode, batch=3, seed=4, **({"time": 6} if mode == "sequence" else {}))
        out = runtime.run(path, feeds)
        for k, want in reference.run(ref_spec, feeds, mode).items():
            np.testing.assert_allclose(out[k], want, rtol=0, atol=2e-6, err_msg=f"{name}: {k}")
        report = validate(spec, path)
        assert report.passed, report.table()
        assert any("int8" in n for n in report.notes)


def test_validation_fails_when_a_scale_is_wrong(tmp_path):
    spec = single(doped(np.random.default_rng(2), 40, 30, "kron", kron=((8, 6), (5, 5)), density=0.2))
    path = to_onnx(spec, tmp_path / "q.onnx", quantize="int8", quiet=True)
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


def test_quantize_refuses_what_it_does_not_cover(tmp_path):
    spec = single(doped(np.random.default_rng(3), 8, 6, "kron", kron=((4, 2), (2, 3))))
    with pytest.raises(ValueError, match="quantize"):
        to_onnx(spec, tmp_path / "d.onnx", sparse_impl="dense", quantize="int8", quiet=True)
    with pytest.raises(ValueError, match="quantize must be"):
        to_onnx(spec, tmp_path / "d.onnx", quantize="int4", quiet=True)


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


def test_cli_quantize(tmp_path, capsys):
    from _onnx_models import mlp as make_mlp

    ckpt = tmp_path / "m.pt"
    dkp_deploy.save(make_mlp(), ckpt)
    out = tmp_path / "m.onnx"
    assert cli.convert_main([str(ckpt), "-o", str(out), "--quantize", "int8", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["quantize"] == "int8" and out.exists()
    assert cli.validate_main([str(ckpt), str(out)]) == 0
    capsys.readouterr()
    for extra in (["-o", str(tmp_path / "m.tflite")], ["-o", str(tmp_path / "d.onnx"), "--sparse-impl", "dense"]):
        assert cli.convert_main([str(ckpt), *extra, "--quantize", "int8"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--quantize" in err[0]


def test_untied_embedding_table_is_int8_and_tied_stays_float(tmp_path):
    """An embedding table only Gather reads is stored int8 (rows scaled at run time); a tied one stays float."""
    from dkp_deploy.spec import Embedding, Linear, ModelSpec

    tied = lstm_lm(vocab=50)
    emb, lstm, dec = tied.blocks
    rng = np.random.default_rng(9)
    w = DopedMatrix(dec.weight.shape, "dense", {"W": (0.5 * rng.standard_normal(dec.weight.shape)).astype(np.float32)})
    untied = ModelSpec("lstm_lm", [emb, lstm, Linear(dec.name, w, dec.bias)])
    for spec, int8_table in ((untied, True), (tied, False)):
        path = to_onnx(spec, tmp_path / "lm.onnx", mode="step", quantize="int8", quiet=True)
        kinds = {t.data_type for t in onnx.load(str(path)).graph.initializer if list(t.dims) == [50, 4]}
        assert (onnx.TensorProto.INT8 in kinds) == int8_table
        table = int8_rows(emb.weight).astype(np.float32) if int8_table else emb.weight
        ref_spec = ModelSpec("lstm_lm", [Embedding(emb.name, table), *spec.map_matrices(_dequantized).blocks[1:]])
        feeds = signature.random_feeds(spec, "step", batch=4, seed=3)
        out = runtime.run(path, feeds)
        for k, want in reference.run(ref_spec, feeds, "step").items():
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
