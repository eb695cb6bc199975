"""The torch side of export: `dkp::doped_linear`, a custom op that keeps a doped layer whole through
torch.export, its torch.onnx translation (to the transient `ai.dkp::DopedLinearRef`), and `capture`, which
routes every `DopedLinear` of a model through the op while exporting.
"""

from __future__ import annotations

import contextlib
import json
import types
from collections.abc import Iterator

import torch
from torch import nn

from ..nn.embedding import DopedEmbedding
from ..nn.linear import DopedLinear
from .embedding import embedding_forward, named_modules
from .embedding import translation as embedding_translation


@torch.library.custom_op("dkp::recurrent", mutates_args=())
def recurrent(
    x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, tensors: list[torch.Tensor], config: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A whole recurrent module on time-major x [T, B, I] with states [L*D, B, H] (c0 unused but by LSTMs).

    Only its shapes matter (export translates it to Scan bodies); run eagerly it returns zeros."""
    cfg = json.loads(config)
    t, b = x.shape[0], x.shape[1]
    return x.new_zeros(t, b, cfg["directions"] * cfg["hidden_size"]), torch.zeros_like(h0), torch.zeros_like(c0)


@recurrent.register_fake
def _(x, h0, c0, tensors, config):
    cfg = json.loads(config)
    return x.new_empty(x.shape[0], x.shape[1], cfg["directions"] * cfg["hidden_size"]), torch.empty_like(h0), \
        torch.empty_like(c0)


def _matrix_tensors(prefix: str, module: nn.Module | None, weight=None, bias=None):
    """(roles, tensors) of one matrix: a DopedLinear's factors, W_s, mask, bias; or a dense weight (+ bias)."""
    if isinstance(module, DopedLinear):
        roles = [f"{prefix}.{r}" for r in module.factors()] + [f"{prefix}.W_s", f"{prefix}.mask"]
        tensors = [*module.factors().values(), module.W_s, module.mask]
        if module.bias is not None:
            roles.append(f"{prefix}.bias")
            tensors.append(module.bias)
        return roles, tensors, {"structure": module.structure, "shape": [module.out_features, module.in_features]}
    roles, tensors = [f"{prefix}.W"], [weight]
    if bias is not None:
        roles.append(f"{prefix}.bias")
        tensors.append(bias)
    return roles, tensors, {"structure": "dense", "shape": list(weight.shape)}


def _recurrent_parts(module: nn.Module) -> tuple[str, list[str], list[torch.Tensor], dict]:
    """kind, roles, tensors and per-matrix info of a recurrent module, cells indexed k*D + d."""
    from ..nn.gru import DopedGRU
    from ..nn.lstm import DopedLSTM
    from ..nn.rnn import DopedRNN

    roles: list[str] = []
    tensors: list[torch.Tensor] = []
    matrices: dict[str, dict] = {}
    D = 2 if module.bidirectional else 1

    def add(prefix, mod=None, weight=None, bias=None):
        r, t, info = _matrix_tensors(prefix, mod, weight, bias)
        roles.extend(r)
        tensors.extend(t)
        matrices[prefix] = info

    if isinstance(module, DopedLSTM):
        for i, cell in enumerate(module.cells):
            add(f"{i}.cat", cell)
        return "lstm", roles, tensors, matrices
    if isinstance(module, (DopedGRU, DopedRNN)):
        kind = "gru" if isinstance(module, DopedGRU) else f"rnn_{module.nonlinearity}"
        for i, (ih, hh) in enumerate(zip(module.cells_ih, module.cells_hh)):
            add(f"{i}.ih", ih)
            add(f"{i}.hh", hh)
        return kind, roles, tensors, matrices
    if module.proj_size if isinstance(module, nn.LSTM) else False:
        raise ValueError("nn.LSTM with proj_size does not export")
    kind = {"LSTM": "lstm", "GRU": "gru"}.get(module.mode, "rnn_tanh" if module.mode == "RNN_TANH" else "rnn_relu")
    for k in range(module.num_layers):
        for d in range(D):
            sfx = f"l{k}" + ("_reverse" if d else "")
            b_ih = getattr(module, f"bias_ih_{sfx}") if module.bias else None
            b_hh = getattr(module, f"bias_hh_{sfx}") if module.bias else None
            add(f"{k * D + d}.ih", weight=getattr(module, f"weight_ih_{sfx}"), bias=b_ih)
            add(f"{k * D + d}.hh", weight=getattr(module, f"weight_hh_{sfx}"), bias=b_hh)
    return kind, roles, tensors, matrices


def _recurrent_forward(name: str):
    def forward(self: nn.Module, input: torch.Tensor, hx=None):
        kind, roles, tensors, matrices = _recurrent_parts(self)
        D, H, L = 2 if self.bidirectional else 1, self.hidden_size, self.num_layers
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        lstm = kind == "lstm"
        if hx is None:
            h0 = x.new_zeros(L * D, x.shape[1], H)
            c0 = h0
        else:
            h0, c0 = hx if lstm else (hx, hx)
            if unbatched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        config = json.dumps({"name": name, "kind": kind, "hidden_size": H, "num_layers": L, "directions": D,
                             "input_size": self.input_size, "roles": roles, "matrices": matrices})
        y, hn, cn = torch.ops.dkp.recurrent(x, h0, c0, tensors, config)
        if unbatched:
            y, hn, cn = y.squeeze(1), hn.squeeze(1), cn.squeeze(1)
        elif self.batch_first:
            y = y.transpose(0, 1)
        return (y, (hn, cn)) if lstm else (y, hn)

    return forward


def _is_recurrent(module: nn.Module) -> bool:
    from ..nn.gru import DopedGRU
    from ..nn.lstm import DopedLSTM
    from ..nn.rnn import DopedRNN

    return isinstance(module, (nn.RNNBase, DopedLSTM, DopedGRU, DopedRNN))


@torch.library.custom_op("dkp::doped_linear", mutates_args=())
def doped_linear(x: torch.Tensor, tensors: list[torch.Tensor], config: str) -> torch.Tensor:
    """y = x @ (structured + W_s * mask)^T (+ bias); `config` (JSON) names the role of each of `tensors`."""
    cfg = json.loads(config)
    parts = dict(zip(cfg["roles"], tensors))
    structure = cfg["structure"]
    w = parts["W_s"] * parts["mask"]
    if structure == "kron":
        w = w + torch.kron(parts["B"], parts["C"])
    elif structure == "lmf":
        w = w + parts["U"] @ parts["V"]
    elif structure == "hmd":
        w = w + torch.cat([parts["W_top"], parts["U"] @ parts["V"]], 0)
    y = torch.nn.functional.linear(x, w.to(x.dtype), parts["bias"].to(x.dtype) if "bias" in parts else None)
    return y


@doped_linear.register_fake
def _(x: torch.Tensor, tensors: list[torch.Tensor], config: str) -> torch.Tensor:
    m = json.loads(config)["shape"][0]
    return x.new_empty(*x.shape[:-1], m)


def _doped_forward(name: str):
    def forward(self: DopedLinear, x: torch.Tensor) -> torch.Tensor:
        roles = [*self.factors(), "W_s", "mask"] + (["bias"] if self.bias is not None else [])
        tensors = [*self.factors().values(), self.W_s, self.mask] + ([self.bias] if self.bias is not None else [])
        config = json.dumps({"name": name, "structure": self.structure,
                             "shape": [self.out_features, self.in_features], "roles": roles})
        return torch.ops.dkp.doped_linear(x, tensors, config)

    return forward


@contextlib.contextmanager
def capture(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every DopedLinear of `model` runs as one `dkp::doped_linear` call, every DopedEmbedding as
    one `dkp::doped_embedding` call and every recurrent module (nn.LSTM / GRU / RNN, doped or not) as one
    `dkp::recurrent` call (export keeps each whole); nn.MultiheadAttention's fused fast path is off (it would read
    weights past the modules)."""
    patched = []
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        for name, module in named_modules(model):
            if isinstance(module, DopedEmbedding):  # one dkp::doped_embedding call (export/embedding.py)
                module.forward = types.MethodType(embedding_forward(name or "embedding"), module)
                patched.append(module)
            elif isinstance(module, DopedLinear):
                module.forward = types.MethodType(_doped_forward(name or "linear"), module)
                patched.append(module)
            elif _is_recurrent(module):
                module.forward = types.MethodType(_recurrent_forward(name or "rnn"), module)
                patched.append(module)
        yield model
    finally:
        for module in patched:
            del module.forward
        torch.backends.mha.set_fastpath_enabled(fastpath)


def translation_table() -> dict:
    """torch.onnx's custom_translation_table entries for the dkp ops."""
    import onnxscript

    from ..hub.schema import DOMAIN, VERSION, register_schemas

    register_schemas()
    dkp = onnxscript.values.Opset(DOMAIN, VERSION)

    def doped_linear_ref(x, tensors, config: str):
        return dkp.DopedLinearRef(x, *tensors, config=config)

    def recurrent_ref(x, h0, c0, tensors, config: str):
        return dkp.RecurrentRef(x, h0, c0, *tensors, config=config, _outputs=3)  # one variadic input

    return {torch.ops.dkp.doped_linear.default: doped_linear_ref, torch.ops.dkp.recurrent.default: recurrent_ref,
            **embedding_translation(dkp)}


__all__ = ["capture", "doped_linear", "recurrent", "translation_table"]
