"""The models `dkp-bench` times: doped matrices, layers and LSTM LMs at the paper's shapes, random weights.

Random weights are enough for timing: speed depends on shapes and nnz only. W_s nnz is derived from a target
compression factor (the paper's eq. 3: M*N / (params of B and C + nnz)), with nonzeros placed uniformly at
random, the hardest case for a CSR kernel (no locality to exploit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec import CSR, LSTM, DopedMatrix, Embedding, Linear, LSTMLayer, ModelSpec


@dataclass(frozen=True)
class LMShape:
    """An LSTM LM benchmark: `layers` x `hidden` LSTM, embedding = hidden, a dense decoder over `vocab`."""

    name: str
    hidden: int
    layers: int
    vocab: int
    cf: float
    kron: tuple[tuple[int, int], tuple[int, int]] | None = None  # None: the project's kron_shape rule
    paper_sparsity: float | None = None  # W_s sparsity the paper reports at this CF
    paper_speedup: float | None = None  # the paper's table 7 (Raspberry Pi 4, Eigen)
    paper_mac_reduction: float | None = None


MEDIUM_KRON = ((52, 65), (50, 20))
MEDIUM = {
    cf: LMShape(f"medium 2x650 {cf}x", 650, 2, 10000, cf, MEDIUM_KRON, sp)
    for cf, sp in ((10, 0.911), (20, 0.953), (25, 0.963))
}
MEDIUM[25] = LMShape("medium 2x650 25x", 650, 2, 10000, 25, MEDIUM_KRON, 0.963, 4.06, 7.41)
LARGE = LMShape("large 2x1500 20x", 1500, 2, 10000, 20, None, 0.966, 5.49, 5.64)
QUICK = LMShape("tiny 2x64 20x", 64, 2, 500, 20, None, None)


def kron_shape(m: int, n: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """B and C shapes for an M x N matrix, by the project's rule (dkp_deploy.kron_shape)."""
    from ..kron_shape import choose_kron_shape

    b, c = choose_kron_shape(m, n)
    return (tuple(b), tuple(c))  # type: ignore[return-value]


