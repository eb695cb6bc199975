"""DopedGRU / DopedRNN against torch.nn.GRU / nn.RNN given equal weights (float64)."""

import pytest

torch = pytest.importorskip("torch")
from dkp_deploy.compression import compress  # noqa: E402
from dkp_deploy.nn import DopedGRU, DopedLinear, DopedRNN  # noqa: E402

nn = torch.nn
TOL = {"rtol": 1e-10, "atol": 1e-10}


def _ref(kind: str, I: int, H: int, L: int, **kw):
    torch.manual_seed(0)
    if kind == "gru":
        return nn.GRU(I, H, L, **kw).double()
    return nn.RNN(I, H, L, nonlinearity=kind, **kw).double()


def _manual(ref, kind: str, **kw):
    """A Doped* built by hand: structure "kron" with zero factors, W_s = torch's weights at density 1."""
    cls = DopedGRU if kind == "gru" else DopedRNN
    extra = {} if kind == "gru" else {"nonlinearity": kind}
    doped = cls(ref.input_size, ref.hidden_size, ref.num_layers, dtype=torch.float64, **extra, **kw)
    D = 2 if ref.bidirectional else 1
    with torch.no_grad():
        for j, (ih, hh) in enumerate(zip(doped.cells_ih, doped.cells_hh)):
            sfx = f"l{j // D}" + ("_reverse" if j % D else "")
            for cell, part in ((ih, "ih"), (hh, "hh")):
                cell.B.zero_()
                cell.C.zero_()
                cell.W_s.copy_(getattr(ref, f"weight_{part}_{sfx}"))
                cell.bias.copy_(getattr(ref, f"bias_{part}_{sfx}"))
    return doped


@pytest.mark.parametrize("kind", ["gru", "tanh", "relu"])
@pytest.mark.parametrize("T", [1, 5, 37])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_equals_torch(kind: str, T: int, batch_first: bool, bidirectional: bool, with_state: bool) -> None:
    I, H, L, B = 3, 4, 2, 2
    D = 2 if bidirectional else 1
    ref = _ref(kind, I, H, L, batch_first=batch_first, bidirectional=bidirectional)
    g = torch.Generator().manual_seed(T)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), generator=g, dtype=torch.float64)
    h0 = torch.randn(L * D, B, H, generator=g, dtype=torch.float64) if with_state else None
    y_ref, h_ref = ref(x, h0)
    for doped in (_manual(ref, kind, batch_first=batch_first, bidirectional=bidirectional), compress(ref, density=1.0)):
        assert isinstance(doped, DopedGRU if kind == "gru" else DopedRNN)
        y, h = doped(x, h0)
        assert y.shape == y_ref.shape == (*x.shape[:2], D * H) and h.shape == h_ref.shape
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(h, h_ref, **TOL)


@pytest.mark.parametrize("kind", ["gru", "tanh"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_unbatched_input_like_torch(kind: str, bidirectional: bool) -> None:
    ref = _ref(kind, 3, 4, 2, bidirectional=bidirectional)
    doped = compress(ref, density=1.0)
    x = torch.randn(6, 3, dtype=torch.float64)
    h0 = torch.randn(2 * (2 if bidirectional else 1), 4, dtype=torch.float64)
    for state in (None, h0):
        (y_ref, h_ref), (y, h) = ref(x, state), doped(x, state)
        assert y.shape == y_ref.shape and h.shape == h_ref.shape
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(h, h_ref, **TOL)


def test_layout_and_from_cells() -> None:
    gru = DopedGRU(5, 4, 2, bidirectional=True, structure="none")
    assert len(gru.cells_ih) == len(gru.cells_hh) == 4
    assert [(c.out_features, c.in_features) for c in gru.cells_ih] == [(12, 5), (12, 5), (12, 8), (12, 8)]
    assert all((c.out_features, c.in_features) == (12, 4) for c in gru.cells_hh)
    assert DopedGRU(5, 4, bias=False).cells_hh[0].bias is None and DopedGRU(5, 4, bias=False).cells_ih[0].bias is None
    rnn = DopedRNN(5, 4, nonlinearity="relu", density=0.5)
    assert rnn.cells_ih[0].density == 0.5 and rnn.nonlinearity == "relu"
    again = DopedGRU.from_cells(list(gru.cells_ih), list(gru.cells_hh), 5, 4, bidirectional=True, batch_first=True)
    assert again.num_layers == 2 and again.bidirectional and again.batch_first
    x = torch.randn(2, 3, 5)
    torch.testing.assert_close(again(x)[0], gru(x.transpose(0, 1))[0].transpose(0, 1))
    with pytest.raises(ValueError, match="cell 1"):
        DopedGRU.from_cells(list(gru.cells_ih), list(gru.cells_hh), 5, 4)
    with pytest.raises(ValueError, match="nonlinearity"):
        DopedRNN(3, 3, nonlinearity="gelu")
    assert all(isinstance(m, DopedLinear) for m in rnn.cells_ih)


def test_dropout_between_layers_only_in_training() -> None:
    torch.manual_seed(1)
    gru = DopedGRU(3, 4, 2, dropout=0.5)
    x = torch.randn(5, 2, 3)
    gru.eval()
    assert torch.equal(gru(x)[0], gru(x)[0])
    gru.train()
    assert not torch.equal(gru(x)[0], gru(x)[0])
    one = DopedGRU(3, 4, 1, dropout=0.5).train()  # the last layer's output is never dropped
    assert torch.equal(one(x)[0], one(x)[0])


def test_to_spec_refuses_what_the_spec_cannot_hold() -> None:
    from dkp_deploy.errors import InputError
    from dkp_deploy.nn import DopedLSTM, to_spec

    for module in (DopedGRU(3, 4), DopedRNN(3, 4), DopedLSTM(3, 4, bidirectional=True)):
        with pytest.raises(InputError):
            to_spec(module)


def test_trains_with_cmr() -> None:
    torch.manual_seed(2)
    gru = DopedGRU(3, 4, 2, bidirectional=True, cmr=0.5, density=0.3).train()
    gru(torch.randn(5, 2, 3))[0].sum().backward()
    assert all(c.W_s.grad is not None and c.B.grad is not None for c in [*gru.cells_ih, *gru.cells_hh])
