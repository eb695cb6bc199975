"""Doped embeddings (issue 13): `DopedEmbedding` (W = kron(B, C) + W_s, V x D), `compress` of nn.Embedding (tied
decoders included), export as one `ai.dkp::DopedGather` hub node, its lowerings (custom, portable, dense) and the
TFLite rule, each held to an independent reference: the table built explicitly (torch / numpy, float64) or the
torch model in float64."""

from __future__ import annotations

import copy
import json
import subprocess
import warnings

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
from _onnx_models import int8_rows  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from torch import nn  # noqa: E402

import dkp_deploy  # noqa: E402
from dkp_deploy import runtime  # noqa: E402
from dkp_deploy.errors import InputError  # noqa: E402
from dkp_deploy.export import convert, export  # noqa: E402
from dkp_deploy.hub import reference  # noqa: E402
from dkp_deploy.nn import DopedEmbedding, DopedLinear, DopedLSTM, doped_layers  # noqa: E402
from dkp_deploy.validate import validate_export  # noqa: E402

V, D, H = 60, 24, 24
T_, B_ = torch.export.Dim("time"), torch.export.Dim("batch")
ROLES_GATHER = {"B", "C_T", "row_ptr", "col_idx", "values"}


def _table64(e: DopedEmbedding) -> np.ndarray:
    """The table built explicitly in numpy float64: kron of the factors plus the masked W_s."""
    t = e.table
    b, c = t.B.detach().double().numpy(), t.C.detach().double().numpy()
    return np.kron(b, c) + (t.W_s.detach().double() * t.mask).numpy()


