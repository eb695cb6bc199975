"""DopedLinear against float64 numpy: forward, dense_weight, set_density, CMR, compression factor."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402

from dkp_deploy.nn import DopedLinear  # noqa: E402

STRUCTURES = [
    ("kron", {"kron_shape": ((4, 3), (5, 2))}),
    ("kron", {}),
    ("lmf", {"rank": 3}),
    ("hmd", {"rank": 2, "hmd_rows": 7}),
    ("none", {}),
]


def _np(t):
    return t.detach().numpy().astype(np.float64)


def _numpy_weight(layer: DopedLinear) -> np.ndarray:
    """W built from the layer's parameters with numpy alone (independent of the layer's own code)."""
    ws = _np(layer.W_s) * layer.mask.numpy()
    if layer.structure == "kron":
        return np.kron(_np(layer.B), _np(layer.C)) + ws
    if layer.structure == "lmf":
        return _np(layer.U) @ _np(layer.V) + ws
    if layer.structure == "hmd":
        return np.vstack([_np(layer.W_top), _np(layer.U) @ _np(layer.V)]) + ws
    return ws


@pytest.mark.parametrize("structure,kw", STRUCTURES)
def test_forward_equals_numpy_dense(structure: str, kw: dict) -> None:
    torch.manual_seed(0)
    layer = DopedLinear(6, 20, structure=structure, density=0.3, cmr=0.5, **kw).double().eval()
    x = torch.randn(3, 2, 6, dtype=torch.float64)
    W = _numpy_weight(layer)
    expected = x.numpy() @ W.T + _np(layer.bias)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_np(layer.dense_weight()), W, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(_np(layer.sparse_weight()), _np(layer.W_s) * layer.mask.numpy())


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.booleans())
def test_kron_forward_any_shape(m1: int, n1: int, m2: int, n2: int, batch: int, bias: bool) -> None:
    torch.manual_seed(m1 * 64 + n1 * 16 + m2 * 4 + n2)
    layer = DopedLinear(n1 * n2, m1 * m2, bias, kron_shape=((m1, n1), (m2, n2)), density=0.5).double().eval()
    x = torch.randn(batch, n1 * n2, dtype=torch.float64)
    expected = x.numpy() @ _numpy_weight(layer).T + (_np(layer.bias) if bias else 0.0)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    assert layer.nnz == round(0.5 * m1 * m2 * n1 * n2)


def test_forward_and_backward_never_build_the_kron(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = DopedLinear(12, 20, kron_shape=((4, 3), (5, 4)), cmr=0.3)
    x = torch.randn(4, 12)

    def forbidden(*a, **k):
        raise AssertionError("torch.kron called in forward/backward")

    monkeypatch.setattr(torch, "kron", forbidden)
    layer(x).sum().backward()
    assert layer.B.grad is not None and layer.C.grad is not None and layer.W_s.grad is not None
    # gradients of the pruned W_s entries are zero: the mask is part of the graph
    layer.zero_grad()
    layer.set_density(0.25)
    layer(x).sum().backward()
    assert torch.all(layer.W_s.grad[~layer.mask] == 0)


class _TensorSizes(TorchDispatchMode):
    """Records the element count of every tensor any aten op produces (forward and autograd backward alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.sizes += [(str(func), t.numel()) for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        return out


@pytest.mark.parametrize(
    "structure,kw",
    [
        ("kron", {"kron_shape": ((8, 4), (5, 6))}),
        ("kron", {"kron_shape": ((2, 12), (20, 2))}),
        ("lmf", {"rank": 3}),
        ("hmd", {"rank": 3, "hmd_rows": 8}),
    ],
)
def test_structured_path_never_forms_an_m_by_n_tensor(structure: str, kw: dict) -> None:
    layer = DopedLinear(24, 40, structure=structure, **kw)
    x = torch.randn(3, 24, requires_grad=True)
    with _TensorSizes() as seen:
        layer.structured_forward(x).square().sum().backward()
    assert seen.sizes and x.grad is not None and all(p.grad is not None for p in layer.factors().values())
    too_big = [(op, n) for op, n in seen.sizes if n >= 40 * 24]
    assert not too_big, f"an M x N-sized tensor was built: {too_big}"


@pytest.mark.parametrize("density", [0.0, 0.013, 0.25, 0.5, 0.999, 1.0])
def test_set_density_exact_count_keeps_largest(density: float) -> None:
    torch.manual_seed(1)
    layer = DopedLinear(13, 17, structure="none")
    before = _np(layer.W_s)
    layer.set_density(density)
    k = round(density * 13 * 17)
    assert layer.nnz == k == int(layer.mask.sum())
    kept = np.abs(before[layer.mask.numpy()])
    dropped = np.abs(before[~layer.mask.numpy()])
    if kept.size and dropped.size:
        assert kept.min() >= dropped.max()
    np.testing.assert_array_equal(_np(layer.W_s)[layer.mask.numpy()], before[layer.mask.numpy()])
    assert np.count_nonzero(_np(layer.W_s)) == k  # random init has no exact zeros; pruned ones are zeroed


def test_set_density_prunes_from_masked_weights() -> None:
    torch.manual_seed(2)
    layer = DopedLinear(10, 10, structure="none")
    layer.set_density(0.3)
    first = layer.mask.clone()
    layer.set_density(0.1)
    assert layer.nnz == 10 and torch.all(first[layer.mask])  # the second mask lies inside the first


def test_compression_factor_is_eq3() -> None:
    layer = DopedLinear(20, 30, kron_shape=((5, 4), (6, 5)), density=0.1)
    assert layer.nnz == 60
    assert layer.compression_factor() == pytest.approx(600 / (20 + 30 + 60))
    lmf = DopedLinear(20, 30, structure="lmf", rank=2, density=0.0)
    assert lmf.compression_factor() == pytest.approx(600 / (30 * 2 + 2 * 20))
    assert DopedLinear(4, 4, structure="none", density=0.0).compression_factor() == float("inf")


def test_cmr_only_in_training_and_uses_both_masks() -> None:
    torch.manual_seed(3)
    layer = DopedLinear(8, 40, kron_shape=((8, 4), (5, 2)), density=0.5, cmr=0.5).double()
    x = torch.randn(64, 8, dtype=torch.float64)
    W_s = _np(layer.W_s) * layer.mask.numpy()
    y_k = x.numpy() @ np.kron(_np(layer.B), _np(layer.C)).T  # independent per-path outputs
    y_s = x.numpy() @ W_s.T
    b = _np(layer.bias)
    layer.eval()
    np.testing.assert_allclose(layer(x).detach().numpy(), y_k + y_s + b, rtol=1e-12, atol=1e-12)
    layer.train()
    y = layer(x).detach().numpy() - b
    p = layer.cmr_keep_prob
    assert p == 0.5
    cases = np.stack([np.zeros_like(y), y_k / p, y_s / p, (y_k + y_s) / p])  # eq. 16, 14, 15, 13
    hit = np.isclose(y[None], cases, rtol=1e-9, atol=1e-12)
    assert hit.any(axis=0).all(), "every output element is one of the four CMR cases"
    # each case occurs with probability 1/4: all four show up among 2560 draws, none dominates
    which = hit.argmax(axis=0)
    counts = np.bincount(which.ravel(), minlength=4) / which.size
    assert np.all(np.abs(counts - 0.25) < 0.06), counts
    # cmr = 0 in training is the plain sum; structure "none" has one path and ignores CMR
    layer.cmr = 0.0
    np.testing.assert_allclose(layer(x).detach().numpy(), y_k + y_s + b, rtol=1e-12, atol=1e-12)
    none = DopedLinear(8, 6, structure="none", cmr=0.9).double().train()
    np.testing.assert_allclose(none(x).detach().numpy(), x.numpy() @ _np(none.W_s).T + _np(none.bias), rtol=1e-12)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="structure"):
        DopedLinear(4, 4, structure="tucker")
    with pytest.raises(ValueError, match="rank"):
        DopedLinear(4, 4, structure="lmf")
    with pytest.raises(ValueError, match="factor"):
        DopedLinear(4, 6, kron_shape=((2, 2), (2, 2)))
    with pytest.raises(ValueError, match="CMR"):
        DopedLinear(4, 4, cmr=1.0)
    with pytest.raises(ValueError, match="density"):
        DopedLinear(4, 4).set_density(1.5)


def test_weight_property_is_the_dense_weight() -> None:
    torch.manual_seed(3)
    layer = DopedLinear(6, 4, kron_shape=((2, 3), (2, 2)), density=0.5)
    torch.testing.assert_close(layer.weight, layer.dense_weight())
    with pytest.raises(AttributeError):
        layer.weight = torch.zeros(4, 6)  # read-only
    assert "weight" not in dict(layer.named_parameters())


@pytest.mark.parametrize("train", [False, True])
def test_transformer_encoder_with_doped_ffn(train: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """nn.TransformerEncoderLayer's eval fast path reads linear1.weight / linear2.weight directly."""
    fast, calls = torch._transformer_encoder_layer_fwd, []
    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", lambda *a: calls.append(1) or fast(*a))
    torch.manual_seed(4)
    layer = torch.nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
    dense = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    doped = copy.deepcopy(dense)
    for enc in doped.layers:
        for name in ("linear1", "linear2"):
            lin = getattr(enc, name)
            new = DopedLinear(lin.in_features, lin.out_features, structure="none")
            with torch.no_grad():
                new.W_s.copy_(lin.weight)
                new.bias.copy_(lin.bias)
            setattr(enc, name, new)
    dense.train(train)
    doped.train(train)
    x = torch.randn(3, 7, 32)
    with torch.no_grad():  # in eval mode, no_grad is what lets torch take the fast path
        torch.testing.assert_close(doped(x), dense(x), rtol=0, atol=1e-5)
    assert bool(calls) == (not train)  # eval really took the fast path (both models: 2 layers each)
    doped(x).sum().backward()
    assert doped.layers[0].linear1.W_s.grad is not None


@pytest.mark.parametrize("density", [0.0, 0.07, 0.25, 1.0])
def test_block_pruning_keeps_whole_blocks_by_norm(density: float) -> None:
    """sparse_block=(1, 4): the mask is whole 1 x 4 blocks, the round(density * blocks) of largest L2 norm."""
    torch.manual_seed(0)
    layer = DopedLinear(32, 24, sparse_block=(1, 4))
    norms = layer.W_s.detach().reshape(24, 8, 4).norm(dim=-1)
    layer.set_density(density)
    blocks = layer.mask.reshape(24, 8, 4)
    assert bool((blocks.all(-1) | ~blocks.any(-1)).all())  # each block all kept or all pruned
    kept = blocks.all(-1)
    assert int(kept.sum()) == round(density * 24 * 8) and layer.nnz == 4 * int(kept.sum())
    if 0 < kept.sum() < kept.numel():
        assert float(norms[kept].min()) >= float(norms[~kept].max())
    assert bool((layer.W_s[~layer.mask] == 0).all())


def test_sparse_block_must_tile_the_matrix() -> None:
    with pytest.raises(ValueError, match="tile"):
        DopedLinear(30, 8, sparse_block=(1, 4))
    with pytest.raises(ValueError, match="rows, cols"):
        DopedLinear(32, 8, sparse_block=4)
    assert DopedLinear(32, 8, sparse_block=(1, 1)).sparse_block is None
