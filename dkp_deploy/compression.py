"""Post-training doping: turn trained dense `nn.Linear` / `nn.LSTM` layers (or whole models) into doped ones.

Beyond the paper, which trains doped networks from scratch. For each weight W (M x N):

1. structured part: for "kron" the nearest Kronecker product (Van Loan & Pitsianis 1993): rearrange W so that
   kron(B, C) becomes the rank-1 matrix vec(B) vec(C)^T, take its leading singular triple, B = sqrt(s) u,
   C = sqrt(s) v (the Frobenius-optimal B, C); for "lmf" the truncated SVD of rank `rank`; for "hmd" the first
   `hmd_rows` rows kept as they are and the truncated SVD of the rest; "none" has no structured part.
2. W_s = the largest-magnitude entries of the residual W - structured, as many as `density` (of M*N) or as
   leave the matrix at compression factor `cf` (eq. 3: M*N / (structured params + nnz)).

An LSTM's gate matrices are folded to one 4H x (I+H) matrix per layer ([W_ih, W_hh], bias b_ih + b_hh), as
`DopedLSTM` holds them. The result trains further with `dkp_deploy.train` (fine-tuning recovers accuracy).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .errors import InputError
from .kron_shape import KronShape, check_kron_shape, choose_kron_shape
from .nn.linear import DopedLinear
from .nn.lm import DopedLSTMLM
from .nn.lstm import DopedLSTM, lstm_gate_weights


def _svd(a: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(a.to(torch.float64), full_matrices=False)
    return u[:, :rank], s[:rank], vh[:rank]


def nearest_kronecker(W: torch.Tensor, kron_shape: KronShape) -> tuple[torch.Tensor, torch.Tensor]:
    """B, C minimising ||W - kron(B, C)||_F (Van Loan-Pitsianis rearrangement + rank-1 SVD), in float64."""
    (m1, n1), (m2, n2) = check_kron_shape(W.shape[0], W.shape[1], kron_shape)
    # R[(i1, j1), (i2, j2)] = W[i1*m2 + i2, j1*n2 + j2], so kron(B, C) maps to vec(B) vec(C)^T
    R = W.detach().to(torch.float64).reshape(m1, m2, n1, n2).permute(0, 2, 1, 3).reshape(m1 * n1, m2 * n2)
    u, s, vh = _svd(R, 1)
    root = s[0].sqrt()
    return (root * u[:, 0]).reshape(m1, n1), (root * vh[0]).reshape(m2, n2)


def _nnz_for(M: int, N: int, structured_params: int, cf: float | None, density: float | None) -> int:
    if density is not None:
        if not 0.0 <= density <= 1.0:
            raise InputError(f"compress: density must be in [0, 1], got {density}")
        return round(density * M * N)
    assert cf is not None
    nnz = round(M * N / cf) - structured_params
    if nnz < 0:
        raise InputError(
            f"compress: a {M} x {N} matrix cannot reach CF {cf:g}: its structured part alone stores "
            f"{structured_params} numbers (CF {M * N / structured_params:.4g}); choose another kron_shape or rank"
        )
    return min(nnz, M * N)


def dope_matrix(
    W: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    cf: float | None = None,
    density: float | None = None,
    structure: str = "kron",
    kron_shape: KronShape | None = None,
    rank: int | None = None,
    hmd_rows: int | None = None,
) -> DopedLinear:
    """A DopedLinear approximating the dense W (M x N) + bias at `cf` or `density` (see the module docstring)."""
    if (cf is None) == (density is None):
        raise InputError("compress: give exactly one of cf= and density=")
    if cf is not None and not cf > 0:
        raise InputError(f"compress: cf must be positive, got {cf}")
    M, N = W.shape
    W64 = W.detach().to(torch.float64)
    kw: dict[str, Any] = {"structure": structure}
    factors: dict[str, torch.Tensor] = {}
    if structure == "kron":
        try:
            ks = check_kron_shape(M, N, kron_shape) if kron_shape is not None else choose_kron_shape(M, N)
        except ValueError as e:
            raise InputError(f"compress: {e}") from None
        factors["B"], factors["C"] = nearest_kronecker(W64, ks)
        kw["kron_shape"] = ks
        structured = torch.kron(factors["B"], factors["C"])
    elif structure in ("lmf", "hmd"):
        if rank is None or rank < 1:
            raise InputError(f"compress: structure {structure!r} needs a positive rank")
        k = 0
        if structure == "hmd":
            k = M // 2 if hmd_rows is None else int(hmd_rows)
            factors["W_top"] = W64[:k]
            kw["hmd_rows"] = k
        u, s, vh = _svd(W64[k:], rank)
        if s.numel() < rank:  # rank above min(M - k, N): pad with zero directions
            u = torch.cat([u, u.new_zeros(u.shape[0], rank - s.numel())], 1)
            vh = torch.cat([vh, vh.new_zeros(rank - s.numel(), N)], 0)
            s = torch.cat([s, s.new_zeros(rank - s.numel())])
        root = s.sqrt()
        factors["U"], factors["V"] = u * root, root[:, None] * vh
        kw["rank"] = rank
        low = factors["U"] @ factors["V"]
        structured = torch.cat([factors["W_top"], low], 0) if structure == "hmd" else low
    elif structure == "none":
        structured = torch.zeros_like(W64)
    else:
        raise InputError(f"compress: unknown structure {structure!r} (kron, lmf, hmd, none)")
    params = sum(int(f.numel()) for f in factors.values())
    nnz = _nnz_for(M, N, params, cf, density)
    layer = DopedLinear(N, M, bias is not None, device=W.device, dtype=W.dtype, **kw)
    residual = W64 - structured
    with torch.no_grad():
        for name, f in factors.items():
            getattr(layer, name).copy_(f)
        layer.W_s.copy_(residual)
        layer.mask.fill_(True)
        layer.set_density(nnz / (M * N))
        if bias is not None:
            layer.bias.copy_(bias.detach())
    if layer.nnz != nnz:  # set_density rounds density * M * N; guard against float round-off
        raise AssertionError(f"compress: wanted {nnz} nonzeros, got {layer.nnz}")
    return layer


def _dope_lstm(lstm: nn.LSTM, opts: dict[str, Any]) -> DopedLSTM:
    try:
        gates = lstm_gate_weights(lstm)
    except InputError as e:
        raise InputError(f"compress: {e}") from None
    cells = [dope_matrix(W, b, **opts) for W, b in gates]
    return DopedLSTM.from_cells(
        cells, lstm.input_size, lstm.hidden_size, batch_first=lstm.batch_first, dropout=float(lstm.dropout)
    )


def _replace(module: nn.Module, opts: dict[str, Any], skip: frozenset[str], prefix: str) -> nn.Module:
    # MultiheadAttention reads out_proj.weight directly instead of calling it: a doped out_proj would break it
    if isinstance(module, (DopedLinear, DopedLSTM, nn.MultiheadAttention)):
        return module
    if isinstance(module, nn.Linear):
        return dope_matrix(module.weight, module.bias, **opts)
    if isinstance(module, nn.LSTM):
        return _dope_lstm(module, opts)
    for name, child in list(module.named_children()):
        path = f"{prefix}{name}"
        if path in skip:
            continue
        new = _replace(child, opts, skip, path + ".")
        if new is not child:
            setattr(module, name, new)
    return module


def compress(
    module: nn.Module,
    *,
    cf: float | None = None,
    density: float | None = None,
    kron_shape: KronShape | None = None,
    structure: str = "kron",
    rank: int | None = None,
    hmd_rows: int | None = None,
    skip: Iterable[str] = (),
) -> nn.Module:
    """A doped copy of `module` (the input is not modified).

    `nn.Linear` -> `DopedLinear`, `nn.LSTM` -> `DopedLSTM`, anything else: its children, recursively (modules
    named in `skip`, dotted paths such as ``"decoder"``, stay as they are; already doped layers and
    `nn.MultiheadAttention`, whose forward reads its projections' weights directly, too). Every
    matrix gets compression factor `cf` (so the whole model does too) or W_s density `density` -- exactly one of
    the two. `kron_shape` applies to every matrix (None: `choose_kron_shape` per matrix); `rank` / `hmd_rows`
    for "lmf" / "hmd". A `DopedLSTMLM` keeps its dense decoder and embedding, as the paper does.
    """
    if (cf is None) == (density is None):
        raise InputError("compress: give exactly one of cf= and density=")
    opts = {
        "cf": cf,
        "density": density,
        "structure": structure,
        "kron_shape": kron_shape,
        "rank": rank,
        "hmd_rows": hmd_rows,
    }
    skip_set = frozenset(skip)
    if isinstance(module, DopedLSTMLM):
        skip_set |= {"decoder"}
    out = _replace(copy.deepcopy(module), opts, skip_set, "")
    return out


__all__ = ["compress", "dope_matrix", "nearest_kronecker"]
