"""`dkp_deploy.export`: user-style torch models with doped layers -> hub -> lowered ONNX, checked against torch
in float64 (an independent reference) at the export shape and at other dynamic shapes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
from torch import nn  # noqa: E402

import dkp_deploy  # noqa: E402
from dkp_deploy import runtime  # noqa: E402
from dkp_deploy.errors import InputError  # noqa: E402
from dkp_deploy.export import export  # noqa: E402
from dkp_deploy.hub import reference  # noqa: E402
from dkp_deploy.nn import DopedLinear  # noqa: E402

IMPLS = ("custom", "portable", "dense")


def _torch64(model: nn.Module, *xs: np.ndarray) -> np.ndarray:
    """The model's output in float64 (on a copy), the reference every file is held to."""
    import copy

    m = copy.deepcopy(model).double().eval()
    with torch.no_grad(), _no_fastpath():
        out = m(*(torch.from_numpy(x) if x.dtype.kind != "f" else torch.from_numpy(x.astype(np.float64))
                  for x in xs))
    return out.numpy()


class _no_fastpath:
    def __enter__(self):
        self.old = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)

    def __exit__(self, *exc):
        torch.backends.mha.set_fastpath_enabled(self.old)


def _rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))


def _check(path, model, shapes, make_input, tol=1e-4):
    sess = runtime.session(path)
    name = sess.get_inputs()[0].name
    for shape in shapes:
        x = make_input(shape)
        out = runtime.run(sess, {name: x})[sess.get_outputs()[0].name]
        assert _rel_err(out, _torch64(model, x)) <= tol, shape


def _no_dense_matrix_tensor(path, model) -> None:
    """No initializer of a doped matrix's M x N size: the file holds factors and CSR only."""
    from dkp_deploy.converters.onnx.graph import all_graphs

    doped = {f"{name}." for name, mod in model.named_modules() if isinstance(mod, DopedLinear)}
    dense = {name for name, _ in model.named_parameters() if not any(name.startswith(d) for d in doped)}
    shapes = {t.name: tuple(t.dims) for g in all_graphs(onnx.load(str(path)).graph) for t in g.initializer}
    for layer in (m for m in model.modules() if isinstance(m, DopedLinear)):
        m, n = layer.out_features, layer.in_features
        big = [name for name, dims in shapes.items() if sorted(dims) == sorted((m, n)) and name not in dense]
        assert not big, big


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(48, 96), nn.LayerNorm(96), nn.GELU(), nn.Dropout(0.2), nn.Linear(96, 24))

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def doped_mlp():
    torch.manual_seed(0)
    return dkp_deploy.compress(MLP(), cf=4).eval()


@pytest.mark.parametrize("impl", IMPLS)
def test_mlp_with_layernorm_and_dropout(tmp_path, doped_mlp, impl):
    path = export(doped_mlp, (torch.randn(3, 48),), tmp_path / "mlp.onnx",
                  dynamic_shapes=({0: torch.export.Dim("batch")},), sparse_impl=impl)
    rng = np.random.default_rng(0)
    _check(path, doped_mlp, [(3, 48), (1, 48), (9, 48)], lambda s: rng.standard_normal(s).astype(np.float32))
    if impl != "dense":
        _no_dense_matrix_tensor(path, doped_mlp)


def test_hub_reference_matches_torch(tmp_path, doped_mlp):
    path = export(doped_mlp, (torch.randn(3, 48),), tmp_path / "mlp.hub.onnx",
                  dynamic_shapes=({0: torch.export.Dim("batch")},), sparse_impl="hub")
    hub = onnx.load(str(path))
    assert [n.op_type for n in hub.graph.node].count("DopedMatMul") == 2
    x = np.random.default_rng(1).standard_normal((5, 48))
    out = reference.run(hub, {hub.graph.input[0].name: x})[hub.graph.output[0].name]
    assert _rel_err(out, _torch64(doped_mlp, x)) <= 1e-6  # LayerNormalization keeps float32 statistics


