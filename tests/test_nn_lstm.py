"""DopedLSTM / DopedLSTMLM against torch.nn.LSTM given equal weights."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from dkp_deploy.nn import DopedLinear, DopedLSTM, DopedLSTMLM  # noqa: E402


def _pair(I: int, H: int, L: int, batch_first: bool):
    """A torch.nn.LSTM and a DopedLSTM (structure "none", dense mask) holding the same float64 weights."""
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H, L, batch_first=batch_first).double()
    doped = DopedLSTM(I, H, L, batch_first=batch_first, structure="none").double()
    with torch.no_grad():
        for k, cell in enumerate(doped.cells):
            cell.W_s.copy_(torch.cat([getattr(ref, f"weight_ih_l{k}"), getattr(ref, f"weight_hh_l{k}")], 1))
            cell.bias.copy_(getattr(ref, f"bias_ih_l{k}") + getattr(ref, f"bias_hh_l{k}"))
    return ref, doped


@pytest.mark.parametrize("T", [1, 5, 37])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_equals_torch_lstm(T: int, batch_first: bool, with_state: bool) -> None:
    I, H, L, B = 3, 4, 2, 2
    ref, doped = _pair(I, H, L, batch_first)
    g = torch.Generator().manual_seed(T)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), generator=g, dtype=torch.float64)
    state = tuple(torch.randn(L, B, H, generator=g, dtype=torch.float64) for _ in range(2)) if with_state else None
    y_ref, (h_ref, c_ref) = ref(x, state)
    y, (h, c) = doped(x, state)
    assert y.shape == y_ref.shape and h.shape == h_ref.shape == c.shape
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c, c_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "structure,kw",
    [("kron", {"kron_shape": [((4, 7), (4, 1)), ((8, 4), (2, 2))]}), ("lmf", {"rank": 2}), ("hmd", {"rank": 2})],
)
def test_structured_gates_equal_torch_lstm(structure: str, kw: dict) -> None:
    """Structured path + pruned W_s on [x_t, h_{t-1}]: nn.LSTM given W split into W_ih | W_hh equals it."""
    I, H, L = 3, 4, 2
    torch.manual_seed(1)
    doped = DopedLSTM(I, H, L, structure=structure, density=0.3, cmr=0.5, **kw).double().eval()
    ref = torch.nn.LSTM(I, H, L).double()
    with torch.no_grad():
        for k, cell in enumerate(doped.cells):
            W = cell.dense_weight()  # itself checked against numpy in test_nn_linear
            n_in = I if k == 0 else H
            getattr(ref, f"weight_ih_l{k}").copy_(W[:, :n_in])
            getattr(ref, f"weight_hh_l{k}").copy_(W[:, n_in:])
            getattr(ref, f"bias_ih_l{k}").copy_(cell.bias)
            getattr(ref, f"bias_hh_l{k}").zero_()
    x = torch.randn(6, 2, I, dtype=torch.float64)
    state = (torch.randn(L, 2, H, dtype=torch.float64), torch.randn(L, 2, H, dtype=torch.float64))
    for a, b in zip(torch.utils._pytree.tree_leaves(ref(x, state)), torch.utils._pytree.tree_leaves(doped(x, state))):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_unbatched_input_like_torch() -> None:
    ref, doped = _pair(3, 4, 2, False)
    x = torch.randn(6, 3, dtype=torch.float64)
    state = (torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64))
    for a, b in zip(ref(x, state)[0:1] + ref(x, state)[1], doped(x, state)[0:1] + doped(x, state)[1]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_layers_are_doped_4h_by_i_plus_h() -> None:
    lstm = DopedLSTM(10, 8, 3, kron_shape=[((8, 6), (4, 3)), ((8, 4), (4, 4)), ((4, 4), (8, 4))], density=0.1)
    assert [(c.out_features, c.in_features) for c in lstm.cells] == [(32, 18), (32, 16), (32, 16)]
    assert all(isinstance(c, DopedLinear) and c.structure == "kron" for c in lstm.cells)
    assert lstm.cells[0].kron_shape == ((8, 6), (4, 3))
    one = DopedLSTM(4, 4, 2, kron_shape=[[4, 4], [4, 2]])  # one shape as nested lists (JSON) applies to all layers
    assert [c.kron_shape for c in one.cells] == [((4, 4), (4, 2))] * 2
    y, (h, c) = lstm(torch.randn(4, 2, 10))
    assert y.shape == (4, 2, 8) and h.shape == c.shape == (3, 2, 8)
    with pytest.raises(ValueError, match="features"):
        lstm(torch.randn(4, 2, 9))


def test_dropout_between_layers_only_in_training() -> None:
    lstm = DopedLSTM(4, 6, 2, dropout=0.5, structure="none")
    x = torch.randn(5, 3, 4)
    lstm.eval()
    a, b = lstm(x)[0], lstm(x)[0]
    torch.testing.assert_close(a, b)
    lstm.train()
    torch.manual_seed(0)
    c = lstm(x)[0]
    torch.manual_seed(1)
    d = lstm(x)[0]
    assert not torch.allclose(c, d)


@pytest.mark.parametrize("batch_first", [False, True])
def test_lm_matches_manual_composition(batch_first: bool) -> None:
    torch.manual_seed(0)
    lm = DopedLSTMLM(30, 8, 8, 2, tie_weights=True, dropout=0.3, batch_first=batch_first, density=0.2, cmr=0.5)
    lm.eval()
    tokens = torch.randint(0, 30, (3, 7) if batch_first else (7, 3))
    logits, (h, c) = lm(tokens)
    assert logits.shape == (*tokens.shape, 30) and h.shape == (2, 3, 8)
    assert lm.decoder.weight is lm.embedding.weight
    # independent composition: embedding lookup by indexing, LSTM, x @ W^T + b
    emb = lm.embedding.weight[tokens]
    out, (h2, c2) = lm.lstm(emb)
    expected = out.detach().numpy() @ lm.embedding.weight.detach().numpy().T + lm.decoder.bias.detach().numpy()
    np.testing.assert_allclose(logits.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="tie_weights"):
        DopedLSTMLM(30, 8, 6, 1, tie_weights=True)


@pytest.mark.parametrize("T", [1, 5, 37])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_bidirectional_equals_torch_lstm(T: int, batch_first: bool, with_state: bool) -> None:
    I, H, L, B = 3, 4, 2, 2
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H, L, batch_first=batch_first, bidirectional=True).double()
    doped = DopedLSTM(I, H, L, bidirectional=True, batch_first=batch_first, structure="none").double()
    assert [(c.out_features, c.in_features) for c in doped.cells] == [(16, 7), (16, 7), (16, 12), (16, 12)]
    with torch.no_grad():
        for j, cell in enumerate(doped.cells):
            sfx = f"l{j // 2}" + ("_reverse" if j % 2 else "")
            cell.W_s.copy_(torch.cat([getattr(ref, f"weight_ih_{sfx}"), getattr(ref, f"weight_hh_{sfx}")], 1))
            cell.bias.copy_(getattr(ref, f"bias_ih_{sfx}") + getattr(ref, f"bias_hh_{sfx}"))
    g = torch.Generator().manual_seed(T)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), generator=g, dtype=torch.float64)
    state = tuple(torch.randn(2 * L, B, H, generator=g, dtype=torch.float64) for _ in range(2)) if with_state else None
    y_ref, (h_ref, c_ref) = ref(x, state)
    y, (h, c) = doped(x, state)
    assert y.shape == y_ref.shape == (*x.shape[:2], 2 * H) and h.shape == h_ref.shape == c.shape
    for a, b in ((y, y_ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # unbatched, and the same through from_cells
    again = DopedLSTM.from_cells(list(doped.cells), I, H, bidirectional=True)
    x1 = x[0] if batch_first else x[:, 0]
    s1 = None if state is None else (state[0][:, 0], state[1][:, 0])
    y_ref, (h_ref, c_ref) = ref(x1, s1)
    y, (h, c) = again(x1, s1)
    for a, b in ((y, y_ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
