"""The float64 reference itself, checked against torch.nn.LSTM / plain numpy (independent implementations)."""

import numpy as np
import pytest

from dkp_deploy import reference
from dkp_deploy.spec import CSR, LSTM, Activation, DopedMatrix, Linear, LSTMLayer, ModelSpec

torch = pytest.importorskip("torch")


def _dense(w: np.ndarray) -> DopedMatrix:
    return DopedMatrix(tuple(w.shape), "dense", {"W": w.astype(np.float32)})


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("T", [1, 5])
def test_lstm_matches_torch(batch_first: bool, T: int) -> None:
    torch.manual_seed(0)
    I, H, L, B = 3, 4, 2, 2
    ref = torch.nn.LSTM(I, H, num_layers=L, batch_first=batch_first).double()
    layers = []
    for k in range(L):
        w = torch.cat([getattr(ref, f"weight_ih_l{k}"), getattr(ref, f"weight_hh_l{k}")], dim=1)
        b = getattr(ref, f"bias_ih_l{k}") + getattr(ref, f"bias_hh_l{k}")
        layers.append(LSTMLayer(_dense(w.detach().numpy()), b.detach().numpy().astype(np.float32)))
    # float32 weights in the spec: give torch the same rounded values
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.float().double())
    spec = ModelSpec("lstm", [LSTM("lstm", I, H, layers, batch_first=batch_first)])
    spec.check()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    h0, c0 = rng.standard_normal((2, L, B, H))
    out = reference.run(spec, {"x": x, "h0": h0, "c0": c0})
    y, (hn, cn) = ref(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    np.testing.assert_allclose(out["y"], y.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(out["hn"], hn.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(out["cn"], cn.detach().numpy(), atol=1e-6)
    step = reference.run(spec, {"x_t": x[:, 0] if batch_first else x[0], "h": h0, "c": c0}, mode="step")
    first = y[:, 0] if batch_first else y[0]
    np.testing.assert_allclose(step["y_t"], first.detach().numpy(), atol=1e-6)


def test_doped_matrix_dense_and_mlp() -> None:
    rng = np.random.default_rng(0)
    B, C = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((3, 2)).astype(np.float32)
    ws = np.where(rng.random((6, 6)) < 0.2, rng.standard_normal((6, 6)), 0).astype(np.float32)
    w = DopedMatrix((6, 6), "kron", {"B": B, "C": C}, CSR.from_dense(ws))
    w.check()
    expected = np.einsum("ij,kl->ikjl", B.astype(float), C.astype(float)).reshape(6, 6) + ws  # kron written out by hand
    np.testing.assert_allclose(w.dense(), expected, rtol=1e-12)
    bias = rng.standard_normal(6).astype(np.float32)
    spec = ModelSpec("mlp", [Linear("fc", w, bias), Activation("act", "relu")])
    x = rng.standard_normal((4, 6))
    np.testing.assert_allclose(reference.run(spec, {"x": x})["y"], np.maximum(x @ expected.T + bias, 0))
    assert w.compression_factor() == pytest.approx(36 / (6 + 6 + w.nnz))