class Encoder(nn.Module):
    """A transformer encoder with a scalar score head (a 1 x d Linear that compress leaves dense)."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=128, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.score = nn.Linear(32, 1)

    def forward(self, x):
        return self.score(self.encoder(x))


def test_transformer_encoder_with_doped_ffn(tmp_path):
    torch.manual_seed(0)
    model = dkp_deploy.compress(Encoder(), cf=4, include=["encoder.layers.*.linear*"]).eval()
    doped = [n for n, m in model.named_modules() if isinstance(m, DopedLinear)]
    assert len(doped) == 4, doped
    dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("time")},)
    path = export(model, (torch.randn(2, 7, 32),), tmp_path / "enc.onnx", dynamic_shapes=dims)
    rng = np.random.default_rng(0)
    _check(path, model, [(2, 7, 32), (1, 3, 32), (4, 11, 32)], lambda s: rng.standard_normal(s).astype(np.float32))
    _no_dense_matrix_tensor(path, model)


class ConvClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(8, 16, 3, padding=1)
        self.head = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):  # x [batch, 8, T]
        return self.head(torch.relu(self.conv(x)).mean(dim=2))


def test_conv1d_classifier(tmp_path):
    torch.manual_seed(0)
    model = dkp_deploy.compress(ConvClassifier(), cf=2, include=["head.*"]).eval()
    dims = ({0: torch.export.Dim("batch"), 2: torch.export.Dim("time")},)
    path = export(model, (torch.randn(2, 8, 20),), tmp_path / "kws.onnx", dynamic_shapes=dims, sparse_impl="portable")
    rng = np.random.default_rng(0)
    _check(path, model, [(2, 8, 20), (1, 8, 5), (3, 8, 31)], lambda s: rng.standard_normal(s).astype(np.float32))


class WordLM(nn.Module):
    """pytorch/examples' word_language_model RNNModel: Embedding -> Dropout -> RNN -> Dropout -> Linear."""

    def __init__(self, rnn: str = "LSTM", tie: bool = False, vocab: int = 60, hidden: int = 24) -> None:
        super().__init__()
        self.encoder, self.drop = nn.Embedding(vocab, hidden), nn.Dropout(0.2)
        self.rnn = getattr(nn, rnn)(hidden, hidden, 2, dropout=0.2)
        self.decoder = nn.Linear(hidden, vocab)
        if tie:
            self.decoder.weight = self.encoder.weight

    def forward(self, tokens, hidden):
        out, hidden = self.rnn(self.drop(self.encoder(tokens)), hidden)
        return self.decoder(self.drop(out)), hidden


def _run_lm(path, model, lstm: bool, shapes) -> None:
    import copy

    sess = runtime.session(path)
    names = [i.name for i in sess.get_inputs()]
    rng = np.random.default_rng(0)
    m64 = copy.deepcopy(model).double().eval()
    for t, b in shapes:
        tokens = rng.integers(0, 60, (t, b))
        states = [rng.standard_normal((2, b, 24)).astype(np.float32) for _ in range(2 if lstm else 1)]
        out = sess.run(None, dict(zip(names, [tokens, *states])))
        with torch.no_grad():
            st = [torch.from_numpy(s).double() for s in states]
            logits, hidden = m64(torch.from_numpy(tokens), tuple(st) if lstm else st[0])
        assert _rel_err(out[0], logits.numpy()) <= 1e-4, (t, b)
        h = hidden[0] if lstm else hidden
        assert _rel_err(out[1], h.numpy()) <= 1e-4, (t, b)


@pytest.mark.parametrize("rnn,tie,doped", [("LSTM", False, True), ("GRU", True, True), ("LSTM", False, False),
                                           ("GRU", False, False), ("RNN", False, True)])
def test_word_language_model(tmp_path, rnn, tie, doped):
    """Right at the export T and at other T and batch, doped or plain (torch.onnx's own nn.LSTM is not)."""
    torch.manual_seed(0)
    model = WordLM(rnn, tie).eval()
    if doped:
        model = dkp_deploy.compress(model, cf=2).eval()
    lstm = rnn == "LSTM"
    T, B = torch.export.Dim("time"), torch.export.Dim("batch")
    hidden = (torch.zeros(2, 3, 24), torch.zeros(2, 3, 24)) if lstm else torch.zeros(2, 3, 24)
    dims = ({0: T, 1: B}, ({1: B}, {1: B}) if lstm else {1: B})
    path = export(model, (torch.randint(0, 60, (5, 3)), hidden), tmp_path / "lm.onnx", dynamic_shapes=dims)
    _run_lm(path, model, lstm, [(5, 3), (1, 1), (12, 2)])
    if doped:
        _no_dense_matrix_tensor(path, model)


def _bytes_to_hold(model: nn.Module) -> int:
    """What a file of `model` must hold: dense parameters (a tied one once), and per doped layer its factors, bias
    and W_s in CSR (int32 indices, float32 values)."""
    from dkp_deploy.nn import DopedLinear

    total, seen = 0, set()
    for module in model.modules():
        if isinstance(module, DopedLinear):
            m = module.out_features
            total += 4 * module.structured_params + 8 * module.nnz + 4 * (m + 1) + (4 * m if module.bias is not None
                                                                                   else 0)
            seen.update(id(p) for p in module.parameters())
            continue
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                total += 4 * p.numel()
    return total