def _rel(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(np.asarray(out, np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


class WordLM(nn.Module):
    """nn.Embedding -> 2-layer nn.LSTM -> nn.Linear decoder, time-major, state in and out."""

    def __init__(self, tie: bool = False) -> None:
        super().__init__()
        self.encoder = nn.Embedding(V, D)
        self.rnn = nn.LSTM(D, H, 2)
        self.decoder = nn.Linear(H, V)
        if tie:
            self.decoder.weight = self.encoder.weight

    def forward(self, tokens, state):
        y, state = self.rnn(self.encoder(tokens), state)
        return self.decoder(y), state


class Rows(nn.Module):
    """Just the lookup: ids of any shape -> rows."""

    def __init__(self, emb: nn.Module) -> None:
        super().__init__()
        self.emb = emb

    def forward(self, ids):
        return self.emb(ids)


def _doped_lm(tie: bool = False, cf: float = 2.0) -> nn.Module:
    torch.manual_seed(0)
    return dkp_deploy.compress(WordLM(tie), cf=cf, include=["encoder", "rnn", "decoder"]).eval()


def _lm_args(batch: int = 3):
    return (torch.randint(0, V, (5, batch)), (torch.zeros(2, batch, H), torch.zeros(2, batch, H)))


LM_DIMS = ({0: T_, 1: B_}, ({1: B_}, {1: B_}))
LM_NAMES = ["tokens", "h", "c"]


def _lm_feeds(t: int, b: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"tokens": rng.integers(0, V, (t, b)), "h": rng.standard_normal((2, b, H)).astype(np.float32),
            "c": rng.standard_normal((2, b, H)).astype(np.float32)}


def _lm_torch64(model: nn.Module, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        logits, (h, c) = m(torch.from_numpy(feeds["tokens"]),
                           (torch.from_numpy(feeds["h"]).double(), torch.from_numpy(feeds["c"]).double()))
    return [logits.numpy(), h.numpy(), c.numpy()]


# -- the module -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (2, 3, 4)])
def test_forward_is_rows_of_the_explicit_table(shape):
    torch.manual_seed(1)
    e = DopedEmbedding(V, D, kron_shape=((10, 4), (6, 6)), density=0.2).double()
    ids = torch.randint(0, V, shape)
    out = e(ids)
    assert out.shape == (*shape, D)
    np.testing.assert_allclose(out.detach().numpy(), _table64(e)[ids.numpy()], rtol=0, atol=1e-13)


def test_gradients_match_the_explicit_table():
    torch.manual_seed(2)
    e = DopedEmbedding(V, D, kron_shape=((6, 6), (10, 4)), density=0.3).double()
    ids = torch.randint(0, V, (4, 6))
    target = torch.randn(4, 6, D, dtype=torch.float64)
    (e(ids) * target).sum().backward()
    got = {k: getattr(e.table, k).grad.clone() for k in ("B", "C", "W_s")}
    t = e.table
    for p in (t.B, t.C, t.W_s):
        p.grad = None
    table = torch.kron(t.B, t.C) + t.W_s * t.mask  # the explicit table, autograd's reference
    (table[ids] * target).sum().backward()
    for k, g in got.items():
        torch.testing.assert_close(g, getattr(t, k).grad, rtol=0, atol=1e-12)


def test_cmr_and_pruning_are_the_tables():
    e = DopedEmbedding(V, D, density=1.0, cmr=0.5)
    assert doped_layers(e) == [e.table] and e.table.cmr == 0.5
    e.set_density(0.1)
    assert e.nnz == round(0.1 * V * D) and e.compression_factor() == e.table.compression_factor()
    ids = torch.randint(0, V, (50,))
    e.eval()
    ref = torch.from_numpy(_table64(e)[ids.numpy()]).float()
    torch.testing.assert_close(e(ids), ref, rtol=1e-5, atol=1e-6)  # eval: no CMR masks
    e.train()
    torch.manual_seed(0)
    assert not torch.allclose(e(ids), ref)  # training: each part under its own Bernoulli mask


@pytest.mark.parametrize("option", [{"padding_idx": 0}, {"max_norm": 1.0}, {"sparse": True},
                                    {"scale_grad_by_freq": True}, {"kron_shape": ((7, 4), (9, 6))}])
def test_unsupported_options_are_one_line_input_errors(option):
    with pytest.raises(InputError) as err:
        DopedEmbedding(V, D, **option)
    assert "\n" not in str(err.value) and ("kron_shape" in str(err.value) or next(iter(option)) in str(err.value))


# -- compress -------------------------------------------------------------------------------------------------------
def test_compress_dopes_embedding_lstm_and_decoder():
    torch.manual_seed(3)
    lm = WordLM()
    out, report = dkp_deploy.compress(lm, cf=3, include=["encoder", "rnn", "decoder"], return_report=True)
    assert isinstance(out.encoder, DopedEmbedding) and isinstance(out.rnn, DopedLSTM)
    assert isinstance(out.decoder, DopedLinear) and out.encoder.table is not out.decoder
    rows = {r.name: r for r in report.rows}
    assert rows["encoder"].kind == "Embedding" and rows["encoder"].status == "doped"
    assert abs(rows["encoder"].cf - 3) < 0.01 and rows["encoder"].kron_shapes == [((10, 4), (6, 6))]
    # the table is the nearest Kronecker product of W plus its largest residual entries (compression.py's rule)
    w = lm.encoder.weight.detach().double().numpy()
    t = out.encoder.table
    kron = np.kron(t.B.detach().double().numpy(), t.C.detach().double().numpy())
    mask = t.mask.numpy()
    residual = w - kron
    assert np.abs(residual[mask]).min() >= np.abs(residual[~mask]).max()
    np.testing.assert_allclose(_table64(out.encoder), kron + np.where(mask, residual, 0), atol=1e-6)
    # at density 1 the doped model is the dense one
    exact = dkp_deploy.compress(lm, density=1.0, include=["*"]).eval()
    args = _lm_args()
    with torch.no_grad():
        torch.testing.assert_close(exact(*args)[0], lm.eval()(*args)[0], rtol=0, atol=1e-5)


def test_embeddings_are_opt_in():
    torch.manual_seed(4)
    out, report = dkp_deploy.compress(WordLM(), cf=2, return_report=True)
    assert type(out.encoder) is nn.Embedding and isinstance(out.decoder, DopedLinear)
    assert "encoder" not in {r.name for r in report.rows}
    with pytest.warns(UserWarning, match="padding_idx"):
        model = Rows(nn.Embedding(V, D, padding_idx=0))
        kept = dkp_deploy.compress(model, cf=2, include=["emb"])
    assert type(kept.emb) is nn.Embedding
    with pytest.raises(InputError, match="padding_idx"):
        dkp_deploy.compress(model, cf=2, include=["emb"], strict=True)
    with pytest.raises(InputError, match="kron"):
        dkp_deploy.compress(Rows(nn.Embedding(V, D)), density=0.1, structure="lmf", rank=2, include=["emb"],
                            strict=True)


def test_tied_decoder_stays_tied():
    torch.manual_seed(5)
    lm = WordLM(tie=True)
    out, report = dkp_deploy.compress(lm, cf=2, include=["encoder", "rnn", "decoder"], return_report=True)
    assert out.encoder.table is out.decoder  # one DopedLinear: B, C, W_s, mask shared, the bias the decoder's
    assert {r.name: r.status for r in report.rows} == {"encoder": "doped", "rnn": "doped", "decoder": "doped"}
    assert "tied to decoder" in next(r.reason for r in report.rows if r.name == "encoder")
    np.testing.assert_allclose(out.decoder.bias.detach().numpy(), lm.decoder.bias.detach().numpy())
    # training keeps them tied: one set of parameters, pruned once
    params = list(out.parameters())
    assert len({id(p) for p in params}) == len(params)
    opt = torch.optim.SGD(out.parameters(), lr=0.1)
    out.train()
    out(*_lm_args())[0].sum().backward()
    opt.step()
    out.decoder.set_density(0.05)
    out.eval()
    ids = torch.randint(0, V, (9,))
    with torch.no_grad():
        np.testing.assert_allclose(out.encoder(ids).numpy(), out.decoder.dense_weight().numpy()[ids.numpy()],
                                   atol=1e-6)
    # one of the pair left dense: both stay as they are, tied, and the report says why
    with pytest.warns(UserWarning, match="tied to encoder"):
        half = dkp_deploy.compress(lm, cf=2, include=["decoder"])
    assert type(half.decoder) is nn.Linear and half.decoder.weight is half.encoder.weight


# -- export: hub, ONNX lowerings, reference, validation -------------------------------------------------------------
@pytest.fixture(scope="module")
def lm_files(tmp_path_factory):
    """The untied and the tied LM, each exported as a hub and lowered three ways (one export per file)."""
    d = tmp_path_factory.mktemp("lm")
    out = {}
    for tie in (False, True):
        model = _doped_lm(tie)
        paths = {impl: export(model, _lm_args(), d / f"lm{int(tie)}.{impl}.onnx", dynamic_shapes=LM_DIMS,
                              input_names=LM_NAMES, sparse_impl=impl)
                 for impl in ("hub", "custom", "portable", "dense")}
        out[tie] = model, paths
    return out


def test_hub_holds_one_doped_gather_and_the_reference_agrees(lm_files):
    model, paths = lm_files[False]
    hub = onnx.load(str(paths["hub"]))
    gathers = [n for n in hub.graph.node if n.op_type == "DopedGather"]
    assert len(gathers) == 1 and gathers[0].domain == "ai.dkp"
    tables = {t.name for t in hub.graph.initializer if len(t.dims) == 2 and t.dims[0] == V}
    assert not any(n.op_type == "Gather" and n.input[0] in tables for n in hub.graph.node)  # no dense lookup
    for t, b in ((5, 3), (2, 1)):
        feeds = _lm_feeds(t, b, seed=t)
        ref = _lm_torch64(model, feeds)
        got = list(reference.run(hub, feeds).values())
        for g, r in zip(got, ref):
            assert _rel(g, r) <= 1e-9
    # dkp-convert's torch-free path: the hub file lowered later gives the same numbers
    lowered = convert(paths["hub"], paths["hub"].with_name("from_hub.onnx"), sparse_impl="portable")
    feeds = _lm_feeds(3, 2, seed=9)
    out = runtime.run(lowered, feeds)
    for name, ref in zip([o.name for o in hub.graph.output], _lm_torch64(model, feeds)):
        assert _rel(out[name], ref) <= 1e-5
    # onnx's own checker and shape inference accept the node: indices [T, B] -> [T, B, D]
    from dkp_deploy.hub.schema import register_schemas

    register_schemas()
    onnx.checker.check_model(hub)
    inferred = onnx.shape_inference.infer_shapes(hub)
    vi = {v.name: v for v in inferred.graph.value_info}[gathers[0].output[0]]
    assert len(vi.type.tensor_type.shape.dim) == 3 and vi.type.tensor_type.shape.dim[2].dim_value == D


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("impl", ["custom", "portable", "dense"])
def test_lowered_lm_matches_torch_float64(lm_files, impl, tie):
    model, paths = lm_files[tie]
    sess = runtime.session(paths[impl])
    outputs = [o.name for o in sess.get_outputs()]
    for t, b in ((5, 3), (1, 1), (11, 2)):  # the export shape and two others
        feeds = _lm_feeds(t, b, seed=10 * t + b)
        out = runtime.run(sess, feeds)
        for name, ref in zip(outputs, _lm_torch64(model, feeds)):
            assert _rel(out[name], ref) <= 1e-5, (impl, name, t, b)
    report = validate_export(paths[impl], hub=paths["hub"], model=model, args=_lm_args())
    assert report.passed, report.table()
    assert {"encoder", "decoder"} <= {r.name for r in report.rows if r.kind == "layer"}


@pytest.mark.parametrize("impl", ["custom", "portable"])
def test_lowered_files_hold_factors_and_csr_only(lm_files, impl):
    model, paths = lm_files[True]
    m = onnx.load(str(paths[impl]))
    shapes = {t.name: tuple(t.dims) for t in m.graph.initializer}
    assert not [n for n, s in shapes.items() if s in ((V, D), (D, V)) or (len(s) == 2 and s[0] == V)], shapes
    import json

    layers = json.loads({p.key: p.value for p in m.metadata_props}["dkp.layers"])
    enc, dec = layers["encoder"], layers["decoder"]
    assert set(enc["tensors"]) == ROLES_GATHER and enc["kind"] == "embedding" and enc["indices"] == "tokens"
    arrays = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    # tied: the embedding reads the decoder DopedMatMul's tensors (factors and CSR with uint8 column gaps)
    assert all(enc["tensors"][k] == dec["tensors"][k] for k in ROLES_GATHER)
    # the file's own tensors rebuild the table, independently of the lowering (numpy, float64)
    tt = {k: arrays[v] for k, v in enc["tensors"].items()}
    table = np.kron(tt["B"].astype(np.float64), tt["C_T"].T.astype(np.float64))
    rp = tt["row_ptr"].astype(np.int64)
    rows = np.repeat(np.arange(V), np.diff(rp))
    assert tt["col_idx"].dtype == np.uint8  # column gaps: each row's running sum is its columns
    cols = np.concatenate([np.cumsum(tt["col_idx"][rp[i]:rp[i + 1]].astype(np.int64)) for i in range(V)])
    np.add.at(table, (rows, cols), tt["values"].astype(np.float64))
    np.testing.assert_allclose(table, _table64(model.encoder), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def rows_model():
    """A lone DopedEmbedding whose W_s rows differ in length (0 to many entries): the padding paths."""
    torch.manual_seed(6)
    e = DopedEmbedding(V, D, kron_shape=((12, 6), (5, 4)), density=1.0)
    with torch.no_grad():
        mask = torch.rand(V, D) < torch.linspace(0, 0.5, V)[:, None]  # row 0 empty, the last rows ~half full
        e.table.mask.copy_(mask)
        e.table.W_s.mul_(mask)
    return Rows(e).eval()


@pytest.mark.parametrize("impl", ["custom", "portable", "dense"])
def test_lookup_of_any_id_shape_matches_numpy(tmp_path, rows_model, impl):
    table = _table64(rows_model.emb)
    path = export(rows_model, (torch.randint(0, V, (3, 4)),), tmp_path / "rows.onnx",
                  dynamic_shapes=({0: torch.export.Dim("a"), 1: torch.export.Dim("b")},), sparse_impl=impl)
    sess = runtime.session(path)
    rng = np.random.default_rng(7)
    for shape in ((3, 4), (1, 1), (6, 9)):
        ids = rng.integers(0, V, shape)
        ids[0, 0], ids[-1, -1] = 0, V - 1  # the empty row and the last
        (out,) = runtime.run(sess, {sess.get_inputs()[0].name: ids}).values()
        np.testing.assert_allclose(out, table[ids], rtol=0, atol=1e-6)


@pytest.mark.parametrize("impl", ["custom", "portable"])
def test_ids_out_of_range_are_runtime_errors_not_other_rows(tmp_path, rows_model, impl):
    """Negative ids must not wrap around (ONNX Gather would): they fail like ids >= V."""
    path = export(rows_model, (torch.randint(0, V, (3, 4)),), tmp_path / "rows.onnx",
                  dynamic_shapes=({0: torch.export.Dim("a"), 1: torch.export.Dim("b")},), sparse_impl=impl)
    sess = runtime.session(path)
    for bad in (-1, -V, V, V + 7):
        with pytest.raises(Exception, match="(?i)indices|out of"):
            runtime.run(sess, {sess.get_inputs()[0].name: np.array([[0, bad]])})


@pytest.mark.parametrize("impl", ["custom", "portable"])
def test_int8_lookup_is_the_table_of_the_dequantized_factors(tmp_path, rows_model, impl):
    t = rows_model.emb.table
    b, c = t.B.detach().double().numpy(), t.C.detach().double().numpy()
    ws = (t.W_s.detach().double() * t.mask).numpy()
    table = np.kron(int8_rows(b), int8_rows(c)) + int8_rows(ws)
    path = export(rows_model, (torch.randint(0, V, (3, 4)),), tmp_path / "rows.onnx",
                  dynamic_shapes=({0: torch.export.Dim("a"), 1: torch.export.Dim("b")},), sparse_impl=impl,
                  quantize="int8")
    kinds = {tt.data_type for tt in onnx.load(str(path)).graph.initializer}
    assert onnx.TensorProto.INT8 in kinds
    ids = np.random.default_rng(2).integers(0, V, (5, 7))
    sess = runtime.session(path)
    (out,) = runtime.run(sess, {sess.get_inputs()[0].name: ids}).values()
    np.testing.assert_allclose(out, table[ids], rtol=0, atol=1e-6)
    assert np.abs(table - _table64(rows_model.emb)).max() > 1e-4  # the quantization is real


def test_int8_file_of_the_tied_lm_validates_against_its_hub(tmp_path, lm_files):
    """Decoder and doped embedding share one set of int8 factors; the file validates against its hub."""
    model, paths = lm_files[True]
    path = export(model, _lm_args(), tmp_path / "q.onnx", dynamic_shapes=LM_DIMS, input_names=LM_NAMES,
                  quantize="int8")
    report = validate_export(path, hub=paths["hub"])
    assert report.passed, report.table()
    layers = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["dkp.layers"])
    emb = next(info["tensors"] for info in layers.values() if info.get("kind") == "embedding")
    tied = [info["tensors"] for info in layers.values() if info.get("kind") != "embedding"
            and info["tensors"].get("B") == emb["B"] and info["tensors"].get("C_T") == emb["C_T"]]
    assert len(tied) == 1  # the decoder reads the embedding's int8 B and C_T: one copy in the file


def test_an_embedding_without_w_s_is_its_kron_rows(tmp_path):
    torch.manual_seed(9)
    model = Rows(DopedEmbedding(V, D, density=0.0)).eval()
    table = _table64(model.emb)
    np.testing.assert_allclose(table, np.kron(model.emb.table.B.detach().double().numpy(),
                                              model.emb.table.C.detach().double().numpy()))
    ids = np.random.default_rng(3).integers(0, V, (4, 5))
    for target in ("rows.onnx", "rows.tflite"):
        if target.endswith(".tflite"):
            pytest.importorskip("tflite")
        path = export(model, (torch.from_numpy(ids),), tmp_path / target,
                      dynamic_shapes=({0: torch.export.Dim("a")},), input_names=["ids"], output_names=["rows"])
        if target.endswith(".onnx"):
            out = runtime.run(path, {"ids": ids})["rows"]
        else:
            from dkp_deploy import tflite as rt

            out = rt.run(path, {"ids": ids})["rows"]
        np.testing.assert_allclose(out, table[ids], rtol=0, atol=1e-6)


# -- TFLite ---------------------------------------------------------------------------------------------------------
def test_tflite_scatter_nd_sums_duplicate_indices(tmp_path):
    """The TFLite rule relies on SCATTER_ND accumulating updates that hit one index (padding adds 0 there)."""
    pytest.importorskip("tflite")
    from dkp_deploy import tflite as rt
    from dkp_deploy.converters.tflite.graph import BATCH, Graph, Op

    g = Graph()
    idx, upd, n = g.input("idx", np.int32, (BATCH, 1)), g.input("upd", np.float32, (BATCH,)), g.input(
        "n", np.int32, (1,))
    out = g.op1(Op.SCATTER_ND, [idx, upd, n], "out", (BATCH,))
    path = tmp_path / "scatter.tflite"
    path.write_bytes(g.serialize([idx, upd, n], [out], {"dkp.probe": "scatter_nd"}))
    feeds = {"idx": np.array([[0], [2], [2], [2], [4]], np.int32), "upd": np.array([1, 2, 3, 4, 0], np.float32),
             "n": np.array([6], np.int32)}
    np.testing.assert_array_equal(rt.run(path, feeds)["out"], [1, 0, 9, 0, 0, 0])


@pytest.fixture(scope="module")
def tflite_files(tmp_path_factory):
    pytest.importorskip("tflite")
    d = tmp_path_factory.mktemp("tfl")
    out = {}
    for tie in (False, True):
        model = _doped_lm(tie)
        kw = {"dynamic_shapes": LM_DIMS, "input_names": LM_NAMES, "output_names": ["logits", "h_n", "c_n"]}
        hub = export(model, _lm_args(), d / f"lm{int(tie)}.hub.onnx", sparse_impl="hub", **kw)
        out[tie] = model, hub, export(model, _lm_args(), d / f"lm{int(tie)}.tflite", **kw)
    return out


@pytest.mark.parametrize("tie", [False, True])
def test_tflite_lm_matches_torch_float64(tflite_files, tie):
    from dkp_deploy import tflite as rt

    model, hub, path = tflite_files[tie]
    interp = rt.interpreter(path)
    for t, b in ((5, 3), (1, 1), (8, 2)):
        feeds = _lm_feeds(t, b, seed=t + b)
        out = rt.run(interp, feeds)
        for name, ref in zip(("logits", "h_n", "c_n"), _lm_torch64(model, feeds)):
            assert _rel(out[name], ref) <= 1e-5, (name, t, b)
    report = validate_export(path, hub=hub)
    assert report.passed, report.table()
    assert {"encoder", "decoder"} <= {r.name for r in report.rows if r.kind == "layer"}


def test_tflite_lookup_matches_numpy_and_holds_no_table(tmp_path, rows_model):
    tfl = pytest.importorskip("tflite")

    from dkp_deploy import tflite as rt

    path = export(rows_model, (torch.randint(0, V, (3, 4)),), tmp_path / "rows.tflite",
                  dynamic_shapes=({0: torch.export.Dim("a"), 1: torch.export.Dim("b")},))
    table = _table64(rows_model.emb)
    rng = np.random.default_rng(8)
    name = rt.interpreter(path).get_signature_runner().get_input_details()
    for shape in ((3, 4), (1, 1), (5, 7)):
        ids = rng.integers(0, V, shape)
        ids[0, 0] = 0
        (out,) = rt.run(path, {next(iter(name)): ids}).values()
        np.testing.assert_allclose(out, table[ids], rtol=0, atol=1e-6)
    sub = tfl.Model.GetRootAs(path.read_bytes(), 0).Subgraphs(0)
    dims = [tuple(sub.Tensors(i).ShapeAsNumpy()) for i in range(sub.TensorsLength())
            if sub.Tensors(i).ShapeLength() == 2]
    assert not [s for s in dims if s[0] == V], dims


@pytest.mark.skipif(not (__import__("pathlib").Path(__file__).parents[1] / ".venv-tflite-runtime/bin/python").exists(),
                    reason="no .venv-tflite-runtime (`make test` creates it)")
def test_tflite_lm_on_tflite_runtime_214(tmp_path, tflite_files):
    from test_tflite_runtime import CHECK_SCRIPT, RUNTIME_VENV_PYTHON

    for tie in (False, True):
        model, _, path = tflite_files[tie]
        feeds = _lm_feeds(7, 2, seed=tie)
        refs = _lm_torch64(model, feeds)
        target = tmp_path / f"lm{int(tie)}.tflite"
        target.write_bytes(path.read_bytes())
        np.savez(tmp_path / f"lm{int(tie)}.npz", **{f"in__{k}": v for k, v in feeds.items()},
                 **{f"out__{k}": r for k, r in zip(("logits", "h_n", "c_n"), refs)})
    proc = subprocess.run([str(RUNTIME_VENV_PYTHON), str(CHECK_SCRIPT), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "2/2 models" in proc.stdout, proc.stdout + proc.stderr


# -- malformed files ------------------------------------------------------------------------------------------------
def _edit_initializer(src, dst, suffix: str, fn) -> None:
    m = onnx.load(str(src))
    for t in m.graph.initializer:
        if t.name.startswith("encoder/") and t.name.endswith(suffix):
            t.CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(t)), t.name))
    onnx.save(m, str(dst))


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_a_hub_with_a_bad_csr_or_kron_shape_is_one_input_error(tmp_path, lm_files):
    from dkp_deploy.cli import convert_main

    hub = lm_files[False][1]["hub"]
    bad_col = tmp_path / "bad_col.hub.onnx"
    _edit_initializer(hub, bad_col, "W_s/col_idx", lambda a: np.where(np.arange(a.size) == 3, D + 5, a).astype(a.dtype))
    with pytest.raises(InputError) as err:
        convert(bad_col, tmp_path / "out.onnx")
    assert "col_idx" in _one_line(err) and "out of range" in str(err.value)
    bad_kron = tmp_path / "bad_kron.hub.onnx"
    _edit_initializer(hub, bad_kron, "/B", lambda a: np.ascontiguousarray(a[:-1]))
    with pytest.raises(InputError) as err:
        convert(bad_kron, tmp_path / "out.tflite")
    assert "factor shapes" in _one_line(err) and "encoder" in str(err.value)
    with pytest.raises(InputError):
        reference.run(onnx.load(str(bad_col)), _lm_feeds(2, 1, 0))
    assert not (tmp_path / "out.onnx").exists() and not (tmp_path / "out.tflite").exists()
    assert convert_main([str(bad_col), "-o", str(tmp_path / "cli.onnx"), "--quiet"]) == 2


def test_a_lowered_file_with_a_bad_csr_fails_validation_with_one_line(tmp_path, lm_files):
    from dkp_deploy.converters.onnx import load_exported

    model, paths = lm_files[False]
    bad = tmp_path / "bad.onnx"
    _edit_initializer(paths["portable"], bad, "W_s/row_ptr", lambda a: a[::-1].copy())
    with pytest.raises(InputError) as err:
        load_exported(bad)
    assert "encoder" in _one_line(err) and "row_ptr" in str(err.value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError):
            validate_export(bad, hub=paths["hub"])
