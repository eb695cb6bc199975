"""Post-training doping: exactness at density 1, CF targets, the nearest Kronecker product, recursion."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import dkp_deploy  # noqa: E402
from dkp_deploy.compression import compress, nearest_kronecker  # noqa: E402
from dkp_deploy.errors import InputError  # noqa: E402
from dkp_deploy.nn import DopedGRU, DopedLinear, DopedLSTM, DopedLSTMLM, DopedRNN, to_spec  # noqa: E402

nn = torch.nn


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("structure,kw", [("kron", {}), ("lmf", {"rank": 3}), ("hmd", {"rank": 2}), ("none", {})])
def test_lstm_at_density_one_reproduces_outputs(structure: str, kw: dict, batch_first: bool) -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 8, 2, batch_first=batch_first)
    x, h0, c0 = torch.randn((3, 9, 6) if batch_first else (9, 3, 6)), torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    doped = compress(lstm, density=1.0, structure=structure, **kw)
    assert isinstance(doped, DopedLSTM) and isinstance(lstm, nn.LSTM)  # input left untouched
    with torch.no_grad():
        y, (h, c) = lstm(x, (h0, c0))
        y2, (h2, c2) = doped(x, (h0, c0))
    for a, b in ((y, y2), (h, h2), (c, c2)):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


@pytest.mark.parametrize("cf", [4.0, 10.0])
def test_cf_target_is_met(cf: float) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.LSTM(40, 10, 1))
    doped = compress(model[2], cf=cf)
    got = to_spec(doped).summary()["compression_factor"]
    assert abs(got - cf) / cf < 0.1
    lin = compress(model[0], cf=cf)
    assert abs(lin.compression_factor() - cf) / cf < 0.1


def test_nearest_kronecker_recovers_and_is_optimal() -> None:
    rng = np.random.default_rng(0)
    B, C = rng.standard_normal((3, 4)), rng.standard_normal((5, 2))
    W = np.kron(B, C)
    b, c = nearest_kronecker(torch.from_numpy(W), ((3, 4), (5, 2)))
    np.testing.assert_allclose(np.kron(b.numpy(), c.numpy()), W, atol=1e-12)
    noisy = W + 0.3 * rng.standard_normal(W.shape)
    b, c = nearest_kronecker(torch.from_numpy(noisy), ((3, 4), (5, 2)))
    err = np.linalg.norm(noisy - np.kron(b.numpy(), c.numpy()))
    assert err <= np.linalg.norm(noisy - W)  # no worse than the true factors
    for _ in range(20):  # nor than random perturbations of the answer
        pb = b.numpy() + 0.01 * rng.standard_normal(b.shape)
        pc = c.numpy() + 0.01 * rng.standard_normal(c.shape)
        assert err <= np.linalg.norm(noisy - np.kron(pb, pc)) + 1e-12


def test_nearest_kronecker_error_is_the_rearranged_spectrum_tail() -> None:
    """Van Loan-Pitsianis: ||W - kron(B, C)||_F^2 = ||W||_F^2 - sigma_1(R)^2, R built here entry by entry."""
    rng = np.random.default_rng(5)
    (m1, n1), (m2, n2) = (3, 2), (4, 5)
    W = rng.standard_normal((m1 * m2, n1 * n2))
    R = np.empty((m1 * n1, m2 * n2))
    for i1, j1, i2, j2 in np.ndindex(m1, n1, m2, n2):  # R[(i1, j1), (i2, j2)] = W[i1*m2 + i2, j1*n2 + j2]
        R[i1 * n1 + j1, i2 * n2 + j2] = W[i1 * m2 + i2, j1 * n2 + j2]
    sigma1 = np.linalg.svd(R, compute_uv=False)[0]
    b, c = nearest_kronecker(torch.from_numpy(W), ((m1, n1), (m2, n2)))
    err2 = np.linalg.norm(W - np.kron(b.numpy(), c.numpy())) ** 2
    assert err2 == pytest.approx(np.linalg.norm(W) ** 2 - sigma1**2, rel=1e-10)


def test_sparse_part_is_largest_residual_entries() -> None:
    torch.manual_seed(2)
    lin = nn.Linear(12, 10)
    d = compress(lin, density=0.2, kron_shape=((5, 4), (2, 3)))
    B, C = nearest_kronecker(lin.weight.double(), ((5, 4), (2, 3)))
    residual = lin.weight.detach().double().numpy() - np.kron(B.numpy(), C.numpy())
    mask = d.mask.numpy()
    assert d.nnz == 24
    assert np.abs(residual[mask]).min() >= np.abs(residual[~mask]).max()
    np.testing.assert_allclose(d.W_s.detach().numpy()[mask], residual[mask], rtol=1e-5, atol=1e-6)


def test_recursive_compress_and_exclude() -> None:
    torch.manual_seed(3)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.rnn = nn.LSTM(6, 6)
            self.head = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 10))

    net = Net()
    out = compress(net, density=0.5, exclude=["head.2"])
    assert isinstance(out.rnn, DopedLSTM) and isinstance(out.head[0], DopedLinear)
    assert type(out.head[2]) is nn.Linear and type(out.emb) is nn.Embedding
    assert isinstance(net.rnn, nn.LSTM)  # the original is not modified
    lm = DopedLSTMLM(10, 4, 4, 1)
    assert type(compress(lm, density=0.1).decoder) is nn.Linear  # the LM's decoder stays dense


def test_multihead_attention_is_left_dense() -> None:
    torch.manual_seed(4)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0)
    with pytest.warns(UserWarning, match="MultiheadAttention"):
        doped = compress(layer, density=1.0).eval()
    assert isinstance(doped.linear1, DopedLinear) and type(doped.self_attn.out_proj) is not DopedLinear
    x = torch.randn(5, 2, 8)
    with torch.no_grad():
        torch.testing.assert_close(doped(x), layer.eval()(x), rtol=0, atol=1e-5)


def test_package_level_name_is_callable() -> None:
    out = dkp_deploy.compress(nn.Linear(8, 8), density=0.5)
    assert isinstance(out, DopedLinear)


def test_bad_requests() -> None:
    with pytest.raises(InputError, match="exactly one"):
        compress(nn.Linear(4, 4))
    with pytest.raises(InputError, match="exactly one"):
        compress(nn.Linear(4, 4), cf=2, density=0.1)
    with pytest.raises(InputError, match="cannot reach CF"):
        compress(nn.Linear(8, 8), cf=100, strict=True)
    with pytest.raises(InputError, match="rank"):
        compress(nn.Linear(8, 8), density=0.1, structure="lmf")
    with pytest.raises(InputError, match="factor"):
        compress(nn.Linear(8, 8), density=0.1, kron_shape=((3, 3), (3, 3)), strict=True)
    with pytest.raises(InputError, match="proj_size"):
        compress(nn.LSTM(4, 4, proj_size=2), density=0.1, strict=True)


class _WordLM(nn.Module):
    """pytorch/examples word_language_model's RNNModel: Embedding, Dropout, LSTM / GRU, Linear decoder."""

    def __init__(self, rnn: str = "LSTM", tie: bool = False) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(50, 32)
        self.rnn = getattr(nn, rnn)(32, 32, 2, dropout=0.2)
        self.decoder = nn.Linear(32, 50)
        if tie:
            self.decoder.weight = self.encoder.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.drop(self.encoder(x)))
        return self.decoder(self.drop(out))