@pytest.mark.parametrize("rnn,tie", [("LSTM", False), ("GRU", True)])
def test_file_size_is_what_the_model_must_hold(tmp_path, rnn, tie):
    """No M x N tensor of a doped matrix, and the whole file within 1.2x of the tensors it must hold."""
    torch.manual_seed(0)
    model = dkp_deploy.compress(WordLM(rnn, tie, vocab=800, hidden=96), cf=8).eval()
    lstm = rnn == "LSTM"
    hidden = (torch.zeros(2, 1, 96), torch.zeros(2, 1, 96)) if lstm else torch.zeros(2, 1, 96)
    path = export(model, (torch.randint(0, 800, (4, 1)), hidden), tmp_path / "lm.onnx")
    _no_dense_matrix_tensor(path, model)
    need, size = _bytes_to_hold(model), path.stat().st_size
    assert size <= 1.2 * need, (size, need)


class AttentionDecoder(nn.Module):
    """One step of a GRU decoder with additive (Bahdanau) attention over encoder outputs [S, batch, H]."""

    def __init__(self, vocab: int = 50, hidden: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.query, self.key = nn.Linear(hidden, hidden, bias=False), nn.Linear(hidden, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)  # the score vector: too small to dope, left dense
        self.gru = nn.GRU(2 * hidden, hidden)
        self.out = nn.Linear(2 * hidden, vocab)

    def forward(self, token, hidden, enc):  # token [B], hidden [1, B, H], enc [S, B, H]
        e = self.score(torch.tanh(self.key(enc) + self.query(hidden[-1]))).squeeze(-1)
        context = (torch.softmax(e, dim=0).unsqueeze(-1) * enc).sum(0)
        y, h = self.gru(torch.cat([self.embed(token), context], -1).unsqueeze(0), hidden)
        return torch.log_softmax(self.out(torch.cat([y[0], context], -1)), -1), h


@pytest.mark.parametrize("mode", ["step", "sequence"])
def test_gru_decoder_step_with_additive_attention(tmp_path, mode):
    import copy
    import warnings

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # compress names the score vector it leaves dense
        model = dkp_deploy.compress(AttentionDecoder(), cf=2).eval()
    assert isinstance(model.gru, dkp_deploy.nn.DopedGRU) and isinstance(model.key, DopedLinear)
    B, S = torch.export.Dim("batch"), torch.export.Dim("source")
    args = (torch.randint(0, 50, (3,)), torch.zeros(1, 3, 32), torch.randn(7, 3, 32))
    path = export(model, args, tmp_path / "dec.onnx", dynamic_shapes=({0: B}, {1: B}, {0: S, 1: B}), mode=mode)
    sess = runtime.session(path)
    names = [i.name for i in sess.get_inputs()]
    m64 = copy.deepcopy(model).double().eval()
    rng = np.random.default_rng(0)
    for b, s in [(3, 7), (1, 2), (4, 11)]:
        feeds = [rng.integers(0, 50, (b,)), rng.standard_normal((1, b, 32)).astype(np.float32),
                 rng.standard_normal((s, b, 32)).astype(np.float32)]
        out = sess.run(None, dict(zip(names, feeds)))
        with torch.no_grad():
            want = m64(*(torch.from_numpy(f) if f.dtype.kind == "i" else torch.from_numpy(f).double() for f in feeds))
        for got, ref in zip(out, want):
            assert _rel_err(got, ref.numpy()) <= 1e-4, (b, s)


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(16, 20, 2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(40, 7)

    def forward(self, x):
        return self.out(self.lstm(x)[0])


@pytest.mark.parametrize("impl", ["custom", "portable"])
def test_bidirectional_tagger(tmp_path, impl):
    torch.manual_seed(0)
    model = dkp_deploy.compress(Tagger(), cf=2).eval()
    dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("time")},)
    path = export(model, (torch.randn(2, 6, 16),), tmp_path / "tag.onnx", dynamic_shapes=dims, sparse_impl=impl)
    rng = np.random.default_rng(0)
    _check(path, model, [(2, 6, 16), (1, 1, 16), (3, 13, 16)], lambda s: rng.standard_normal(s).astype(np.float32))


