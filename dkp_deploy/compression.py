"""Post-training doping: turn trained dense `nn.Linear` / LSTM / GRU / RNN layers (or whole models) into doped ones.

Beyond the paper, which trains doped networks from scratch. For each weight W (M x N):

1. structured part: for "kron" the nearest Kronecker product (Van Loan & Pitsianis 1993): rearrange W so that
   kron(B, C) becomes the rank-1 matrix vec(B) vec(C)^T, take its leading singular triple, B = sqrt(s) u,
   C = sqrt(s) v (the Frobenius-optimal B, C); for "lmf" the truncated SVD of rank `rank`; for "hmd" the first
   `hmd_rows` rows kept as they are and the truncated SVD of the rest; "none" has no structured part.
2. W_s = the largest-magnitude entries of the residual W - structured, as many as `density` (of M*N) or as
   leave the matrix at compression factor `cf` (eq. 3: M*N / (structured params + nnz)).

An `nn.Embedding`'s V x D table is doped the same way (a `DopedEmbedding`, structure "kron" only) when `include`
names it: embeddings are opt-in. An embedding and a decoder `nn.Linear` that share one weight (a tied LM) become
one DopedLinear, which the `DopedEmbedding` reads its rows from, so they stay tied.

An LSTM's gate matrices are folded to one 4H x (I+H) matrix per layer ([W_ih, W_hh], bias b_ih + b_hh), as
`DopedLSTM` holds them; GRU / RNN matrices W_ih, W_hh are doped separately. The result trains further with
`dkp_deploy.train` (fine-tuning recovers accuracy).
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import InputError
from .kron_shape import KronShape, check_kron_shape, choose_kron_shape
from .nn.embedding import DopedEmbedding, check_embedding_options
from .nn.gru import DopedGRU, _DopedRecurrent
from .nn.linear import DopedLinear
from .nn.lm import DopedLSTMLM
from .nn.lstm import DopedLSTM
from .nn.rnn import DopedRNN


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
        raise _Unreachable(
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
    sparse_block: tuple[int, int] | None = None,
) -> DopedLinear:
    """A DopedLinear approximating the dense W (M x N) + bias at `cf` or `density` (see the module docstring);
    `sparse_block` (r, c): W_s kept in whole r x c blocks (nnz rounded to a multiple of r c)."""
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
    if sparse_block is not None:
        r, c = sparse_block
        if M % r or N % c:
            raise _Unreachable(f"compress: sparse_block {tuple(sparse_block)} does not tile a {M} x {N} matrix")
        nnz = round(nnz / (r * c)) * r * c
        kw["sparse_block"] = tuple(sparse_block)
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


class _Unreachable(InputError):
    """A matrix the requested compression cannot reach (compress leaves it dense)."""


RECURRENT = {nn.LSTM: "LSTM", nn.GRU: "GRU", nn.RNN: "RNN"}


@dataclass
class ReportRow:
    """One module `compress` reached: what it became, or why it stayed as it was."""

    name: str
    kind: str
    shapes: list[tuple[int, int]]
    kron_shapes: list[Any] = field(default_factory=list)
    cf: float | None = None
    nnz: int | None = None
    status: str = "doped"
    reason: str = ""


@dataclass
class CompressionReport:
    """Rows of `compress`: name, kind, matrix shape(s), kron shape(s), CF reached, nnz(W_s), status, reason."""

    rows: list[ReportRow] = field(default_factory=list)

    @property
    def skipped(self) -> list[ReportRow]:
        return [r for r in self.rows if r.status != "doped"]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows]}

    def __str__(self) -> str:
        head = ("name", "kind", "shape(s)", "kron shape(s)", "CF", "nnz", "status", "reason")
        body = [
            (
                r.name or "<model>",
                r.kind,
                ", ".join(f"{m}x{n}" for m, n in r.shapes),
                ", ".join(str(k) for k in r.kron_shapes if k is not None) or "-",
                "-" if r.cf is None else f"{r.cf:.3g}",
                "-" if r.nnz is None else str(r.nnz),
                r.status,
                r.reason,
            )
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body])


def _recurrent_matrices(mod: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """The matrices a Doped* recurrent module holds, in cell order k*D + d: LSTM [W_ih, W_hh] with b_ih + b_hh;
    GRU / RNN W_ih (b_ih) then W_hh (b_hh) per cell, interleaved."""
    out: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    for k in range(mod.num_layers):
        for sfx in ("", "_reverse")[: 2 if mod.bidirectional else 1]:
            w_ih, w_hh = getattr(mod, f"weight_ih_l{k}{sfx}"), getattr(mod, f"weight_hh_l{k}{sfx}")
            b_ih = getattr(mod, f"bias_ih_l{k}{sfx}") if mod.bias else None
            b_hh = getattr(mod, f"bias_hh_l{k}{sfx}") if mod.bias else None
            if isinstance(mod, nn.LSTM):
                out.append((torch.cat([w_ih, w_hh], dim=1), None if b_ih is None else b_ih + b_hh))
            else:
                out += [(w_ih, b_ih), (w_hh, b_hh)]
    return out


def _check_embedding(mod: nn.Embedding, opts: dict[str, Any]) -> None:
    """InputError unless `mod` can become a DopedEmbedding with `opts`."""
    if opts["structure"] != "kron":
        raise InputError(f"an embedding is doped as kron(B, C) + W_s only, not structure {opts['structure']!r}")
    check_embedding_options(padding_idx=mod.padding_idx, max_norm=mod.max_norm,
                            scale_grad_by_freq=mod.scale_grad_by_freq, sparse=mod.sparse)


def _dope(mod: nn.Module, opts: dict[str, Any]) -> tuple[nn.Module, list[DopedLinear]]:
    """The doped replacement of one Linear / Embedding / LSTM / GRU / RNN and its DopedLinears; _Unreachable /
    InputError."""
    if isinstance(mod, nn.Linear):
        layer = dope_matrix(mod.weight, mod.bias, **opts)
        return layer, [layer]
    if isinstance(mod, nn.Embedding):
        _check_embedding(mod, opts)
        layer = dope_matrix(mod.weight, None, **opts)
        return DopedEmbedding.from_table(layer), [layer]
    if isinstance(mod, nn.LSTM) and mod.proj_size:
        raise InputError("nn.LSTM with proj_size has no doped counterpart")
    cells = [dope_matrix(W, b, **opts) for W, b in _recurrent_matrices(mod)]
    cfg = {"bidirectional": mod.bidirectional, "batch_first": mod.batch_first, "dropout": float(mod.dropout)}
    if isinstance(mod, nn.LSTM):
        new: nn.Module = DopedLSTM.from_cells(cells, mod.input_size, mod.hidden_size, **cfg)
    elif isinstance(mod, nn.GRU):
        new = DopedGRU.from_cells(cells[0::2], cells[1::2], mod.input_size, mod.hidden_size, **cfg)
    else:
        new = DopedRNN.from_cells(
            cells[0::2], cells[1::2], mod.input_size, mod.hidden_size, nonlinearity=mod.nonlinearity, **cfg
        )
    return new, cells


def _kind(mod: nn.Module) -> str | None:
    if isinstance(mod, nn.Linear):
        return "Linear"
    if isinstance(mod, nn.Embedding):
        return "Embedding"
    return next((k for t, k in RECURRENT.items() if isinstance(mod, t)), None)


def _shapes(mod: nn.Module) -> list[tuple[int, int]]:
    if isinstance(mod, (nn.Linear, nn.Embedding)):
        return [tuple(mod.weight.shape)]  # type: ignore[list-item]
    if isinstance(mod, nn.MultiheadAttention):
        ws = (
            [mod.in_proj_weight]
            if mod.in_proj_weight is not None
            else [mod.q_proj_weight, mod.k_proj_weight, mod.v_proj_weight]
        )
        return [tuple(w.shape) for w in [*ws, mod.out_proj.weight]]  # type: ignore[misc]
    return [tuple(W.shape) for W, _ in _recurrent_matrices(mod)]  # type: ignore[misc]


def _matches(name: str, patterns: list[str]) -> bool:
    """`name` or one of its dotted ancestors matches a pattern (so "encoder" covers "encoder.0.linear1")."""
    parts = name.split(".") if name else [""]
    names = {".".join(parts[: i + 1]) for i in range(len(parts))}
    return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)


def _walk(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Targets (Linear / Embedding / LSTM / GRU / RNN) and MultiheadAttention modules, not descending into those or
    into already doped modules."""
    if isinstance(module, (DopedLinear, DopedEmbedding, DopedLSTM, _DopedRecurrent)):
        return
    if isinstance(module, nn.MultiheadAttention) or _kind(module) is not None:
        yield prefix, module
        return
    for name, child in module.named_children():
        yield from _walk(child, f"{prefix}.{name}" if prefix else name)