def random_csr(m: int, n: int, nnz: int, rng: np.random.Generator, block: int = 1) -> CSR:
    """An M x N CSR matrix with `nnz` nonzeros at uniformly random positions (sorted, row-major); with `block` > 1,
    in whole aligned 1 x `block` blocks at random positions (nnz rounded to a multiple of `block`)."""
    nnz = int(min(max(nnz, 0), m * n))
    if block > 1:
        picks = np.sort(rng.choice(m * (n // block), size=nnz // block, replace=False))
        flat = (np.divmod(picks, n // block)[0] * n + np.divmod(picks, n // block)[1] * block)[:, None]
        flat = (flat + np.arange(block)).ravel()
        nnz = flat.size
    else:
        flat = np.sort(rng.choice(m * n, size=nnz, replace=False))
    rows, cols = np.divmod(flat, n)
    row_ptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=m), out=row_ptr[1:])
    values = rng.standard_normal(nnz).astype(np.float32) * np.float32(0.05)
    return CSR((m, n), row_ptr.astype(np.int32), cols.astype(np.int32), values)


def sparse_matrix(m: int, n: int, sparsity: float, rng: np.random.Generator) -> DopedMatrix:
    """W = W_s alone (structure "none") at the given sparsity: the kernel benchmark's matrix."""
    return DopedMatrix((m, n), "none", {}, random_csr(m, n, round((1.0 - sparsity) * m * n), rng))


def doped_matrix(
    m: int,
    n: int,
    cf: float,
    rng: np.random.Generator,
    kron: tuple[tuple[int, int], tuple[int, int]] | None = None,
    block: int = 1,
) -> DopedMatrix:
    """kron(B, C) + W_s with nnz(W_s) chosen so that the matrix's compression factor is `cf` (W_s in 1 x `block`
    blocks when `block` > 1)."""
    (m1, n1), (m2, n2) = kron or kron_shape(m, n)
    if m1 * m2 != m or n1 * n2 != n:
        raise ValueError(f"B {m1}x{n1} and C {m2}x{n2} do not make a {m} x {n} matrix")
    nnz = round(m * n / cf) - (m1 * n1 + m2 * n2)
    if nnz < 0:
        raise ValueError(f"B and C alone exceed the budget of a {cf}x compressed {m} x {n} matrix")
    scale = np.float32(1.0 / np.sqrt(n))
    factors = {
        "B": rng.standard_normal((m1, n1)).astype(np.float32),
        "C": (rng.standard_normal((m2, n2)) * scale).astype(np.float32),
    }
    return DopedMatrix((m, n), "kron", factors, random_csr(m, n, nnz, rng, block))


def dense_matrix(m: int, n: int, rng: np.random.Generator) -> DopedMatrix:
    return DopedMatrix((m, n), "dense", {"W": (rng.standard_normal((m, n)) / np.sqrt(n)).astype(np.float32)})


def layer_spec(m: int, n: int, cf: float, seed: int = 0, kron=None, block: int = 1) -> ModelSpec:
    """One doped Linear layer (arch "mlp") with a bias (W_s in 1 x `block` blocks when `block` > 1)."""
    rng = np.random.default_rng(seed)
    w = doped_matrix(m, n, cf, rng, kron, block)
    return ModelSpec("mlp", [Linear("fc", w, rng.standard_normal(m).astype(np.float32))])


def sparse_layer_spec(m: int, n: int, sparsity: float, seed: int = 0) -> ModelSpec:
    """One sparse-only Linear layer (no bias): W_s @ x, the kernel benchmark as a model."""
    rng = np.random.default_rng(seed)
    return ModelSpec("mlp", [Linear("fc", sparse_matrix(m, n, sparsity, rng), None)])


def dense_layer_spec(m: int, n: int, seed: int = 0) -> ModelSpec:
    """One dense Linear layer (no bias): the kernel benchmark's baseline as a model."""
    return ModelSpec("mlp", [Linear("fc", dense_matrix(m, n, np.random.default_rng(seed)), None)])


def lstm_block(shape: LMShape, rng: np.random.Generator, block: int = 1) -> LSTM:
    h = shape.hidden
    layers = []
    for _ in range(shape.layers):
        w = doped_matrix(4 * h, 2 * h, shape.cf, rng, shape.kron, block)
        layers.append(LSTMLayer(w, (0.1 * rng.standard_normal(4 * h)).astype(np.float32)))
    return LSTM("lstm", h, h, layers)


def lm_specs(shape: LMShape, seed: int = 0) -> tuple[ModelSpec, ModelSpec]:
    """(LSTM layers alone as arch "lstm", the whole LM as arch "lstm_lm"), sharing the same LSTM weights."""
    rng = np.random.default_rng(seed)
    lstm = lstm_block(shape, rng)
    embed = Embedding("embed", rng.standard_normal((shape.vocab, shape.hidden)).astype(np.float32))
    decoder = Linear("decoder", dense_matrix(shape.vocab, shape.hidden, rng), np.zeros(shape.vocab, np.float32))
    return ModelSpec("lstm", [lstm]), ModelSpec("lstm_lm", [embed, lstm, decoder])


def block_lstm_spec(shape: LMShape, seed: int = 0) -> ModelSpec:
    """The LSTM layers with W_s in 1 x 4 blocks (TFLite's optimized sparse kernel), same shapes and CF."""
    return ModelSpec("lstm", [lstm_block(shape, np.random.default_rng(seed), block=4)])


def doped_decoder(lm: ModelSpec, cf: float, seed: int = 0) -> ModelSpec:
    """The LM with its vocab x hidden decoder doped too (kron + W_s at `cf`): whole-model doping."""
    embed, lstm, decoder = lm.blocks
    m, n = decoder.weight.shape
    w = doped_matrix(m, n, cf, np.random.default_rng(seed))
    return ModelSpec("lstm_lm", [embed, lstm, Linear(decoder.name, w, decoder.bias)])


def densified(spec: ModelSpec) -> ModelSpec:
    """The same model with every matrix folded to a dense W: the baseline (what the paper calls 1x)."""

    def fold(w: DopedMatrix) -> DopedMatrix:
        return w if w.structure == "dense" else DopedMatrix(w.shape, "dense", {"W": w.dense(np.float32)})

    return spec.map_matrices(fold)


def matvec_macs(w: DopedMatrix) -> int:
    """MACs of one W @ x the way the deploy graphs compute it (Kronecker half in the cheaper order + nnz)."""
    m, n = w.shape
    if w.structure == "dense":
        return m * n
    macs = w.nnz
    if w.structure == "kron":
        (m1, n1), (m2, n2) = w.factors["B"].shape, w.factors["C"].shape
        # X (N1 x N2): B @ X then (.) @ C^T, or X @ C^T then B @ (.)
        macs += min(m1 * n1 * n2 + m1 * n2 * m2, n1 * n2 * m2 + m1 * n1 * m2)
    elif w.structure == "lmf":
        macs += w.factors["U"].size + w.factors["V"].size
    elif w.structure == "hmd":
        macs += sum(f.size for f in w.factors.values())
    return int(macs)


def matrix_bytes(w: DopedMatrix) -> int:
    """Bytes one W @ x must stream: float32 factors, CSR values + col_idx + row_ptr (int32)."""
    b = 4 * sum(int(f.size) for f in w.factors.values())
    if w.sparse is not None:
        b += 8 * w.nnz + 4 * (w.shape[0] + 1)
    return b
