"""Small doped `ModelSpec`s built directly (no torch, no checkpoint) for the converter and validator tests."""

from __future__ import annotations

import numpy as np

from dkp_deploy.spec import CSR, LSTM, Activation, DopedMatrix, Embedding, Linear, LSTMLayer, ModelSpec


def sparse(rng: np.random.Generator, m: int, n: int, density: float) -> CSR:
    w = np.where(rng.random((m, n)) < density, rng.standard_normal((m, n)), 0).astype(np.float32)
    return CSR.from_dense(w)


def doped(rng: np.random.Generator, m: int, n: int, structure: str, *, kron=None, rank: int = 2, top: int = 2,
          density: float = 0.1, scale: float = 0.3) -> DopedMatrix:
    """A random m x n DopedMatrix; `kron` = ((M1, N1), (M2, N2)) for structure "kron"."""

    def f(*shape: int) -> np.ndarray:
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    factors = {
        "kron": lambda: {"B": f(*kron[0]), "C": f(*kron[1])},
        "lmf": lambda: {"U": f(m, rank), "V": f(rank, n)},
        "hmd": lambda: {"W_top": f(top, n), "U": f(m - top, rank), "V": f(rank, n)},
        "dense": lambda: {"W": f(m, n)},
        "none": dict,
    }[structure]()
    return DopedMatrix((m, n), structure, factors, None if structure == "dense" else sparse(rng, m, n, density))


def bias(rng: np.random.Generator, m: int) -> np.ndarray:
    return (0.1 * rng.standard_normal(m)).astype(np.float32)


def mlp(seed: int = 0) -> ModelSpec:
    """Every structure once: kron, lmf, hmd, none (no bias), dense; every activation."""
    rng = np.random.default_rng(seed)
    spec = ModelSpec("mlp", [
        Linear("fc1", doped(rng, 12, 6, "kron", kron=((4, 2), (3, 3))), bias(rng, 12)),
        Activation("act1", "relu"),
        Linear("fc2", doped(rng, 8, 12, "lmf"), bias(rng, 8)),
        Activation("act2", "gelu"),
        Linear("fc3", doped(rng, 8, 8, "hmd"), bias(rng, 8)),
        Activation("act3", "tanh"),
        Linear("fc4", doped(rng, 6, 8, "none", density=0.3), None),
        Activation("act4", "sigmoid"),
        Linear("fc5", doped(rng, 3, 6, "dense"), bias(rng, 3)),
        Activation("act5", "identity"),
    ])
    spec.check()
    return spec


def _layers(rng: np.random.Generator, input_size: int, hidden: int) -> list[LSTMLayer]:
    # layer 0: kron (4H = 16 = 4*4, I+H = 10 = 2*5), layer 1: lmf
    return [
        LSTMLayer(doped(rng, 4 * hidden, input_size + hidden, "kron", kron=((4, 2), (4, (input_size + hidden) // 2))),
                  bias(rng, 4 * hidden)),
        LSTMLayer(doped(rng, 4 * hidden, 2 * hidden, "hmd"), bias(rng, 4 * hidden)),
    ]


def lstm(batch_first: bool = False, seed: int = 1) -> ModelSpec:
    rng = np.random.default_rng(seed)
    spec = ModelSpec("lstm", [LSTM("lstm", 6, 4, _layers(rng, 6, 4), batch_first=batch_first)])
    spec.check()
    return spec


def lstm_lm(batch_first: bool = False, seed: int = 2, vocab: int = 11) -> ModelSpec:
    """Embedding (V x 4) -> 2-layer LSTM (H = 4) -> decoder tied to the embedding (the same array)."""
    rng = np.random.default_rng(seed)
    emb = (0.5 * rng.standard_normal((vocab, 4))).astype(np.float32)
    spec = ModelSpec("lstm_lm", [
        Embedding("embedding", emb),
        LSTM("lstm", 4, 4, _layers(rng, 4, 4), batch_first=batch_first),
        Linear("decoder", DopedMatrix((vocab, 4), "dense", {"W": emb}), bias(rng, vocab)),
    ])
    spec.check()
    return spec


def big_mlp(seed: int = 3) -> ModelSpec:
    """Large enough (about 0.5 MB of tensors) that graph overhead is small next to the weights."""
    rng = np.random.default_rng(seed)
    spec = ModelSpec("mlp", [
        Linear("fc1", doped(rng, 512, 256, "kron", kron=((32, 16), (16, 16)), density=0.05), bias(rng, 512)),
        Activation("act", "relu"),
        Linear("fc2", doped(rng, 128, 512, "lmf", rank=8, density=0.05), bias(rng, 128)),
    ])
    spec.check()
    return spec


def block_sparse(rng: np.random.Generator, m: int, n: int, density: float, width: int = 4) -> CSR:
    """An m x n W_s of whole aligned 1 x `width` blocks (what DopedLinear(sparse_block=(1, 4)) prunes to)."""
    blocks = rng.random((m, n // width)) < density
    blocks[0] = False  # an empty row
    mask = np.repeat(blocks, width, axis=1)
    return CSR.from_mask((0.3 * rng.standard_normal((m, n))).astype(np.float32), mask)


def block_lstm(seed: int = 4) -> ModelSpec:
    """A 2-layer LSTM (I = 12, H = 16) whose W_s are 1 x 4 block sparse: TFLite's fast sparse kernel."""
    rng = np.random.default_rng(seed)
    layers = []
    for k in range(2):
        n = (12 if k == 0 else 16) + 16
        w = DopedMatrix((64, n), "kron", {"B": (0.3 * rng.standard_normal((8, 4))).astype(np.float32),
                                          "C": (0.3 * rng.standard_normal((8, n // 4))).astype(np.float32)},
                        block_sparse(rng, 64, n, 0.2))
        layers.append(LSTMLayer(w, bias(rng, 64)))
    spec = ModelSpec("lstm", [LSTM("lstm", 12, 16, layers)])
    spec.check()
    return spec


def single(w: DopedMatrix, b: np.ndarray | None = None) -> ModelSpec:
    """An MLP of the one Linear block `fc` (W = w, bias b)."""
    spec = ModelSpec("mlp", [Linear("fc", w, b)])
    spec.check()
    return spec


def must_hold_bytes(spec: ModelSpec) -> int:
    """Bytes of factors, CSR arrays, biases and embeddings: what a doped file has to store (tied arrays once)."""
    arrays = []
    for b in spec.blocks:
        if isinstance(b, Embedding):
            arrays.append(b.weight)
        elif isinstance(b, Linear):
            arrays += [b.bias] if b.bias is not None else []
        elif isinstance(b, LSTM):
            arrays += [layer.bias for layer in b.layers]
    for w in spec.matrices().values():
        arrays += list(w.factors.values())
        if w.sparse is not None:
            arrays += [w.sparse.row_ptr, w.sparse.col_idx, w.sparse.values]
    return sum(a.nbytes for a in {(a.dtype.str, a.shape, a.tobytes()): a for a in arrays}.values())  # tied: once


def int8_rows(a: np.ndarray) -> np.ndarray:
    """`a` (2-D) through symmetric int8 with one scale per row, back in float64: the tests' own quantizer, written
    independently of dkp_deploy.quantize (zero rows stay zero)."""
    a = np.asarray(a, np.float64)
    scale = np.abs(a).max(axis=1, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale.astype(np.float32), np.float32(1)).astype(np.float64)
    return np.clip(np.rint(a / scale), -127, 127) * scale
