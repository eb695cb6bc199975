"""`DopedEmbedding`: an embedding whose V x D table is kron(B, C) + W_s, looked up without forming the table."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError
from ..kron_shape import KronShape
from .linear import DopedLinear

# nn.Embedding's options and the value each must have here (the doped table has no fixed row, no renorm, and its
# gradients are dense)
_UNSUPPORTED = {"padding_idx": None, "max_norm": None, "scale_grad_by_freq": False, "sparse": False}


def check_embedding_options(**options: Any) -> None:
    """InputError naming the first nn.Embedding option a doped table cannot honour (padding_idx, max_norm, ...)."""
    for key, default in _UNSUPPORTED.items():
        value = options.get(key, default)
        if value != default:
            raise InputError(f"DopedEmbedding does not support {key}={value!r} (nn.Embedding without it only)")


class DopedEmbedding(nn.Module):
    """nn.Embedding(V, D) whose table W (V x D) = kron(B, C) + W_s, B (V1 x D1), C (V2 x D2), V = V1 V2, D = D1 D2.

    The table is a `DopedLinear` (``table``, in_features D, out_features V, structure "kron"): its parameters B, C,
    W_s and mask, pruning (`set_density`), CMR and compression factor are DopedLinear's, so `doped_layers` and the
    schedules of `dkp_deploy.train` treat it like any doped matrix. ``table=`` shares an existing DopedLinear
    (a decoder tied to the embedding: one matrix, its bias unused here).

    Forward on integer ids of any shape: row i = i1 * V2 + i2 of kron(B, C) is kron(B[i1], C[i2]) (an outer
    product of two small rows), plus row i of W_s * mask; the V x D table is never formed. In training with
    cmr > 0 the two parts get the table's CMR masks, as DopedLinear's outputs do. nn.Embedding's padding_idx,
    max_norm, scale_grad_by_freq and sparse are refused (InputError).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        *,
        kron_shape: KronShape | None = None,
        density: float = 1.0,
        cmr: float = 0.0,
        sparse_block: tuple[int, int] | None = None,
        table: DopedLinear | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        check_embedding_options(padding_idx=padding_idx, max_norm=max_norm, scale_grad_by_freq=scale_grad_by_freq,
                                sparse=sparse)
        if table is None:
            try:
                table = DopedLinear(embedding_dim, num_embeddings, bias=False, structure="kron", kron_shape=kron_shape,
                                    density=density, cmr=cmr, sparse_block=sparse_block, device=device, dtype=dtype)
            except ValueError as e:  # a kron_shape that does not factor V x D, a bad density, ...
                raise InputError(f"DopedEmbedding: {e}") from None
        elif (table.out_features, table.in_features) != (num_embeddings, embedding_dim):
            raise InputError(f"DopedEmbedding: a {table.out_features} x {table.in_features} table cannot be a "
                             f"{num_embeddings} x {embedding_dim} embedding")
        if table.structure != "kron":
            raise InputError(f"DopedEmbedding: the table must be structure 'kron', got {table.structure!r}")
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.table = table

    @classmethod
    def from_table(cls, table: DopedLinear) -> DopedEmbedding:
        """An embedding reading rows of `table`'s W (out_features x in_features), sharing its parameters."""
        return cls(table.out_features, table.in_features, table=table)

    @property
    def kron_shape(self) -> KronShape:
        return self.table.kron_shape  # type: ignore[return-value]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = self.table
        # W_s rows first: F.embedding rejects ids outside [0, V) before the factor indices are derived from them
        rows = F.embedding(ids, t.W_s) * t.mask[ids].to(t.W_s.dtype)
        (_, d1), (v2, d2) = self.kron_shape
        i1 = torch.div(ids, v2, rounding_mode="floor")
        b, c = F.embedding(i1, t.B), F.embedding(ids - i1 * v2, t.C)
        kron = (b.unsqueeze(-1) * c.unsqueeze(-2)).reshape(*ids.shape, d1 * d2)
        return t.mix(kron, rows)

    # -- the table's properties, for reports and tests -------------------------------------------------
    def dense_weight(self) -> torch.Tensor:
        """The exact V x D table (validation only; forward never builds it)."""
        return self.table.dense_weight()

    @property
    def weight(self) -> torch.Tensor:
        """Read-only `dense_weight()` (nn.Embedding's attribute name); materializes the table on every access."""
        return self.dense_weight()

    def set_density(self, density: float) -> None:
        self.table.set_density(density)

    @property
    def nnz(self) -> int:
        return self.table.nnz

    def compression_factor(self) -> float:
        return self.table.compression_factor()

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, kron_shape={self.kron_shape}"


__all__ = ["DopedEmbedding", "check_embedding_options"]
