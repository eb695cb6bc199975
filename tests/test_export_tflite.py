"""`dkp_deploy.export(..., "model.tflite")`: user-style torch models through the hub to TFLite builtin ops, checked
against torch in float64 at the export shape and other dynamic shapes, on ai-edge-litert here and on
tflite-runtime 2.14 (its own venv) from saved files."""

from __future__ import annotations

import copy
import subprocess
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
pytest.importorskip("tflite")
from test_export import (  # noqa: E402
    MLP,
    AttentionDecoder,
    ConvClassifier,
    ConvLSTM,
    Encoder,
    Tagger,
    WordLM,
    _no_fastpath,
    _rel_err,
)
from test_tflite_runtime import CHECK_SCRIPT, RUNTIME_VENV_PYTHON  # noqa: E402

import dkp_deploy  # noqa: E402
from dkp_deploy import tflite as rt  # noqa: E402
from dkp_deploy.errors import InputError  # noqa: E402
from dkp_deploy.export import export  # noqa: E402

B, T, S = torch.export.Dim("batch"), torch.export.Dim("time"), torch.export.Dim("source")


def _tokens(*shape):
    return lambda rng, v=60: rng.integers(0, v, shape)


def _floats(*shape):
    return lambda rng: rng.standard_normal(shape).astype(np.float32)


def _mlp():
    return (dkp_deploy.compress(MLP(), cf=2), (torch.randn(2, 48),), ({0: B},), ["x"],
            [[_floats(b, 48)] for b in (2, 1, 5)])


def _encoder():
    return (dkp_deploy.compress(Encoder(), cf=2), (torch.randn(2, 7, 32),), ({0: B, 1: T},), ["x"],
            [[_floats(b, t, 32)] for b, t in ((2, 7), (1, 3), (3, 12))])


def _tagger():
    return (dkp_deploy.compress(Tagger(), cf=2), (torch.randn(2, 6, 16),), ({0: B, 1: T},), ["x"],
            [[_floats(b, t, 16)] for b, t in ((2, 6), (1, 1), (3, 13))])


def _kws():
    return (dkp_deploy.compress(ConvLSTM(), cf=4, include=["lstm"]), (torch.randn(2, 10, 9),), ({0: B, 2: T},),
            ["x"], [[_floats(b, 10, t)] for b, t in ((2, 9), (1, 3), (4, 21))])


def _lm_sequence(rnn: str = "LSTM", doped: bool = True):
    def make():
        lstm = rnn == "LSTM"
        hidden = (torch.zeros(2, 3, 24), torch.zeros(2, 3, 24)) if lstm else torch.zeros(2, 3, 24)
        names = ["tokens", "h", "c"] if lstm else ["tokens", "h"]
        feeds = [[_tokens(t, b), *[_floats(2, b, 24)] * (2 if lstm else 1)] for t, b in ((5, 3), (1, 1), (12, 2))]
        model = WordLM(rnn)
        model = dkp_deploy.compress(model, cf=2) if doped else model
        return (model, (torch.randint(0, 60, (5, 3)), hidden),
                ({0: T, 1: B}, ({1: B}, {1: B}) if lstm else {1: B}), names, feeds)
    return make


def _conv():
    return (dkp_deploy.compress(ConvClassifier(), cf=2, include=["head.*"]), (torch.randn(2, 8, 20),),
            ({0: B, 2: T},), ["x"], [[_floats(b, 8, t)] for b, t in ((2, 20), (1, 5), (3, 31))])


def _lm(rnn: str, tie: bool):
    def make():
        lstm = rnn == "LSTM"
        hidden = (torch.zeros(2, 3, 24), torch.zeros(2, 3, 24)) if lstm else torch.zeros(2, 3, 24)
        dims = ({1: B}, ({1: B}, {1: B}) if lstm else {1: B})
        names = ["tokens", "h", "c"] if lstm else ["tokens", "h"]
        feeds = [[_tokens(1, b), *[_floats(2, b, 24)] * (2 if lstm else 1)] for b in (3, 1, 6)]
        return dkp_deploy.compress(WordLM(rnn, tie), cf=2), (torch.randint(0, 60, (1, 3)), hidden), dims, names, feeds
    return make


