"""The framework-neutral model spec: the one source of truth every converter and the validator read.

Plain dataclasses holding numpy arrays; no torch. A model is a `ModelSpec`: an ordered list of blocks
(`Linear`, `Activation`, `LSTM`, `Embedding`) applied one after the other, plus its architecture name.

Every weight matrix is a `DopedMatrix` W (M x N) = structured part + W_s, where the structured part is one of

- ``"kron"``:  kron(B, C), B (M1 x N1), C (M2 x N2), M = M1*M2, N = N1*N2
- ``"lmf"``:   U @ V, U (M x r), V (r x N)
- ``"hmd"``:   rows [0, k) are W_top (k x N), rows [k, M) are U @ V, U ((M-k) x r), V (r x N)
- ``"none"``:  nothing (W = W_s: the pruning baseline)
- ``"dense"``: a plain dense W (the layers that are not doped, e.g. an LM's decoder)

and W_s is an optional M x N `CSR` matrix. Conventions: y = W @ x (+ b), i.e. torch's Linear convention.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from .errors import InputError

STRUCTURES = ("kron", "lmf", "hmd", "none", "dense")
FACTOR_NAMES = {
    "kron": ("B", "C"),
    "lmf": ("U", "V"),
    "hmd": ("W_top", "U", "V"),
    "none": (),
    "dense": ("W",),
}
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "identity")


def _finite(name: str, a: np.ndarray) -> None:
    if a.size and not np.all(np.isfinite(a)):
        raise InputError(f"tensor {name!r} holds NaN or inf")


@dataclass
class CSR:
    """A float32 CSR matrix with int32 indices, the layout `ai.dkp::SparseMatVec` and TFLite read."""

    shape: tuple[int, int]
    row_ptr: np.ndarray  # int32 [M+1]
    col_idx: np.ndarray  # int32 [nnz]
    values: np.ndarray  # float32 [nnz]

    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])

    @property
    def density(self) -> float:
        m, n = self.shape
        return self.nnz / (m * n) if m * n else 0.0

    @classmethod
    def from_dense(cls, w: np.ndarray) -> CSR:
        """CSR of the nonzeros of a dense 2-D array (row-major order, sorted columns)."""
        w = np.asarray(w)
        if w.ndim != 2:
            raise ValueError(f"CSR.from_dense needs a 2-D array, got shape {w.shape}")
        rows, cols = np.nonzero(w)
        counts = np.bincount(rows, minlength=w.shape[0])
        row_ptr = np.zeros(w.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=row_ptr[1:])
        return cls(
            shape=(int(w.shape[0]), int(w.shape[1])),
            row_ptr=row_ptr.astype(np.int32),
            col_idx=cols.astype(np.int32),
            values=w[rows, cols].astype(np.float32),
        )

    @classmethod
    def from_mask(cls, values: np.ndarray, mask: np.ndarray) -> CSR:
        """CSR of `values` at every True of `mask`: a kept zero stays an entry, so nnz equals the mask's count."""
        mask = np.asarray(mask).astype(bool)
        csr = cls.from_dense(mask)
        csr.values = np.asarray(values)[mask].astype(np.float32)  # boolean indexing is row-major, like CSR
        return csr

    def block_columns(self, width: int) -> np.ndarray | None:
        """The block-column index (col // width) of each 1 x `width` block, when the entries form whole aligned
        1 x `width` blocks (each row's columns in runs `width * j, ..., width * j + width - 1`); else None."""
        n = self.shape[1]
        if width < 2 or n % width or self.nnz % width or np.any(np.diff(self.row_ptr.astype(np.int64)) % width):
            return None
        cols = self.col_idx.astype(np.int64).reshape(-1, width)
        if np.any(cols[:, 0] % width) or np.any(cols - cols[:, :1] != np.arange(width)):
            return None
        return (cols[:, 0] // width).astype(np.int32)

    def column_gaps(self) -> tuple[CSR, np.ndarray]:
        """The columns as uint8 gaps, as ``ai.dkp`` ops read a uint8 col_idx: each entry's column minus the previous
        entry's in its row (the first entry's: its column). Each row's entries are sorted by column first, and a
        gap over 255 is bridged by zero-valued entries 255 columns apart, so the returned CSR (the same matrix) may
        hold more entries than this one: with random columns, (1 - density)^255 of them (one in a million at 95%
        sparsity, 8% at 99%)."""
        rp = self.row_ptr.astype(np.int64)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(rp))
        order = np.lexsort((self.col_idx, rows))
        if np.any(order != np.arange(order.size)):
            return CSR(self.shape, self.row_ptr, self.col_idx[order], self.values[order]).column_gaps()
        cols = self.col_idx.astype(np.int64)
        starts = rp[:-1]
        prev = np.empty_like(cols)
        if cols.size:
            prev[1:] = cols[:-1]
            prev[starts[starts < cols.size]] = 0
        gaps = cols - prev
        fillers = np.maximum((gaps - 1) // 255, 0)  # entries at prev + 255, prev + 510, ... before this one
        if not fillers.any():
            return self, gaps.astype(np.uint8)
        count = fillers + 1
        at = np.repeat(np.arange(cols.size), count)  # the source entry of every output entry
        step = np.arange(at.size) - np.repeat(np.cumsum(count) - count, count)  # 0 .. fillers[k] within entry k
        last = step == fillers[at]
        new_cols = np.where(last, cols[at], prev[at] + 255 * (step + 1))
        new_gaps = np.where(last, gaps[at] - 255 * fillers[at], 255)
        values = np.where(last, self.values[at], 0).astype(self.values.dtype)
        if at.size > np.iinfo(np.int32).max:
            raise InputError(f"W_s {self.shape}: {at.size} entries with the gap fillers, past int32 row pointers")
        row_ptr = np.concatenate([[0], np.cumsum(count)])[rp].astype(np.int32)
        return CSR(self.shape, row_ptr, new_cols.astype(np.int32), values), new_gaps.astype(np.uint8)

    @classmethod
    def from_column_gaps(cls, shape: tuple[int, int], row_ptr: np.ndarray, gaps: np.ndarray, values: np.ndarray,
                         name: str = "W_s") -> CSR:
        """The CSR whose uint8 col_idx holds gaps (`column_gaps`); `InputError` if row_ptr cannot delimit them."""
        rp = np.asarray(row_ptr).astype(np.int64)
        gaps = np.asarray(gaps)
        if rp.ndim != 1 or rp.size == 0 or rp[0] != 0 or np.any(np.diff(rp) < 0) or rp[-1] != gaps.size:
            raise InputError(f"{name}.row_ptr: does not delimit the {gaps.size} column gaps (must rise from 0 to "
                             f"{gaps.size})")
        c = np.concatenate([[0], np.cumsum(gaps.astype(np.int64))])
        cols = c[1:] - np.repeat(c[rp[:-1]], np.diff(rp))
        if cols.size and cols.max() > np.iinfo(np.int32).max:
            raise InputError(f"{name}.col_idx: the gaps reach column {cols.max()}, past int32")
        return cls(shape, np.asarray(row_ptr), cols.astype(np.int32), np.asarray(values))

    def to_dense(self, dtype: Any = np.float64) -> np.ndarray:
        m, n = self.shape
        out = np.zeros((m, n), dtype=dtype)
        rows = np.repeat(np.arange(m), np.diff(self.row_ptr.astype(np.int64)))
        np.add.at(out, (rows, self.col_idx.astype(np.int64)), self.values.astype(dtype))
        return out

    def to_scipy(self):
        import scipy.sparse as sp

        return sp.csr_matrix((self.values, self.col_idx, self.row_ptr), shape=self.shape)

    def check(self, name: str = "W_s") -> None:
        """Raise `InputError` unless the arrays form a valid CSR matrix of `shape`."""
        m, n = self.shape
        if m < 0 or n < 0:
            raise InputError(f"{name}: negative shape {self.shape}")
        for part, arr, kinds in (
            ("row_ptr", self.row_ptr, "iu"),
            ("col_idx", self.col_idx, "iu"),
            ("values", self.values, "f"),
        ):
            if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.dtype.kind not in kinds:
                raise InputError(f"{name}.{part}: expected a 1-D {'integer' if kinds != 'f' else 'float'} array")
        rp = self.row_ptr.astype(np.int64)
        if rp.shape[0] != m + 1:
            raise InputError(f"{name}.row_ptr: length {rp.shape[0]}, expected rows + 1 = {m + 1}")
        if rp[0] != 0:
            raise InputError(f"{name}.row_ptr: first entry is {rp[0]}, expected 0")
        if np.any(np.diff(rp) < 0):
            raise InputError(f"{name}.row_ptr: not non-decreasing")
        if rp[-1] != self.col_idx.shape[0] or self.col_idx.shape[0] != self.values.shape[0]:
            raise InputError(
                f"{name}: row_ptr ends at {rp[-1]} but col_idx has {self.col_idx.shape[0]} and values "
                f"{self.values.shape[0]} entries"
            )
        if self.col_idx.size and (self.col_idx.min() < 0 or self.col_idx.max() >= n):
            raise InputError(f"{name}.col_idx: index out of range [0, {n})")
        if np.iinfo(np.int32).max < max(rp[-1], n):
            raise InputError(f"{name}: too large for int32 indices")
        _finite(f"{name}.values", self.values)


@dataclass
class DopedMatrix:
    """W (M x N) = structured part + W_s. See the module docstring for the structures."""

    shape: tuple[int, int]
    structure: str
    factors: dict[str, np.ndarray] = field(default_factory=dict)
    sparse: CSR | None = None

    # -- sizes -------------------------------------------------------------------------------------
    @property
    def nnz(self) -> int:
        return self.sparse.nnz if self.sparse is not None else 0

    @property
    def structured_params(self) -> int:
        return int(sum(int(f.size) for f in self.factors.values()))

    def compression_factor(self) -> float:
        """M*N / (structured params + nnz(W_s)): the paper's eq. 3, weights only."""
        m, n = self.shape
        stored = self.structured_params + self.nnz
        return float("inf") if stored == 0 else m * n / stored

    @property
    def kron_shape(self) -> tuple[tuple[int, int], tuple[int, int]] | None:
        if self.structure != "kron":
            return None
        b, c = self.factors["B"], self.factors["C"]
        return (tuple(b.shape), tuple(c.shape))  # type: ignore[return-value]

    # -- values ------------------------------------------------------------------------------------
    def structured_dense(self, dtype: Any = np.float64) -> np.ndarray:
        """The structured part as an M x N array (for validation and the dense baseline only)."""
        f = {k: v.astype(dtype) for k, v in self.factors.items()}
        m, n = self.shape
        if self.structure == "kron":
            return np.kron(f["B"], f["C"])
        if self.structure == "lmf":
            return f["U"] @ f["V"]
        if self.structure == "hmd":
            return np.concatenate([f["W_top"], f["U"] @ f["V"]], axis=0)
        if self.structure == "dense":
            return f["W"].copy()
        return np.zeros((m, n), dtype=dtype)

    def dense(self, dtype: Any = np.float64) -> np.ndarray:
        """The exact M x N W = structured + W_s."""
        w = self.structured_dense(dtype)
        if self.sparse is not None:
            w += self.sparse.to_dense(dtype)
        return w

    def check(self, name: str = "W") -> None:
        """Raise `InputError` unless structure, factor shapes, CSR and values are consistent."""
        if self.structure not in STRUCTURES:
            raise InputError(f"{name}: unknown structure {self.structure!r} (known: {', '.join(STRUCTURES)})")
        m, n = self.shape
        want = FACTOR_NAMES[self.structure]
        if set(self.factors) != set(want):
            raise InputError(f"{name}: structure {self.structure!r} needs factors {want}, got {tuple(self.factors)}")
        for k, v in self.factors.items():
            if not isinstance(v, np.ndarray) or v.ndim != 2 or v.dtype.kind != "f":
                raise InputError(f"{name}.{k}: expected a 2-D float array")
            _finite(f"{name}.{k}", v)
        f = {k: v.shape for k, v in self.factors.items()}
        ok = True
        if self.structure == "kron":
            ok = f["B"][0] * f["C"][0] == m and f["B"][1] * f["C"][1] == n
        elif self.structure == "lmf":
            ok = f["U"][0] == m and f["V"][1] == n and f["U"][1] == f["V"][0]
        elif self.structure == "hmd":
            k = f["W_top"][0]
            ok = f["W_top"][1] == n and f["U"][0] == m - k and f["V"][1] == n and f["U"][1] == f["V"][0]
        elif self.structure == "dense":
            ok = f["W"] == (m, n)
        if not ok:
            raise InputError(f"{name}: factor shapes {f} do not make a {m} x {n} {self.structure} matrix")
        if self.sparse is not None:
            if tuple(self.sparse.shape) != (m, n):
                raise InputError(f"{name}.W_s: shape {self.sparse.shape}, expected {(m, n)}")
            self.sparse.check(f"{name}.W_s")


@dataclass
class Linear:
    """y = W @ x + b over the last axis."""

    name: str
    weight: DopedMatrix
    bias: np.ndarray | None = None

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]