def _tie_group(
    name: str, mod: nn.Module, tied: list[str], targets: dict[str, nn.Module], wanted: Any, opts: dict[str, Any]
) -> list[tuple[str, nn.Module]] | str:
    """The modules sharing `mod`'s weight, when they can become one doped matrix: Linear / Embedding targets that
    are all doped, sharing only their `weight`, at most one of them a Linear (its bias is the matrix's). Else the
    reason they stay dense."""
    first = tied[0].rpartition(".")[0] or tied[0]
    if not isinstance(mod, (nn.Linear, nn.Embedding)):
        return f"weight tied to {first}"
    group = [(name, mod)]
    for owner in tied:
        other, _, attr = owner.rpartition(".")
        m = targets.get(other)
        if attr != "weight" or not isinstance(m, (nn.Linear, nn.Embedding)) or m.weight is not mod.weight:
            return f"weight tied to {first}"
        if not wanted(other):
            return f"weight tied to {other}, which is not doped (dope both, e.g. include= naming both, to keep one " \
                   "tied matrix)"
        group.append((other, m))
    if sum(isinstance(m, nn.Linear) for _, m in group) > 1:
        return f"weight tied to {first} (several Linears share it)"
    for _, m in group:
        if isinstance(m, nn.Embedding):
            _check_embedding(m, opts)
    return group