def test_hub_reference_runs_reverse_scans(tmp_path):
    """onnx.reference has no reverse-direction Scan: the hub reference flips the sequence (bidirectional LSTM)."""
    torch.manual_seed(0)
    model = dkp_deploy.compress(Tagger(), cf=2).eval()
    dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("time")},)
    path = export(model, (torch.randn(2, 6, 16),), tmp_path / "tag.hub.onnx", dynamic_shapes=dims, sparse_impl="hub")
    hub = onnx.load(str(path))
    x = np.random.default_rng(2).standard_normal((3, 9, 16))
    out = reference.run(hub, {hub.graph.input[0].name: x})[hub.graph.output[0].name]
    assert out.dtype == np.float64 and _rel_err(out, _torch64(model, x)) <= 1e-9


class ConvLSTM(nn.Module):
    """A keyword spotter: conv1d features -> LSTM -> last step -> classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(10, 16, 5, padding=2)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.head = nn.Linear(32, 12)

    def forward(self, x):  # [batch, 10, T]
        y, _ = self.lstm(torch.relu(self.conv(x)).transpose(1, 2))
        return self.head(y[:, -1])


def test_conv1d_lstm_keyword_spotter(tmp_path):
    torch.manual_seed(0)
    model = dkp_deploy.compress(ConvLSTM(), cf=4, include=["lstm"]).eval()
    dims = ({0: torch.export.Dim("batch"), 2: torch.export.Dim("time")},)
    path = export(model, (torch.randn(2, 10, 9),), tmp_path / "kws.onnx", dynamic_shapes=dims)
    rng = np.random.default_rng(0)
    _check(path, model, [(2, 10, 9), (1, 10, 3), (4, 10, 21)], lambda s: rng.standard_normal(s).astype(np.float32))


def test_dkp_deploy_export_stays_callable_after_its_submodules_are_imported(tmp_path, doped_mlp):
    import dkp_deploy.export.hub  # noqa: F401  (binds the package as the attribute dkp_deploy.export)

    path = dkp_deploy.export(doped_mlp, (torch.randn(2, 48),), tmp_path / "m.onnx")
    assert path.is_file() and dkp_deploy.export.program is not None


def test_unknown_target_is_refused(tmp_path, doped_mlp):
    with pytest.raises(InputError, match="unknown target"):
        export(doped_mlp, (torch.randn(1, 48),), tmp_path / "x.bin")


def test_metadata_rebuilds_each_matrix(tmp_path, doped_mlp):
    """The dkp.layers metadata names the file's tensors of each matrix; W rebuilt from them is the layer's W."""
    from dkp_deploy.converters.onnx import load_exported

    path = export(doped_mlp, (torch.randn(1, 48),), tmp_path / "m.onnx")
    exported = load_exported(path)
    for name, layer in doped_mlp.named_modules():
        if isinstance(layer, DopedLinear):
            want = layer.dense_weight().detach().double().numpy()
            assert _rel_err(exported.matrices[name], want) <= 1e-6


def test_dkp_convert_lowers_a_hub_without_torch(tmp_path, doped_mlp):
    """The deploy side is torch-free: a hub file lowers with dkp-convert in a process where torch cannot load."""
    import subprocess
    import sys

    hub = export(doped_mlp, (torch.randn(2, 48),), tmp_path / "m.hub.onnx",
                 dynamic_shapes=({0: torch.export.Dim("batch")},), sparse_impl="hub")
    out = tmp_path / "m.onnx"
    code = ("import sys; sys.modules['torch'] = None\n"
            "from dkp_deploy.cli import convert_main\n"
            f"sys.exit(convert_main([{str(hub)!r}, '-o', {str(out)!r}, '--sparse-impl', 'custom', '--quiet']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rng = np.random.default_rng(3)
    _check(out, doped_mlp, [(4, 48)], lambda s: rng.standard_normal(s).astype(np.float32))


def test_dkp_convert_reads_a_saved_program(tmp_path, doped_mlp):
    from dkp_deploy.cli import convert_main
    from dkp_deploy.export import program

    ep = program(doped_mlp, (torch.randn(2, 48),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, tmp_path / "m.pt2")
    out = tmp_path / "m.onnx"
    assert convert_main([str(tmp_path / "m.pt2"), "-o", str(out), "--sparse-impl", "portable", "--quiet"]) == 0
    rng = np.random.default_rng(4)
    _check(out, doped_mlp, [(2, 48), (5, 48)], lambda s: rng.standard_normal(s).astype(np.float32))


def test_a_lowered_file_is_not_taken_for_a_hub(tmp_path, doped_mlp, capsys):
    from dkp_deploy.cli import convert_main

    lowered = export(doped_mlp, (torch.randn(2, 48),), tmp_path / "m.onnx")
    assert convert_main([str(lowered), "-o", str(tmp_path / "again.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a dkp hub" in err and "\n" not in err
    assert not (tmp_path / "again.onnx").exists()


def test_custom_op_files_name_their_library(tmp_path, doped_mlp):
    custom = onnx.load(str(export(doped_mlp, (torch.randn(1, 48),), tmp_path / "c.onnx")))
    portable = onnx.load(str(export(doped_mlp, (torch.randn(1, 48),), tmp_path / "p.onnx", sparse_impl="portable")))
    assert "dkp_deploy.ops.library_path()" in custom.doc_string
    assert not any(o.domain == "ai.dkp" for o in portable.opset_import) and not portable.doc_string


def test_assert_parity_against_torch_and_hub(tmp_path):
    """The validator's general path: the lowered file vs the torch model and vs the hub, both in float64."""
    from dkp_deploy.validate import assert_parity, validate_export

    torch.manual_seed(0)
    model = dkp_deploy.compress(WordLM("LSTM"), cf=2).eval()
    args = (torch.randint(0, 60, (5, 3)), (torch.zeros(2, 3, 24), torch.zeros(2, 3, 24)))
    T, B = torch.export.Dim("time"), torch.export.Dim("batch")
    dims = ({0: T, 1: B}, ({1: B}, {1: B}))
    hub = export(model, args, tmp_path / "lm.hub.onnx", dynamic_shapes=dims, sparse_impl="hub")
    lowered = export(model, args, tmp_path / "lm.onnx", dynamic_shapes=dims)
    report = assert_parity(model, lowered, args=args)
    assert sum(r.kind == "e2e" for r in report.rows) == 6  # 3 outputs x 2 sets of sizes
    report = assert_parity(hub, lowered)
    assert sum(r.kind == "layer" for r in report.rows) == 3 and report.passed  # 2 LSTM layers + the decoder
    # a file whose weights differ fails, against either reference
    bad = onnx.load(str(lowered))
    t = next(t for t in bad.graph.initializer if "decoder" in t.name and "bias" in t.name)
    t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t) + 0.5, t.name))
    onnx.save(bad, str(tmp_path / "bad.onnx"))
    assert not validate_export(tmp_path / "bad.onnx", hub=hub).passed
    assert not validate_export(tmp_path / "bad.onnx", model=model, args=args).passed