class _Scorer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.score = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.encoder(x))


class _ConvLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(8, 16, 3, padding=1)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, C, T]
        out, _ = self.lstm(torch.relu(self.conv(x)).transpose(1, 2))
        return self.head(out[:, -1])


class _Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, 16)
        self.lstm = nn.LSTM(16, 32, 2, batch_first=True, bidirectional=True, dropout=0.1)
        self.out = nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.lstm(self.emb(x))[0])


def _models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(5)
    tokens = torch.randint(0, 40, (7, 3))
    mlp = nn.Sequential(nn.Linear(20, 40), nn.LayerNorm(40), nn.ReLU(), nn.Dropout(0.1), nn.Linear(40, 10))
    return {
        "lm_lstm": (_WordLM("LSTM"), tokens),
        "lm_gru_tied": (_WordLM("GRU", tie=True), tokens),
        "transformer": (_Scorer(), torch.randn(3, 6, 32)),
        "conv_lstm": (_ConvLSTM(), torch.randn(2, 8, 11)),
        "tagger": (_Tagger(), tokens.t()),
        "mlp": (mlp, torch.randn(4, 20)),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_any_model_compresses_and_runs(name: str) -> None:
    model, x = _models()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 1 x 32 scorer, tied decoder, attention: reported
        small, report = compress(model, cf=10, return_report=True)
        exact = compress(model, density=1.0)
    assert report.rows and any(r.status == "doped" for r in report.rows)
    assert not any(isinstance(m, (nn.LSTM, nn.GRU)) for m in small.modules())
    for m in (small, exact):
        m.train()
        m(x).sum().backward()  # forward and backward run in training mode
    model.eval(), small.eval(), exact.eval()
    with torch.no_grad():
        small(x)
        torch.testing.assert_close(exact(x), model(x), rtol=0, atol=1e-5)


def test_report_rows_and_warnings() -> None:
    model, _ = _models()["transformer"]
    with pytest.warns(UserWarning) as caught:
        out, report = compress(model, cf=10, return_report=True)
    rows = {r.name: r for r in report.rows}
    assert rows["score"].status == "skipped" and "cannot reach CF" in rows["score"].reason
    assert type(out.score) is nn.Linear
    assert rows["encoder.layers.0.self_attn"].status == "skipped" and "MultiheadAttention" in str(report)
    assert len(caught) == len(report.skipped) == 3
    ffn = rows["encoder.layers.1.linear2"]
    assert ffn.status == "doped" and ffn.kind == "Linear" and ffn.shapes == [(32, 64)] and abs(ffn.cf - 10) < 1
    assert isinstance(out.encoder.layers[1].linear2, DopedLinear)
    d = report.to_dict()
    assert {r["name"] for r in d["rows"]} == set(rows) and d["rows"][0]["status"] in ("doped", "skipped")
    with pytest.raises(InputError, match="score"):
        compress(model, cf=10, strict=True, exclude=["encoder"])


def test_include_exclude_patterns() -> None:
    model, _ = _models()["transformer"]
    out, report = compress(
        model, density=0.5, include=["encoder.*"], exclude=["*.self_attn", "*.1.linear1"], return_report=True
    )
    layers = out.encoder.layers
    assert isinstance(layers[0].linear1, DopedLinear) and isinstance(layers[1].linear2, DopedLinear)
    assert type(layers[1].linear1) is nn.Linear and type(out.score) is nn.Linear
    assert {r.name for r in report.rows if r.reason == "excluded"} == {
        "score",
        "encoder.layers.0.self_attn",
        "encoder.layers.1.self_attn",
        "encoder.layers.1.linear1",
    }


def test_tied_weights_and_recurrent_kinds() -> None:
    model, _ = _models()["lm_gru_tied"]
    with pytest.warns(UserWarning, match="tied to encoder"):
        out, report = compress(model, cf=4, return_report=True)
    assert type(out.decoder) is nn.Linear and out.decoder.weight is out.encoder.weight
    assert isinstance(out.rnn, DopedGRU) and len(out.rnn.cells_ih) == 2
    row = next(r for r in report.rows if r.name == "rnn")
    assert row.kind == "GRU" and row.shapes == [(96, 32)] * 4 and row.nnz > 0
    rnn = compress(nn.RNN(6, 8, 2, nonlinearity="relu", bidirectional=True), density=0.5)
    assert isinstance(rnn, DopedRNN) and rnn.nonlinearity == "relu" and len(rnn.cells_hh) == 4
    lstm = compress(nn.LSTM(6, 8, bidirectional=True, batch_first=True), density=0.5)
    assert isinstance(lstm, DopedLSTM) and lstm.bidirectional and lstm.batch_first and len(lstm.cells) == 2
    with pytest.warns(UserWarning, match="proj_size"):
        proj = compress(nn.LSTM(6, 8, proj_size=4), density=0.5)
    assert type(proj) is nn.LSTM


def test_sparse_block_dopes_in_whole_blocks_and_skips_what_it_cannot_tile() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 48),
                                torch.nn.Linear(48, 30), torch.nn.Linear(30, 8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doped, report = compress(model, cf=4, sparse_block=(1, 4), return_report=True)
    first, second = doped[0], doped[2]
    assert first.sparse_block == second.sparse_block == (1, 4)
    for layer in (first, second):
        blocks = layer.mask.reshape(layer.out_features, -1, 4)
        assert bool((blocks.all(-1) | ~blocks.any(-1)).all()) and layer.nnz % 4 == 0
    assert isinstance(doped[4], torch.nn.Linear)  # 30 columns: 1 x 4 blocks do not tile it
    row = next(r for r in report.rows if r.name == "4")
    assert row.status != "doped" and "sparse_block" in row.reason and caught
