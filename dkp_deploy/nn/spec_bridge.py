"""Torch modules <-> the framework-neutral `ModelSpec` (`to_spec`, `from_spec`).

Mapping:

- `DopedLinear` -> ``Linear`` block with a `DopedMatrix` of its structure (factors B, C | U, V | W_top, U, V as
  float32) and W_s as a float32/int32 `CSR` of the *masked* W_s: one CSR entry per kept mask position (an
  explicitly kept zero stays an entry, so nnz == layer.nnz); no W_s (``sparse=None``) when the mask is empty.
- `nn.Linear` -> ``Linear`` block with a ``"dense"`` matrix.
- activation modules (ReLU, Tanh, Sigmoid, GELU exact, Identity) -> ``Activation`` blocks.
- `DopedLSTM` / `nn.LSTM` -> one ``LSTM`` block (arch ``"lstm"``); each layer's bias is torch's b_ih + b_hh.
- `DopedLSTMLM` -> ``Embedding``, ``LSTM``, ``Linear`` (dense decoder) blocks (arch ``"lstm_lm"``).

``spec.config`` records the module class, dropout, tie_weights and each doped layer's CMR rate, so that
``from_spec(to_spec(m))`` rebuilds the same class with bit-identical parameters (hence identical outputs).
`from_spec` returns the module in eval mode.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..spec import CSR, LSTM, Activation, DopedMatrix, Embedding, Linear, LSTMLayer, ModelSpec
from .linear import DopedLinear
from .lm import DopedLSTMLM
from .lstm import DopedLSTM, lstm_gate_weights
from .mlp import DopedMLP, activation_kind, activation_module

SUPPORTED = "DopedLinear, nn.Linear, DopedMLP / nn.Sequential of those and activations, DopedLSTM, nn.LSTM, DopedLSTMLM"


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().copy()


def doped_matrix(layer: DopedLinear) -> DopedMatrix:
    """The spec matrix of one DopedLinear."""
    mask = layer.mask.detach().cpu().numpy()
    sparse = CSR.from_mask(_np(layer.W_s), mask) if mask.any() else None
    factors = {name: _np(p) for name, p in layer.factors().items()}
    return DopedMatrix((layer.out_features, layer.in_features), layer.structure, factors, sparse)


def dense_matrix(weight: torch.Tensor) -> DopedMatrix:
    return DopedMatrix(tuple(weight.shape), "dense", {"W": _np(weight)})


def _layer_config(layer: DopedLinear) -> dict[str, Any]:
    """What a DopedLinear keeps in the checkpoint beyond its tensors (format version 2 added sparse_block)."""
    cfg: dict[str, Any] = {"cmr": layer.cmr}
    if layer.sparse_block is not None:
        cfg["sparse_block"] = list(layer.sparse_block)
    return cfg


def _linear_block(name: str, layer: nn.Module, layer_cfg: dict[str, Any]) -> Linear:
    bias = None if layer.bias is None else _np(layer.bias)
    if isinstance(layer, DopedLinear):
        layer_cfg[name] = _layer_config(layer)
        return Linear(name, doped_matrix(layer), bias)
    return Linear(name, dense_matrix(layer.weight), bias)


def _lstm_block(lstm: nn.Module, name: str, layer_cfg: dict[str, Any]) -> LSTM:
    if isinstance(lstm, DopedLSTM):
        if lstm.bidirectional:  # the spec (and the converters) hold one direction per layer
            raise InputError("to_spec: a bidirectional DopedLSTM has no model spec (unidirectional only)")
        layers = []
        for k, cell in enumerate(lstm.cells):
            layer_cfg[f"{name}.{k}"] = _layer_config(cell)
            bias = _np(cell.bias) if cell.bias is not None else np.zeros(cell.out_features, np.float32)
            layers.append(LSTMLayer(doped_matrix(cell), bias))
        return LSTM(name, lstm.input_size, lstm.hidden_size, layers, batch_first=lstm.batch_first)
    try:
        gates = lstm_gate_weights(lstm)
    except InputError as e:
        raise InputError(f"to_spec: {e}") from None
    zeros = np.zeros(4 * lstm.hidden_size, np.float32)
    layers = [LSTMLayer(dense_matrix(w), zeros if b is None else _np(b)) for w, b in gates]
    return LSTM(name, lstm.input_size, lstm.hidden_size, layers, batch_first=lstm.batch_first)


def to_spec(module: nn.Module) -> ModelSpec:
    """The `ModelSpec` of a supported torch module (see the module docstring); InputError for anything else."""
    layer_cfg: dict[str, Any] = {}
    if isinstance(module, DopedLSTMLM):
        blocks = [
            Embedding("embedding", _np(module.embedding.weight)),
            _lstm_block(module.lstm, "lstm", layer_cfg),
            _linear_block("decoder", module.decoder, layer_cfg),
        ]
        config = {
            "module": "DopedLSTMLM",
            "tie_weights": module.tie_weights,
            "dropout": module.dropout,
            "lstm_dropout": module.lstm.dropout,
        }
        arch = "lstm_lm"
    elif isinstance(module, (DopedLSTM, nn.LSTM)):
        blocks = [_lstm_block(module, "lstm", layer_cfg)]
        config = {"module": "DopedLSTM" if isinstance(module, DopedLSTM) else "LSTM", "dropout": float(module.dropout)}
        arch = "lstm"
    elif isinstance(module, (DopedLinear, nn.Linear)):
        blocks = [_linear_block("fc", module, layer_cfg)]
        config = {"module": "DopedLinear" if isinstance(module, DopedLinear) else "Linear"}
        arch = "mlp"
    elif isinstance(module, nn.Sequential):
        blocks = []
        for name, child in module.named_children():
            if isinstance(child, (DopedLinear, nn.Linear)):
                blocks.append(_linear_block(name, child, layer_cfg))
            elif (kind := activation_kind(child)) is not None:
                blocks.append(Activation(name, kind))
            else:
                raise InputError(
                    f"to_spec: {type(module).__name__} item {name!r} is a {type(child).__name__}; an MLP spec holds "
                    "DopedLinear, nn.Linear and ReLU/Tanh/Sigmoid/GELU/Identity only"
                )
        if not any(isinstance(b, Linear) for b in blocks):
            raise InputError(f"to_spec: {type(module).__name__} holds no linear layer")
        config = {"module": "DopedMLP" if isinstance(module, DopedMLP) else "Sequential"}
        arch = "mlp"
    else:
        raise InputError(f"to_spec: cannot express a {type(module).__name__} as a model spec (supported: {SUPPORTED})")
    config["layers"] = layer_cfg
    spec = ModelSpec(arch, blocks, config)
    spec.check()
    return spec


# -- spec -> torch ------------------------------------------------------------------------------------
def doped_linear_from_matrix(
    matrix: DopedMatrix, bias: np.ndarray | None, *, cmr: float = 0.0, sparse_block: Any = None
) -> DopedLinear:
    """A DopedLinear holding exactly `matrix` (a "dense" matrix becomes structure "none" with a full mask)."""
    M, N = matrix.shape
    f = matrix.factors
    kwargs: dict[str, Any] = {"structure": "none" if matrix.structure == "dense" else matrix.structure,
                              "sparse_block": sparse_block}
    if matrix.structure == "kron":
        kwargs["kron_shape"] = matrix.kron_shape
    elif matrix.structure in ("lmf", "hmd"):
        kwargs["rank"] = int(f["U"].shape[1])
        if matrix.structure == "hmd":
            kwargs["hmd_rows"] = int(f["W_top"].shape[0])
    layer = DopedLinear(N, M, bias is not None, cmr=cmr, **kwargs)
    with torch.no_grad():
        for name, p in layer.factors().items():
            p.copy_(torch.from_numpy(np.asarray(f[name], dtype=np.float32)))
        if matrix.structure == "dense":
            layer.W_s.copy_(torch.from_numpy(np.asarray(f["W"], dtype=np.float32)))
            layer.mask.fill_(True)
        elif matrix.sparse is None:
            layer.W_s.zero_()
            layer.mask.fill_(False)
        else:
            csr = matrix.sparse
            rows = np.repeat(np.arange(M), np.diff(csr.row_ptr.astype(np.int64)))
            cols = csr.col_idx.astype(np.int64)
            ws = np.zeros((M, N), dtype=np.float32)
            ws[rows, cols] = csr.values
            mask = np.zeros((M, N), dtype=bool)
            mask[rows, cols] = True
            layer.W_s.copy_(torch.from_numpy(ws))
            layer.mask.copy_(torch.from_numpy(mask))
        if bias is not None:
            layer.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32)))
    return layer


def _layer_kwargs(layer_cfg: dict[str, Any], name: str) -> dict[str, Any]:
    cfg = layer_cfg.get(name, {}) or {}
    block = cfg.get("sparse_block")
    return {"cmr": cfg.get("cmr", 0.0), "sparse_block": tuple(block) if block else None}


def _linear_from_block(block: Linear, layer_cfg: dict[str, Any]) -> nn.Module:
    w = block.weight
    if w.structure != "dense":
        return doped_linear_from_matrix(w, block.bias, **_layer_kwargs(layer_cfg, block.name))
    M, N = w.shape
    layer = nn.Linear(N, M, bias=block.bias is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.asarray(w.factors["W"], dtype=np.float32)))
        if block.bias is not None:
            layer.bias.copy_(torch.from_numpy(np.asarray(block.bias, dtype=np.float32)))
    return layer


def _lstm_from_block(block: LSTM, config: dict[str, Any], layer_cfg: dict[str, Any]) -> nn.Module:
    dropout = float(config.get("lstm_dropout", config.get("dropout", 0.0)))
    I, H = block.input_size, block.hidden_size
    all_dense = all(layer.weight.structure == "dense" for layer in block.layers)
    if config.get("module") == "LSTM" and all_dense:
        lstm = nn.LSTM(I, H, block.num_layers, batch_first=block.batch_first, dropout=dropout)
        with torch.no_grad():
            for k, layer in enumerate(block.layers):
                w = torch.from_numpy(np.asarray(layer.weight.factors["W"], dtype=np.float32))
                n_in = I if k == 0 else H
                getattr(lstm, f"weight_ih_l{k}").copy_(w[:, :n_in])
                getattr(lstm, f"weight_hh_l{k}").copy_(w[:, n_in:])
                getattr(lstm, f"bias_ih_l{k}").copy_(torch.from_numpy(np.asarray(layer.bias, dtype=np.float32)))
                getattr(lstm, f"bias_hh_l{k}").zero_()
        return lstm
    cells = [doped_linear_from_matrix(layer.weight, layer.bias, **_layer_kwargs(layer_cfg, f"{block.name}.{k}"))
             for k, layer in enumerate(block.layers)]
    return DopedLSTM.from_cells(cells, I, H, batch_first=block.batch_first, dropout=dropout)


def from_spec(spec: ModelSpec) -> nn.Module:
    """The torch module a spec describes (the class `to_spec` recorded in ``spec.config``), in eval mode."""
    spec.check()
    config = spec.config or {}
    layer_cfg = config.get("layers", {}) or {}
    module: nn.Module
    if spec.arch == "mlp":
        items: OrderedDict[str, nn.Module] = OrderedDict()
        for b in spec.blocks:
            items[b.name] = _linear_from_block(b, layer_cfg) if isinstance(b, Linear) else activation_module(b.kind)
        kind = config.get("module")
        if kind in ("DopedLinear", "Linear") and len(items) == 1:
            module = next(iter(items.values()))
        elif kind == "Sequential":
            module = nn.Sequential(items)
        else:
            module = DopedMLP.from_modules(items)
    elif spec.arch == "lstm":
        module = _lstm_from_block(spec.blocks[0], config, layer_cfg)
    else:
        emb, lstm_block, dec = spec.blocks
        V, E = emb.weight.shape
        tie = bool(config.get("tie_weights", False))
        if dec.weight.structure != "dense":
            raise InputError(f"lstm_lm decoder {dec.name!r} must be dense, got {dec.weight.structure!r}")
        if tie and not np.array_equal(dec.weight.factors["W"], emb.weight):
            raise InputError("lstm_lm: config says tie_weights but the decoder weight differs from the embedding")
        lm = DopedLSTMLM(
            V,
            E,
            lstm_block.hidden_size,
            lstm_block.num_layers,
            tie_weights=tie,
            dropout=float(config.get("dropout", 0.0)),
            batch_first=lstm_block.batch_first,
            structure="none",
        )
        lm.lstm = _lstm_from_block(lstm_block, config, layer_cfg)
        with torch.no_grad():
            lm.embedding.weight.copy_(torch.from_numpy(np.asarray(emb.weight, dtype=np.float32)))
            if not tie:
                lm.decoder.weight.copy_(torch.from_numpy(np.asarray(dec.weight.factors["W"], dtype=np.float32)))
            if dec.bias is not None:
                lm.decoder.bias.copy_(torch.from_numpy(np.asarray(dec.bias, dtype=np.float32)))
            else:
                lm.decoder.bias = None
        module = lm
    return module.eval()


__all__ = ["to_spec", "from_spec", "doped_matrix", "dense_matrix", "doped_linear_from_matrix"]