def test_dkp_validate_checks_a_file_against_its_hub(tmp_path, doped_mlp, capsys):
    import json

    from dkp_deploy.cli import validate_main

    dims = ({0: torch.export.Dim("batch")},)
    hub = export(doped_mlp, (torch.randn(2, 48),), tmp_path / "m.hub.onnx", dynamic_shapes=dims, sparse_impl="hub")
    lowered = export(doped_mlp, (torch.randn(2, 48),), tmp_path / "m.onnx", dynamic_shapes=dims,
                     sparse_impl="portable")
    capsys.readouterr()
    assert validate_main([str(hub), str(lowered), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and {r["kind"] for r in report["rows"]} == {"layer", "e2e"}


@pytest.mark.parametrize("rnn", ["LSTM", "GRU"])
def test_step_mode_is_one_step_without_scan(tmp_path, rnn):
    torch.manual_seed(0)
    model = dkp_deploy.compress(WordLM(rnn), cf=2).eval()
    lstm = rnn == "LSTM"
    B = torch.export.Dim("batch")
    hidden = (torch.zeros(2, 3, 24), torch.zeros(2, 3, 24)) if lstm else torch.zeros(2, 3, 24)
    dims = ({1: B}, ({1: B}, {1: B}) if lstm else {1: B})
    path = export(model, (torch.randint(0, 60, (1, 3)), hidden), tmp_path / "step.onnx", dynamic_shapes=dims,
                  mode="step")
    assert "Scan" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    _run_lm(path, model, lstm, [(1, 3), (1, 1), (1, 5)])


def test_exported_files_pass_the_onnx_checker(tmp_path):
    torch.manual_seed(0)
    model = dkp_deploy.compress(WordLM("LSTM"), cf=2).eval()
    args = (torch.randint(0, 60, (5, 3)), (torch.zeros(2, 3, 24), torch.zeros(2, 3, 24)))
    T, B = torch.export.Dim("time"), torch.export.Dim("batch")
    for impl in ("portable", "custom", "hub"):
        path = export(model, args, tmp_path / f"{impl}.onnx", dynamic_shapes=({0: T, 1: B}, ({1: B}, {1: B})),
                      sparse_impl=impl)
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        assert proto.ir_version <= 9  # what onnxruntime 1.16 (the oldest the ops library loads into) reads
