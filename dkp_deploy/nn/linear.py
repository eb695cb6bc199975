"""`DopedLinear`: y = (structured W + W_s) x + b, trained with co-matrix regularization (the paper's eq. 1, 12)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..kron_shape import KronShape, check_kron_shape, choose_kron_shape

STRUCTURES = ("kron", "lmf", "hmd", "none")
FACTOR_NAMES = {"kron": ("B", "C"), "lmf": ("U", "V"), "hmd": ("W_top", "U", "V"), "none": ()}


class DopedLinear(nn.Module):
    """A linear layer whose M x N weight is a structured matrix plus a sparse co-matrix W_s ("doping").

    Structures: ``"kron"`` kron(B, C) with ``kron_shape=((M1, N1), (M2, N2))`` (None: `choose_kron_shape`);
    ``"lmf"`` U @ V of rank ``rank``; ``"hmd"`` (Thakker et al. 2019) the first ``hmd_rows`` rows dense (W_top,
    default M // 2) and the remaining rows U @ V of rank ``rank``; ``"none"`` W_s alone (the pruning baseline).

    W_s is a dense parameter with a boolean ``mask`` buffer; the layer uses W_s * mask. ``density`` sets the
    initial mask (1.0 = dense W_s, as the paper starts training). ``set_density`` magnitude-prunes it.

    Co-matrix regularization (CMR, eq. 12): in training mode, with drop rate ``cmr`` > 0, each output element of
    the structured path and of the W_s path is multiplied by its own Bernoulli(keep) draw, keep = 1 - cmr, and
    the sum is divided by keep (inverted dropout, as ``tf.nn.dropout`` and ``torch.nn.Dropout`` do), so the
    expected training output equals the inference output and eval mode needs no rescaling. ``cmr`` is the
    paper's "CMR dropout value" (0.7 in its appendix B), which the schedules in `dkp_deploy.train` anneal to 0.
    Layers with structure "none" have a single path and ignore CMR.

    The forward pass never forms the M x N structured matrix: kron(B, C) x = vec(B X C^T) with X = x reshaped
    row-major to (N1, N2) (two small batched matmuls; autograd's backward is equally small), U @ V x = U (V x).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        structure: str = "kron",
        kron_shape: KronShape | None = None,
        rank: int | None = None,
        hmd_rows: int | None = None,
        density: float = 1.0,
        cmr: float = 0.0,
        sparse_block: tuple[int, int] | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
        if in_features < 1 or out_features < 1:
            raise ValueError(f"features must be positive, got {in_features} -> {out_features}")
        M, N = out_features, in_features
        self.in_features, self.out_features, self.structure = N, M, structure
        self.sparse_block = _check_block(sparse_block, M, N)
        self.kron_shape: KronShape | None = None
        self.rank: int | None = None
        self.hmd_rows: int | None = None
        fk = {"device": device, "dtype": dtype}
        if structure == "kron":
            ks = check_kron_shape(M, N, kron_shape) if kron_shape is not None else choose_kron_shape(M, N)
            self.kron_shape = ks
            self.B = nn.Parameter(torch.empty(ks[0], **fk))
            self.C = nn.Parameter(torch.empty(ks[1], **fk))
        elif structure in ("lmf", "hmd"):
            if rank is None or int(rank) < 1:
                raise ValueError(f"structure {structure!r} needs a positive rank, got {rank!r}")
            self.rank = int(rank)
            rows = M
            if structure == "hmd":
                k = M // 2 if hmd_rows is None else int(hmd_rows)
                if not 0 <= k <= M:
                    raise ValueError(f"hmd_rows must be in [0, {M}], got {hmd_rows}")
                self.hmd_rows, rows = k, M - k
                self.W_top = nn.Parameter(torch.empty(k, N, **fk))
            self.U = nn.Parameter(torch.empty(rows, self.rank, **fk))
            self.V = nn.Parameter(torch.empty(self.rank, N, **fk))
        self.W_s = nn.Parameter(torch.empty(M, N, **fk))
        self.register_buffer("mask", torch.ones(M, N, dtype=torch.bool, device=device))
        self.bias = nn.Parameter(torch.empty(M, **fk)) if bias else None
        self.cmr = float(cmr)
        self.reset_parameters()
        if density != 1.0:
            self.set_density(density)

    # -- set-up ----------------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """nn.Linear-like scales: each path's output variance ~ that of a U(+-1/sqrt(N)) dense layer."""
        N = self.in_features
        bound = 1.0 / math.sqrt(N)
        with torch.no_grad():
            if self.structure == "kron":
                (_, n1), (_, n2) = self.kron_shape  # type: ignore[misc]
                nn.init.uniform_(self.B, -(3.0**0.25) / math.sqrt(n1), (3.0**0.25) / math.sqrt(n1))
                nn.init.uniform_(self.C, -(3.0**0.25) / math.sqrt(n2), (3.0**0.25) / math.sqrt(n2))
            elif self.structure in ("lmf", "hmd"):
                # Var(U V)_ij = rank * Var(U) * Var(V) = 1 / (3N) needs Var(U) = 1 / rank, i.e. U(+-sqrt(3 / rank))
                u = math.sqrt(3.0 / self.rank)
                nn.init.uniform_(self.U, -u, u)
                nn.init.uniform_(self.V, -bound, bound)
                if self.structure == "hmd":
                    nn.init.uniform_(self.W_top, -bound, bound)
            nn.init.uniform_(self.W_s, -bound, bound)
            self.W_s.mul_(self.mask)
            if self.bias is not None:
                nn.init.uniform_(self.bias, -bound, bound)

    @property
    def cmr_keep_prob(self) -> float:
        """Keep probability p of the CMR Bernoulli masks (eq. 12): 1 - cmr."""
        return 1.0 - self.cmr

    @cmr_keep_prob.setter
    def cmr_keep_prob(self, p: float) -> None:
        self.cmr = 1.0 - float(p)

    @property
    def cmr(self) -> float:
        return self._cmr

    @cmr.setter
    def cmr(self, rate: float) -> None:
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"CMR drop rate must be in [0, 1), got {rate}")
        self._cmr = rate

    # -- forward ---------------------------------------------------------------------------------------
    def structured_forward(self, x: torch.Tensor) -> torch.Tensor | None:
        """The structured path alone (None for structure "none"), without forming its M x N matrix."""
        if self.structure == "kron":
            (m1, n1), (m2, n2) = self.kron_shape  # type: ignore[misc]
            X = x.reshape(-1, n1, n2)
            # pick the cheaper association of B X C^T
            if m1 * n2 * (n1 + m2) <= n1 * m2 * (n2 + m1):
                Y = torch.matmul(torch.matmul(self.B, X), self.C.t())
            else:
                Y = torch.matmul(self.B, torch.matmul(X, self.C.t()))
            return Y.reshape(*x.shape[:-1], self.out_features)
        if self.structure == "lmf":
            return F.linear(F.linear(x, self.V), self.U)
        if self.structure == "hmd":
            return torch.cat([F.linear(x, self.W_top), F.linear(F.linear(x, self.V), self.U)], dim=-1)
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.structured_forward(x), F.linear(x, self.sparse_weight()))

    def combine(self, y_k: torch.Tensor | None, y_s: torch.Tensor) -> torch.Tensor:
        """Output from the two paths' outputs: CMR masks (training, cmr > 0), sum, bias.

        Lets a caller compute W_s x its own way (e.g. `DopedLSTM` applies the input columns to all time steps
        at once) with the same CMR and bias semantics as `forward`.
        """
        y = self.mix(y_k, y_s)
        return y + self.bias if self.bias is not None else y

    def mix(self, y_k: torch.Tensor | None, y_s: torch.Tensor) -> torch.Tensor:
        """The two paths' outputs summed, each under its own CMR mask in training (`combine` without the bias; a
        `DopedEmbedding` mixes its looked-up rows this way)."""
        if y_k is None:
            return y_s
        if self.training and self.cmr > 0.0:
            keep = self.cmr_keep_prob
            b1 = torch.empty_like(y_k).bernoulli_(keep)
            b2 = torch.empty_like(y_s).bernoulli_(keep)
            return (y_k * b1 + y_s * b2) / keep
        return y_k + y_s

    # -- weights ---------------------------------------------------------------------------------------
    def factors(self) -> dict[str, torch.Tensor]:
        """The structured part's parameters by their spec names (B, C | U, V | W_top, U, V)."""
        return {name: getattr(self, name) for name in FACTOR_NAMES[self.structure]}

    def structured_weight(self) -> torch.Tensor:
        """The structured part as an M x N tensor (validation only)."""
        if self.structure == "kron":
            return torch.kron(self.B, self.C)
        if self.structure == "lmf":
            return self.U @ self.V
        if self.structure == "hmd":
            return torch.cat([self.W_top, self.U @ self.V], dim=0)
        return torch.zeros_like(self.W_s)

    def sparse_weight(self) -> torch.Tensor:
        """The masked W_s as a dense M x N tensor."""
        return self.W_s * self.mask

    def dense_weight(self) -> torch.Tensor:
        """The exact M x N W = structured + W_s (validation only; forward never builds it)."""
        return self.structured_weight() + self.sparse_weight()

    @property
    def weight(self) -> torch.Tensor:
        """Read-only `dense_weight()`, for modules that read a child's ``.weight`` instead of calling it (e.g.
        nn.TransformerEncoderLayer's eval fast path). Materializes the M x N matrix on every access."""
        return self.dense_weight()

    @torch.no_grad()
    def set_density(self, density: float) -> None:
        """Magnitude-prune W_s to round(density * M * N) nonzeros of the mask, keeping the largest |W_s|.

        With `sparse_block` (r, c), whole r x c blocks are kept or pruned by their L2 norm, round(density * M * N /
        (r c)) of them (the TFLite 1x4 kernel's layout). Pruned entries of W_s are zeroed too, so a later, higher
        density regrows from zeros.
        """
        if not 0.0 <= float(density) <= 1.0:
            raise ValueError(f"density must be in [0, 1], got {density}")
        scores = self.sparse_weight().detach().abs()
        if self.sparse_block is not None:
            (r, c), (M, N) = self.sparse_block, self.W_s.shape
            scores = scores.square().reshape(M // r, r, N // c, c).sum(dim=(1, 3)).sqrt()
        k = round(float(density) * scores.numel())
        if k == scores.numel():
            self.mask.fill_(True)
        else:
            keep = torch.topk(scores.flatten(), k, sorted=False).indices
            mask = torch.zeros(scores.numel(), dtype=torch.bool, device=self.mask.device)
            mask[keep] = True
            mask = mask.view_as(scores)
            if self.sparse_block is not None:
                mask = mask.repeat_interleave(self.sparse_block[0], 0).repeat_interleave(self.sparse_block[1], 1)
            self.mask.copy_(mask.view_as(self.mask))
        self.W_s.mul_(self.mask)

    @property
    def nnz(self) -> int:
        """Entries of W_s the mask keeps."""
        return int(self.mask.sum())

    @property
    def density(self) -> float:
        return self.nnz / self.mask.numel()

    @property
    def structured_params(self) -> int:
        return int(sum(p.numel() for p in self.factors().values()))

    def compression_factor(self) -> float:
        """M*N / (structured params + nnz(W_s)): the paper's eq. 3 (weights only, bias excluded)."""
        stored = self.structured_params + self.nnz
        return float("inf") if stored == 0 else self.out_features * self.in_features / stored

    def extra_repr(self) -> str:
        parts = [
            f"in_features={self.in_features}",
            f"out_features={self.out_features}",
            f"bias={self.bias is not None}",
        ]
        parts.append(f"structure={self.structure!r}")
        if self.kron_shape is not None:
            parts.append(f"kron_shape={self.kron_shape}")
        if self.rank is not None:
            parts.append(f"rank={self.rank}")
        if self.hmd_rows is not None:
            parts.append(f"hmd_rows={self.hmd_rows}")
        if self.sparse_block is not None:
            parts.append(f"sparse_block={self.sparse_block}")
        parts.append(f"density={self.density:.4g}")
        if self.cmr:
            parts.append(f"cmr={self.cmr:g}")
        return ", ".join(parts)


def _check_block(block: Any, m: int, n: int) -> tuple[int, int] | None:
    """`sparse_block` as (rows, cols), which must tile the M x N matrix; (1, 1) means unstructured (None)."""
    if block is None:
        return None
    try:
        r, c = (int(v) for v in block)
    except (TypeError, ValueError):
        raise ValueError(f"sparse_block must be (rows, cols), got {block!r}") from None
    if r < 1 or c < 1 or m % r or n % c:
        raise ValueError(f"sparse_block {(r, c)} must tile the {m} x {n} W_s (rows divide M, cols divide N)")
    return None if (r, c) == (1, 1) else (r, c)


def doped_layers(model: nn.Module) -> list[DopedLinear]:
    """Every DopedLinear inside `model` (itself included), in module order."""
    return [m for m in model.modules() if isinstance(m, DopedLinear)]


__all__ = ["DopedLinear", "doped_layers", "STRUCTURES", "FACTOR_NAMES"]