@dataclass
class Activation:
    name: str
    kind: str  # one of ACTIVATIONS


@dataclass
class LSTMLayer:
    """One LSTM layer: gates = W @ [x_t, h_{t-1}] + bias, W of shape 4H x (I+H), torch gate order i, f, g, o."""

    weight: DopedMatrix
    bias: np.ndarray  # [4H]: torch's b_ih + b_hh folded


@dataclass
class LSTM:
    name: str
    input_size: int
    hidden_size: int
    layers: list[LSTMLayer]
    batch_first: bool = False

    @property
    def num_layers(self) -> int:
        return len(self.layers)


@dataclass
class Embedding:
    """Token ids -> rows of `weight` (V x E)."""

    name: str
    weight: np.ndarray


Block = Union[Linear, Activation, LSTM, Embedding]
ARCHITECTURES = ("mlp", "lstm", "lstm_lm")


@dataclass
class ModelSpec:
    """A model as blocks applied in order.

    `arch` says which torch module family it came from and how its graphs are wired:
    ``"mlp"`` (Linear/Activation blocks), ``"lstm"`` (one LSTM block), ``"lstm_lm"`` (Embedding, LSTM, Linear).
    `config` holds what is needed to rebuild the torch module (JSON-able values only).
    """

    arch: str
    blocks: list[Block]
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def matrices(self) -> dict[str, DopedMatrix]:
        """Every weight matrix by a stable name: '<block>' for Linear, '<block>.<layer>' for LSTM layers."""
        out: dict[str, DopedMatrix] = {}
        for b in self.blocks:
            if isinstance(b, Linear):
                out[b.name] = b.weight
            elif isinstance(b, LSTM):
                for i, layer in enumerate(b.layers):
                    out[f"{b.name}.{i}"] = layer.weight
        return out

    def map_matrices(self, fn: Callable[[DopedMatrix], DopedMatrix]) -> ModelSpec:
        """The same model with every weight matrix w replaced by fn(w)."""
        blocks: list[Block] = []
        for b in self.blocks:
            if isinstance(b, Linear):
                b = Linear(b.name, fn(b.weight), b.bias)
            elif isinstance(b, LSTM):
                b = LSTM(b.name, b.input_size, b.hidden_size, [LSTMLayer(fn(x.weight), x.bias) for x in b.layers],
                         b.batch_first)
            blocks.append(b)
        return ModelSpec(self.arch, blocks, dict(self.config), dict(self.metadata))

    @property
    def lstm(self) -> LSTM | None:
        return next((b for b in self.blocks if isinstance(b, LSTM)), None)

    @property
    def is_recurrent(self) -> bool:
        return self.lstm is not None

    def summary(self) -> dict[str, Any]:
        """CF and sizes per matrix and overall (weights only), the numbers files and reports record."""
        layers = {}
        dense_total = stored_total = 0
        for name, w in self.matrices().items():
            m, n = w.shape
            stored = w.structured_params + w.nnz
            layers[name] = {
                "shape": [m, n],
                "structure": w.structure,
                "factor_shapes": {k: list(v.shape) for k, v in w.factors.items()},
                "nnz": w.nnz,
                "density": (w.nnz / (m * n)) if m * n else 0.0,
                "compression_factor": w.compression_factor(),
            }
            dense_total += m * n
            stored_total += stored
        return {
            "arch": self.arch,
            "layers": layers,
            "compression_factor": dense_total / stored_total if stored_total else float("inf"),
        }

    def check(self, source: object | None = None) -> None:
        """Raise `InputError` (naming `source`) unless the spec is internally consistent."""
        try:
            self._check()
        except InputError as e:
            if source is not None and e.path is None:
                raise InputError(str(e), source) from None
            raise

    def _check(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise InputError(f"unknown architecture {self.arch!r} (known: {', '.join(ARCHITECTURES)})")
        if not self.blocks:
            raise InputError("model has no blocks")
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise InputError(f"duplicate block names in {names}")
        width: int | None = None
        for b in self.blocks:
            if isinstance(b, Linear):
                b.weight.check(b.name)
                if b.bias is not None:
                    if b.bias.shape != (b.out_features,):
                        raise InputError(f"{b.name}.bias: shape {b.bias.shape}, expected ({b.out_features},)")
                    _finite(f"{b.name}.bias", b.bias)
                if width is not None and width != b.in_features:
                    raise InputError(f"{b.name}: takes {b.in_features} features but receives {width}")
                width = b.out_features
            elif isinstance(b, Activation):
                if b.kind not in ACTIVATIONS:
                    raise InputError(f"{b.name}: unknown activation {b.kind!r}")
            elif isinstance(b, LSTM):
                i_size, h = b.input_size, b.hidden_size
                if width is not None and width != i_size:
                    raise InputError(f"{b.name}: takes {i_size} features but receives {width}")
                if not b.layers:
                    raise InputError(f"{b.name}: no layers")
                for k, layer in enumerate(b.layers):
                    want = (4 * h, (i_size if k == 0 else h) + h)
                    if tuple(layer.weight.shape) != want:
                        raise InputError(f"{b.name}.{k}: weight shape {layer.weight.shape}, expected {want}")
                    layer.weight.check(f"{b.name}.{k}")
                    if layer.bias.shape != (4 * h,):
                        raise InputError(f"{b.name}.{k}.bias: shape {layer.bias.shape}, expected ({4 * h},)")
                    _finite(f"{b.name}.{k}.bias", layer.bias)
                width = h
            elif isinstance(b, Embedding):
                if b.weight.ndim != 2:
                    raise InputError(f"{b.name}: embedding weight must be 2-D")
                _finite(b.name, b.weight)
                width = b.weight.shape[1]
            else:
                raise InputError(f"unknown block type {type(b).__name__}")
        if self.arch == "lstm_lm":
            kinds = [type(b).__name__ for b in self.blocks]
            if kinds != ["Embedding", "LSTM", "Linear"]:
                raise InputError(f"lstm_lm needs blocks Embedding, LSTM, Linear; got {kinds}")
        elif self.arch == "lstm":
            if [type(b).__name__ for b in self.blocks] != ["LSTM"]:
                raise InputError("lstm needs exactly one LSTM block")
        elif self.arch == "mlp":
            if not all(isinstance(b, (Linear, Activation)) for b in self.blocks):
                raise InputError("mlp holds Linear and Activation blocks only")


def replace(obj, **changes):
    """dataclasses.replace, re-exported for callers that build modified specs (tests, tools)."""
    return dataclasses.replace(obj, **changes)