def _attention():
    args = (torch.randint(0, 50, (3,)), torch.zeros(1, 3, 32), torch.randn(7, 3, 32))
    feeds = [[lambda rng, b=b: rng.integers(0, 50, (b,)), _floats(1, b, 32), _floats(s, b, 32)]
             for b, s in ((3, 7), (1, 2), (4, 11))]
    return dkp_deploy.compress(AttentionDecoder(), cf=2), args, ({0: B}, {1: B}, {0: S, 1: B}), [
        "token", "hidden", "enc"], feeds


MODELS = {
    "mlp_layernorm_gelu": _mlp,
    "conv1d_classifier": _conv,
    "transformer_encoder_doped_ffn": _encoder,
    "lstm_lm_sequence": _lm_sequence(),
    "gru_lm_sequence": _lm_sequence("GRU"),
    "rnn_lm_sequence": _lm_sequence("RNN"),
    "plain_lstm_lm_sequence": _lm_sequence("LSTM", doped=False),
    "bidirectional_tagger": _tagger,
    "conv1d_lstm_keyword_spotter": _kws,
    "lstm_lm_step": _lm("LSTM", False),
    "gru_lm_tied_step": _lm("GRU", True),
    "gru_attention_decoder_step": _attention,
}


def _export(name: str, directory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # compress names the matrices it leaves dense
        torch.manual_seed(0)
        model, args, dims, names, feeds = MODELS[name]()
    model.eval()
    mode = "step" if name.endswith("_step") else "sequence"
    count = len(_torch64(model, [a.numpy() for a in _flat(args)]))
    path = export(model, args, directory / f"{name}.tflite", dynamic_shapes=dims, mode=mode, input_names=names,
                  output_names=[f"out{i}" for i in range(count)])
    return model, path, names, feeds


def _flat(args) -> list:
    return [t for a in args for t in (a if isinstance(a, tuple) else (a,))]


def _torch64(model, feeds: list[np.ndarray]) -> list[np.ndarray]:
    m64 = copy.deepcopy(model).double().eval()
    xs = [torch.from_numpy(f) if f.dtype.kind == "i" else torch.from_numpy(f).double() for f in feeds]
    if isinstance(m64, WordLM):
        xs = [xs[0], tuple(xs[1:]) if len(xs) == 3 else xs[1]]
    with torch.no_grad(), _no_fastpath():
        out = m64(*xs)
    flat = []
    for o in out if isinstance(out, tuple) else (out,):
        flat += [t.numpy() for t in (o if isinstance(o, tuple) else (o,))]
    return flat


@pytest.mark.parametrize("name", list(MODELS))
def test_exported_tflite_matches_torch(tmp_path, name):
    model, path, names, feeds = _export(name, tmp_path)
    rng = np.random.default_rng(0)
    interp = rt.interpreter(path)
    for makers in feeds:  # the export shape and two others
        xs = [make(rng) for make in makers]
        out = rt.run(interp, dict(zip(names, xs)))
        refs = _torch64(model, xs)
        assert sorted(out) == [f"out{i}" for i in range(len(refs))]
        for i, ref in enumerate(refs):
            assert _rel_err(out[f"out{i}"], ref) <= 1e-4, (name, i, ref.shape)


@pytest.mark.parametrize("name", ["mlp_layernorm_gelu", "bidirectional_tagger"])
def test_layers_rebuild_from_the_file_and_no_dense_matrix(tmp_path, name):
    """Every doped matrix rebuilds from the file's own tensors (WHILE bodies included); none is stored M x N."""
    from dkp_deploy.converters.tflite import load_exported
    from dkp_deploy.nn import DopedLinear

    model, path, _, _ = _export(name, tmp_path)
    exported = load_exported(path)
    doped = {n: x for n, x in model.named_modules() if isinstance(x, DopedLinear)}
    assert len(exported.matrices) == len(doped)
    by_shape = {}
    for w in exported.matrices.values():
        by_shape.setdefault(w.shape, []).append(w)
    for layer in doped.values():  # recurrent cells are named by their place in the recurrence: match by value
        want = layer.dense_weight().detach().double().numpy()
        assert min(_rel_err(w, want) for w in by_shape[want.shape]) <= 1e-6
    import tflite

    m = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    sizes = {m.Buffers(i).DataLength() for i in range(m.BuffersLength())}
    for layer in (x for x in model.modules() if isinstance(x, DopedLinear)):  # no M x N tensor of a doped W
        assert 4 * layer.out_features * layer.in_features not in sizes


def test_an_op_without_a_rule_fails_with_one_line(tmp_path, monkeypatch):
    from dkp_deploy.converters.tflite import rules

    monkeypatch.delitem(rules.RULES, ("", "LayerNormalization"))
    torch.manual_seed(0)
    model = dkp_deploy.compress(MLP(), cf=2).eval()
    with pytest.raises(InputError, match=r"no translation for ONNX op LayerNormalization \(node '.+'\)$"):
        export(model, (torch.randn(2, 48),), tmp_path / "m.tflite", dynamic_shapes=({0: B},))
    assert not (tmp_path / "m.tflite").exists()


def test_dkp_convert_writes_tflite_from_a_hub(tmp_path, capsys):
    from dkp_deploy.cli import convert_main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = dkp_deploy.compress(MLP(), cf=2).eval()
    hub = export(model, (torch.randn(2, 48),), tmp_path / "m.hub.onnx", dynamic_shapes=({0: B},), sparse_impl="hub")
    assert convert_main([str(hub), "-o", str(tmp_path / "m.tflite"), "--quiet"]) == 0
    x = np.random.default_rng(1).standard_normal((3, 48)).astype(np.float32)
    (out,) = rt.run(tmp_path / "m.tflite", {"x": x}).values()
    assert _rel_err(out, _torch64(model, [x])[0]) <= 1e-4


@pytest.mark.skipif(not RUNTIME_VENV_PYTHON.exists(), reason="no .venv-tflite-runtime (`make test` creates it)")
def test_exported_tflite_on_tflite_runtime_214(tmp_path):
    rng = np.random.default_rng(3)
    for name in MODELS:
        model, path, names, feeds = _export(name, tmp_path)
        xs = [make(rng) for make in feeds[1]]  # a shape other than the export one
        out = rt.run(path, dict(zip(names, xs)))
        refs = _torch64(model, xs)
        assert sorted(out) == [f"out{i}" for i in range(len(refs))]
        np.savez(tmp_path / f"{name}.npz", **{f"in__{k}": v for k, v in zip(names, xs)},
                 **{f"out__out{i}": r for i, r in enumerate(refs)})
    proc = subprocess.run([str(RUNTIME_VENV_PYTHON), str(CHECK_SCRIPT), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and f"{len(MODELS)}/{len(MODELS)} models" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["bidirectional_tagger", "gru_lm_tied_step"])
def test_dkp_validate_checks_a_tflite_export_against_its_hub(tmp_path, capsys, name):
    """Torch-free: the hub in float64 (onnx.reference) at two sets of dynamic sizes, and every doped matrix."""
    import json

    from dkp_deploy.cli import validate_main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model, args, dims, names, _ = MODELS[name]()
    mode = "step" if name.endswith("_step") else "sequence"
    kw = {"dynamic_shapes": dims, "mode": mode, "input_names": names}
    hub = export(model.eval(), args, tmp_path / "m.hub.onnx", sparse_impl="hub", **kw)
    path = export(model, args, tmp_path / "m.tflite", **kw)
    capsys.readouterr()
    assert validate_main([str(hub), str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    kinds = [r["kind"] for r in report["rows"]]
    assert report["passed"] and report["format"] == "tflite" and kinds.count("e2e") >= 2 and "layer" in kinds
    with pytest.raises(InputError, match="validates against its hub"):
        from dkp_deploy.validate import validate_export

        validate_export(path, model=model, args=args)