def _dope_tied(
    mod: nn.Module, group: list[tuple[str, nn.Module]], shared: dict[int, DopedLinear], opts: dict[str, Any]
) -> tuple[nn.Module, list[DopedLinear]]:
    """`mod`'s replacement reading the group's one DopedLinear (made on first use, with the Linear's bias)."""
    key = id(mod.weight)
    if key not in shared:
        linear = next((m for _, m in group if isinstance(m, nn.Linear)), None)
        shared[key] = dope_matrix(mod.weight, None if linear is None else linear.bias, **opts)
    layer = shared[key]
    return (layer if isinstance(mod, nn.Linear) else DopedEmbedding.from_table(layer)), [layer]


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def compress(
    model: nn.Module,
    *,
    cf: float | None = None,
    density: float | None = None,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    strict: bool = False,
    structure: str = "kron",
    kron_shape: KronShape | None = None,
    rank: int | None = None,
    hmd_rows: int | None = None,
    sparse_block: tuple[int, int] | None = None,
    return_report: bool = False,
) -> nn.Module | tuple[nn.Module, CompressionReport]:
    """A doped copy of `model` (the input is never modified), and with ``return_report`` its `CompressionReport`.

    Every `nn.Linear` -> `DopedLinear`, `nn.LSTM` -> `DopedLSTM`, `nn.GRU` -> `DopedGRU`, `nn.RNN` -> `DopedRNN`
    (bidirectional included) reached through the children, each matrix at compression factor `cf` or W_s density
    `density` (exactly one). `include` / `exclude`: fnmatch patterns over dotted module names (a name matches if
    it or an ancestor does); excluded or not-included modules stay as they are. `nn.Embedding` -> `DopedEmbedding`
    (kron only) only where `include` names it (embeddings are opt-in). Modules sharing a weight (a decoder tied to
    the embedding) that are all doped become one DopedLinear, so they stay tied. Left dense and reported, with a
    UserWarning each (an InputError naming the module if ``strict``): matrices that cannot reach `cf` (or do not
    fit `kron_shape`), modules whose weight is tied to a module left dense (or to two Linears), embeddings with
    padding_idx / max_norm / sparse gradients, nn.LSTM with proj_size, and nn.MultiheadAttention (its forward
    reads its projections' weights). A `DopedLSTMLM` keeps its dense decoder.
    `kron_shape` applies to every matrix (None: `choose_kron_shape` each); `rank` / `hmd_rows` for lmf / hmd.
    `sparse_block=(1, 4)`: every W_s kept in 1 x 4 blocks (TFLite's fast sparse kernel; a matrix the block does not
    tile stays dense, reported).
    """
    if (cf is None) == (density is None):
        raise InputError("compress: give exactly one of cf= and density=")
    if cf is not None and not cf > 0:
        raise InputError(f"compress: cf must be positive, got {cf}")
    if density is not None and not 0.0 <= density <= 1.0:
        raise InputError(f"compress: density must be in [0, 1], got {density}")
    if structure not in ("kron", "lmf", "hmd", "none"):
        raise InputError(f"compress: unknown structure {structure!r} (kron, lmf, hmd, none)")
    if structure in ("lmf", "hmd") and (rank is None or rank < 1):
        raise InputError(f"compress: structure {structure!r} needs a positive rank")
    opts = {
        "cf": cf,
        "density": density,
        "structure": structure,
        "kron_shape": kron_shape,
        "rank": rank,
        "hmd_rows": hmd_rows,
        "sparse_block": sparse_block,
    }
    inc = None if include is None else [include] if isinstance(include, str) else list(include)
    exc = [] if exclude is None else [exclude] if isinstance(exclude, str) else list(exclude)
    out = copy.deepcopy(model)
    if isinstance(out, DopedLSTMLM):
        exc.append("decoder")  # the paper keeps the LM's decoder dense
    # parameter identity -> every dotted name it has (deepcopy keeps sharing), to find tied weights
    owners: dict[int, list[str]] = {}
    for pname, p in out.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(pname)
    report = CompressionReport()

    def skip(row: ReportRow, reason: str) -> None:
        if strict:
            raise InputError(f"compress: {row.name or '<model>'} ({row.kind}): {reason}")
        row.status, row.reason = "skipped", reason
        report.rows.append(row)
        warnings.warn(f"compress: {row.name or '<model>'} ({row.kind}) left dense: {reason}", UserWarning, stacklevel=3)

    targets = dict(_walk(out))  # name -> module as found (before any is replaced)

    def wanted(name: str) -> bool:
        if inc is None and isinstance(targets[name], nn.Embedding):
            return False  # embeddings are opt-in: only an include= pattern that names them dopes them
        return not _matches(name, exc) and (inc is None or _matches(name, inc))

    shared: dict[int, DopedLinear] = {}  # id of a tied weight -> the one DopedLinear every module sharing it uses
    for name, mod in targets.items():
        if isinstance(mod, nn.Embedding) and inc is None:
            continue  # not a target unless include= names it: not reported either
        kind = _kind(mod) or type(mod).__name__
        row = ReportRow(name, kind, _shapes(mod))
        if not wanted(name):
            # asked for by the caller: reported, but neither a warning nor a strict error
            row.status, row.reason = "skipped", "excluded"
            report.rows.append(row)
            continue
        if isinstance(mod, nn.MultiheadAttention):
            skip(row, "nn.MultiheadAttention's forward reads its projection weights directly")
            continue
        own = {f"{name}.{pn}" if name else pn for pn, _ in mod.named_parameters(remove_duplicate=False)}
        tied = [o for _, p in mod.named_parameters() for o in owners[id(p)] if o not in own]
        try:
            if tied:
                group = _tie_group(name, mod, tied, targets, wanted, opts)
                if isinstance(group, str):
                    skip(row, group)
                    continue
                new, cells = _dope_tied(mod, group, shared, opts)
                row.reason = "tied to " + ", ".join(n for n, _ in group if n != name) + ": one doped matrix"
            else:
                new, cells = _dope(mod, opts)
        except InputError as e:
            skip(row, str(e).removeprefix("compress: "))
            continue
        stored = sum(c.structured_params + c.nnz for c in cells)
        row.kron_shapes = [c.kron_shape for c in cells]
        row.nnz = sum(c.nnz for c in cells)
        row.cf = float("inf") if stored == 0 else sum(c.in_features * c.out_features for c in cells) / stored
        report.rows.append(row)
        if name:
            _set(out, name, new)
        else:
            out = new
    return (out, report) if return_report else out


__all__ = ["compress", "dope_matrix", "nearest_kronecker", "CompressionReport", "ReportRow"]
