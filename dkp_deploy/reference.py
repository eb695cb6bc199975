"""The float64 numpy reference: what a spec computes, from the dense W of each matrix.

Independent of the torch modules and of every converter: it reads only the spec, builds each W densely
(`DopedMatrix.dense`) and runs the plain textbook forward pass. The validator and the parity tests compare
exported models against it. Inputs and outputs follow `dkp_deploy.signature`.

`matrix_input` (optional, a function of an array): what each doped matrix with a W_s is applied to in place of its
input x, both halves: y = matrix_input(x) @ W^T (+ b); int8-dynamic files pass x through
`dkp_deploy.quantize.dynamic_roundtrip` there. Undoped ("dense") matrices and matrices without W_s read x as is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import erf

from .signature import MODES
from .spec import LSTM, Activation, DopedMatrix, Embedding, Linear, ModelSpec

MatrixInput = Callable[[np.ndarray], np.ndarray]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def activation(kind: str, x: np.ndarray) -> np.ndarray:
    if kind == "relu":
        return np.maximum(x, 0.0)
    if kind == "tanh":
        return np.tanh(x)
    if kind == "sigmoid":
        return _sigmoid(x)
    if kind == "gelu":  # exact (erf) GELU, as torch.nn.GELU() defaults to
        return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
    if kind == "identity":
        return x
    raise ValueError(f"unknown activation {kind!r}")


def matmul(w: DopedMatrix, matrix_input: MatrixInput | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """x -> x @ W^T in float64 (on `matrix_input(x)` when given, see the module docstring)."""
    wd = w.dense()
    if matrix_input is None or w.structure == "dense" or w.sparse is None or w.sparse.nnz == 0:
        return lambda x: x @ wd.T
    return lambda x: np.asarray(matrix_input(x), np.float64) @ wd.T


def linear(block: Linear, x: np.ndarray, matrix_input: MatrixInput | None = None) -> np.ndarray:
    y = matmul(block.weight, matrix_input)(x)
    return y + block.bias.astype(np.float64) if block.bias is not None else y


def lstm_step(
    block: LSTM, weights: list[np.ndarray | Callable[[np.ndarray], np.ndarray]], x_t: np.ndarray, h: np.ndarray,
    c: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One time step through every layer. x_t [B, I]; h, c [L, B, H]; `weights`: each layer's W (or `matmul` of
    it). Returns (top h, h_next, c_next)."""
    H = block.hidden_size
    h_next, c_next = np.empty_like(h), np.empty_like(c)
    inp = x_t
    for k, (layer, w) in enumerate(zip(block.layers, weights)):
        xh = np.concatenate([inp, h[k]], axis=-1)
        gates = (w(xh) if callable(w) else xh @ w.T) + layer.bias.astype(np.float64)
        i, f, g, o = (gates[:, j * H : (j + 1) * H] for j in range(4))
        c_k = _sigmoid(f) * c[k] + _sigmoid(i) * np.tanh(g)
        h_k = _sigmoid(o) * np.tanh(c_k)
        h_next[k], c_next[k] = h_k, c_k
        inp = h_k
    return inp, h_next, c_next


def run(spec: ModelSpec, feeds: dict[str, np.ndarray], mode: str = "sequence", *,
        matrix_input: MatrixInput | None = None) -> dict[str, np.ndarray]:
    """Run the spec on `feeds` in float64. Returns outputs named as `dkp_deploy.signature` says.

    `matrix_input`: see the module docstring (None: every matrix reads its input as is)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if spec.arch == "mlp":
        x = np.asarray(feeds["x"], dtype=np.float64)
        for b in spec.blocks:
            x = linear(b, x, matrix_input) if isinstance(b, Linear) else activation(b.kind, x)
        return {"y": x}

    lstm = spec.lstm
    assert lstm is not None
    weights = [matmul(layer.weight, matrix_input) for layer in lstm.layers]
    emb = next((b for b in spec.blocks if isinstance(b, Embedding)), None)
    dec = spec.blocks[-1] if spec.arch == "lstm_lm" else None

    def embed(x: np.ndarray) -> np.ndarray:
        return emb.weight.astype(np.float64)[x] if emb is not None else np.asarray(x, dtype=np.float64)

    def head(y: np.ndarray) -> np.ndarray:
        return linear(dec, y, matrix_input) if dec is not None else y

    L, H = lstm.num_layers, lstm.hidden_size
    if mode == "step" and spec.is_recurrent:
        x_t = embed(feeds["x_t"])
        y, h, c = lstm_step(lstm, weights, x_t, np.asarray(feeds["h"], np.float64), np.asarray(feeds["c"], np.float64))
        return {"y_t": head(y), "h_next": h, "c_next": c}

    x = embed(feeds["x"])
    if lstm.batch_first:
        x = np.swapaxes(x, 0, 1)
    T, B = x.shape[:2]
    h = np.asarray(feeds["h0"], np.float64) if feeds.get("h0") is not None else np.zeros((L, B, H))
    c = np.asarray(feeds["c0"], np.float64) if feeds.get("c0") is not None else np.zeros((L, B, H))
    ys = np.empty((T, B, H))
    for t in range(T):
        ys[t], h, c = lstm_step(lstm, weights, x[t], h, c)
    y = head(ys)
    if lstm.batch_first:
        y = np.swapaxes(y, 0, 1)
    return {"y": y, "hn": h, "cn": c}


__all__ = ["run", "activation", "linear", "matmul", "lstm_step", "Activation"]
