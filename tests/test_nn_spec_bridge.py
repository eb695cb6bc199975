"""to_spec / from_spec: exact round trips, agreement with the float64 reference, clear errors."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from dkp_deploy import reference, signature  # noqa: E402
from dkp_deploy.errors import InputError  # noqa: E402
from dkp_deploy.nn import DopedLinear, DopedLSTM, DopedLSTMLM, DopedMLP, from_spec, to_spec  # noqa: E402

nn = torch.nn


def _models():
    torch.manual_seed(0)
    return {
        "kron": DopedLinear(6, 8, kron_shape=((2, 3), (4, 2)), density=0.2, cmr=0.4),
        "lmf": DopedLinear(6, 8, structure="lmf", rank=2, density=0.1),
        "hmd": DopedLinear(6, 8, False, structure="hmd", rank=2, hmd_rows=3, density=0.1),
        "none": DopedLinear(6, 8, structure="none", density=0.3),
        "empty_ws": DopedLinear(6, 8, density=0.0),
        "linear": nn.Linear(6, 8),
        "mlp": DopedMLP([6, 12, 8], "gelu", final_activation="sigmoid", density=0.25),
        "sequential": nn.Sequential(DopedLinear(6, 12, density=0.2), nn.Tanh(), nn.Linear(12, 8), nn.Identity()),
        "lstm": DopedLSTM(6, 4, 2, density=0.2, cmr=0.7, dropout=0.1),
        "lstm_bf_lmf": DopedLSTM(6, 4, 1, batch_first=True, structure="lmf", rank=3, density=0.1),
        "torch_lstm": nn.LSTM(6, 4, 2),
        "lm": DopedLSTMLM(20, 6, 6, 2, tie_weights=True, dropout=0.2, density=0.2),
        "lm_bf": DopedLSTMLM(20, 5, 6, 1, batch_first=True, structure="hmd", rank=2, density=0.1),
    }


MODELS = list(_models())


def _torch_outputs(model, spec, feeds):
    args = [torch.from_numpy(feeds["x"])]
    if spec.is_recurrent:
        args.append((torch.from_numpy(feeds["h0"]), torch.from_numpy(feeds["c0"])))
    with torch.no_grad():
        out = model(*args)
    if not spec.is_recurrent:
        return {"y": out.numpy()}
    y, (h, c) = out
    return {"y": y.numpy(), "hn": h.numpy(), "cn": c.numpy()}


@pytest.mark.parametrize("name", MODELS)
def test_round_trip_is_exact_and_matches_reference(name: str) -> None:
    model = _models()[name].eval()
    spec = to_spec(model)
    spec.check()
    json.dumps(spec.config)  # JSON-able
    rebuilt = from_spec(spec)
    assert type(rebuilt) is type(model) and not rebuilt.training
    feeds = signature.random_feeds(spec, batch=3, time=4, seed=1)
    ours, again = _torch_outputs(model, spec, feeds), _torch_outputs(rebuilt, spec, feeds)
    for key in ours:
        if name == "torch_lstm":  # rebuilt with b_ih = b_ih + b_hh, b_hh = 0: equal up to float32 rounding
            np.testing.assert_allclose(again[key], ours[key], rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(again[key], ours[key])  # bit-exact
    ref = reference.run(spec, feeds)
    for key in ours:
        np.testing.assert_allclose(ours[key], ref[key], rtol=1e-4, atol=1e-5)
    # the spec holds the same weights as the module: second trip gives identical arrays
    spec2 = to_spec(rebuilt)
    for (n1, w1), (n2, w2) in zip(spec.matrices().items(), spec2.matrices().items()):
        assert n1 == n2 and w1.structure == w2.structure
        np.testing.assert_array_equal(w1.dense(), w2.dense())
        assert w1.nnz == w2.nnz
    assert spec2.config == spec.config


def test_matrix_fields() -> None:
    torch.manual_seed(0)
    layer = DopedLinear(6, 8, kron_shape=((2, 3), (4, 2)), density=0.25)
    with torch.no_grad():
        layer.W_s[layer.mask] = torch.where(torch.rand(layer.nnz) < 0.3, 0.0, layer.W_s[layer.mask])
    w = to_spec(layer).blocks[0].weight
    assert w.structure == "kron" and w.kron_shape == ((2, 3), (4, 2))
    assert w.factors["B"].dtype == np.float32 and w.sparse.values.dtype == np.float32
    assert w.sparse.row_ptr.dtype == np.int32 and w.sparse.col_idx.dtype == np.int32
    assert w.nnz == layer.nnz == 12  # explicitly kept zeros stay CSR entries
    np.testing.assert_array_equal(w.sparse.to_dense(np.float32), (layer.W_s * layer.mask).detach().numpy())
    np.testing.assert_array_equal(w.factors["B"], layer.B.detach().numpy())
    assert w.compression_factor() == pytest.approx(layer.compression_factor())
    assert to_spec(DopedLinear(6, 8, density=0.0)).blocks[0].weight.sparse is None


def test_lstm_bias_is_folded_and_lm_blocks() -> None:
    lstm = nn.LSTM(3, 2)
    spec = to_spec(lstm)
    np.testing.assert_allclose(spec.blocks[0].layers[0].bias, (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy())
    lm_spec = to_spec(DopedLSTMLM(11, 4, 4, 1))
    assert lm_spec.arch == "lstm_lm"
    assert [type(b).__name__ for b in lm_spec.blocks] == ["Embedding", "LSTM", "Linear"]
    assert lm_spec.blocks[2].weight.structure == "dense"


@pytest.mark.parametrize(
    "module,match",
    [
        (nn.Conv1d(2, 2, 1), "Conv1d"),
        (nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)), "Dropout"),
        (nn.Sequential(nn.ReLU()), "no linear"),
        (nn.Sequential(nn.Linear(2, 2), nn.GELU(approximate="tanh")), "GELU"),
        (nn.LSTM(2, 2, bidirectional=True), "unidirectional"),
        (nn.Sequential(nn.Linear(2, 3), nn.Linear(2, 2)), "receives"),
    ],
)
def test_unsupported_modules_raise_input_error(module, match: str) -> None:
    with pytest.raises(InputError, match=match):
        to_spec(module)


def test_from_spec_rejects_untied_decoder() -> None:
    spec = to_spec(DopedLSTMLM(11, 4, 4, 1, tie_weights=True))
    spec.blocks[2].weight.factors["W"] = spec.blocks[2].weight.factors["W"] + 1.0
    with pytest.raises(InputError, match="tie_weights"):
        from_spec(spec)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["kron", "lmf", "hmd", "none"]),
    st.integers(1, 6),
    st.integers(1, 6),
    st.floats(0.0, 1.0),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_doped_linear_round_trip_any_shape(structure: str, M: int, N: int, density: float, bias: bool, seed: int):
    torch.manual_seed(seed)
    kw = {"rank": 1 + seed % 3} if structure in ("lmf", "hmd") else {}
    layer = DopedLinear(N, M, bias, structure=structure, density=density, **kw).eval()
    spec = to_spec(layer)
    w = spec.blocks[0].weight
    assert w.nnz == layer.nnz == round(density * M * N)
    np.testing.assert_allclose(w.dense(), layer.dense_weight().detach().double().numpy(), rtol=1e-6, atol=1e-6)
    x = torch.randn(2, N)
    np.testing.assert_array_equal(from_spec(spec)(x).detach().numpy(), layer(x).detach().numpy())
