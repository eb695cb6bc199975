"""`to_onnx`: a native `ModelSpec` -> a hub (the same `ai.dkp::DopedMatMul` nodes and Scan bodies the general
export writes) -> `dkp_deploy.lower` -> an ONNX file, wired as `dkp_deploy.signature` says."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

from ... import __version__
from ...errors import InputError
from ...fileio import atomic_output
from ...hub.matrix import doped_matmul_node
from ...hub.recurrent import Cell, Gate, Recurrence, emit
from ...hub.schema import DOMAIN, VERSION
from ...signature import MODES, inputs, outputs
from ...source import as_spec
from ...spec import Embedding, Linear, ModelSpec
from ..metadata import metadata, progress
from . import activation, embedding
from .graph import Graph, value_info
from .matrix import SPARSE_IMPLS

DEFAULT_OPSET = 17  # onnxruntime >= 1.13 (older ARM builds included) runs it fully
OPSETS = range(17, 22)


def _sig_value_info(sig) -> onnx.ValueInfoProto:
    return value_info(sig.name, sig.dtype, sig.shape)


def _rank2(g: Graph, name: str, cols: int) -> str:
    """Record that `name` is [batch, cols] (the lowering flattens inputs of other or unknown rank)."""
    g.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", cols]))
    return name


def _recurrence(spec: ModelSpec) -> Recurrence:
    block = spec.lstm
    cells = [Cell(cat=Gate(layer.weight, layer.bias, name=f"{block.name}.{k}")) for k, layer in enumerate(block.layers)]
    return Recurrence("lstm", block.hidden_size, block.num_layers, 1, cells, block.name)


def hub(spec: ModelSpec, *, mode: str = "sequence", opset: int = DEFAULT_OPSET, quiet: bool = False) -> onnx.ModelProto:
    """The hub of a native model: every matrix one DopedMatMul (dense ones too, so validation rebuilds them)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if opset not in OPSETS:
        raise ValueError(f"opset must be in {OPSETS.start}..{OPSETS.stop - 1}, got {opset}")
    if not spec.is_recurrent:
        mode = "sequence"
    g = Graph(opset)
    ins, outs = inputs(spec, mode), outputs(spec, mode)
    g.reserve(*(s.name for s in ins), *(s.name for s in outs))

    with progress(spec, quiet) as tick:
        def matrix(x: str, b: Linear) -> str:
            y = doped_matmul_node(g, x, b.weight, b.bias, b.name)
            tick(b.name)
            return y

        if spec.arch == "mlp":
            x = "x"
            for b in spec.blocks:
                if isinstance(b, Linear):
                    x = _rank2(g, matrix(_rank2(g, x, b.in_features), b), b.out_features)
                else:
                    x = activation.lower(g, x, b)
            if x == "x":
                x = g.node("Identity", [x], "identity")
            result = [x]
        else:
            block, rec = spec.lstm, _recurrence(spec)
            emb = next((b for b in spec.blocks if isinstance(b, Embedding)), None)
            dec = spec.blocks[-1] if spec.arch == "lstm_lm" else None
            first = ins[0].name
            if mode == "step":
                feat = embedding.lower(g, first, emb, {}) if emb is not None else first
                y, h_next, c_next = emit(g, feat, "h", "c", rec, block.input_size, step=True)
                if dec is not None:
                    y = matrix(_rank2(g, y, dec.in_features), dec)
            else:
                # batch_first: one Transpose of the input (the token ids of an LM, before the embedding) and one of
                # the output; the Scans run over axis 0, which every runtime supports.
                seq = first
                if block.batch_first:
                    perm = [1, 0] if emb is not None else [1, 0, 2]
                    seq = g.node("Transpose", [first], f"{block.name}/time_major", perm=perm)
                feat = embedding.lower(g, seq, emb, {}) if emb is not None else seq
                # h0 / c0 are plain graph inputs [L, batch, H], as torch.onnx writes a state that was passed: an
                # initializer doubling as an input (ONNX's only default) is folded away by onnxsim / onnxslim.
                # `dkp_deploy.runtime.run` feeds zeros for a state left out (the `dkp.optional_inputs` entry).
                states = ["h0", "c0"]
                y, h_next, c_next = emit(g, feat, states[0], states[1], rec, block.input_size)
                if block.batch_first:
                    y = g.node("Transpose", [y], f"{block.name}/batch_major", perm=[1, 0, 2])
                if dec is not None:
                    y = matrix(y, dec)
            for k in range(block.num_layers):
                tick(f"{block.name}.{k}")
            result = [y, h_next, c_next]
        for old, sig in zip(result, outs):
            g.rename_output(old, sig.name)

    graph = g.make(f"dkp_{spec.arch}_{mode}", [_sig_value_info(s) for s in ins], [_sig_value_info(s) for s in outs])
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, VERSION)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="dkp-deploy", producer_version=__version__)
    model.ir_version = helper.find_min_ir_version_for(opsets[:1], ignore_unknown=True)
    return model


def build(
    spec: ModelSpec, *, sparse_impl: str = "custom", mode: str = "sequence", opset: int = DEFAULT_OPSET,
    quiet: bool = False, quantize: str | None = None,
) -> tuple[onnx.ModelProto, dict[str, dict]]:
    """The lowered ONNX model for `spec` and, per matrix name, the initializer names of its parts."""
    import json

    from ...lower import lower

    if sparse_impl not in SPARSE_IMPLS:
        raise ValueError(f"sparse_impl must be one of {SPARSE_IMPLS}, got {sparse_impl!r}")
    model = lower(hub(spec, mode=mode, opset=opset, quiet=quiet), sparse_impl, quantize)
    layers = json.loads({p.key: p.value for p in model.metadata_props}["dkp.layers"])
    return model, {name: info["tensors"] for name, info in layers.items()}


def to_onnx(
    model_or_path: Any,
    path: str | os.PathLike,
    *,
    sparse_impl: str = "custom",
    mode: str = "sequence",
    opset: int = DEFAULT_OPSET,
    quiet: bool = False,
    quantize: str | None = None,
) -> Path:
    """Convert a doped model (ModelSpec, checkpoint path or torch module) to an ONNX file at `path`.

    `sparse_impl`: "custom" (ai.dkp::SparseMatVec, needs the ops library), "portable" (standard ops only) or
    "dense" (folded W, the baseline). `mode`: "sequence" (Scan over time) or "step" (one time step) for
    recurrent models. `quantize="int8"`: the doped matrices in int8 (`dkp_deploy.quantize`; custom and portable);
    `"int8-dynamic"`: the same weights, and each doped matrix's input quantized to uint8 at run time.
    Writes atomically; returns the path.
    """
    spec, provenance = as_spec(model_or_path)
    model, tensors = build(spec, sparse_impl=sparse_impl, mode=mode, opset=opset, quiet=quiet, quantize=quantize)
    mode = mode if spec.is_recurrent else "sequence"
    optional = ",".join(sig.name for sig in inputs(spec, mode) if sig.optional)
    extra = {**({"optional_inputs": optional} if optional else {}), **({"quantize": quantize} if quantize else {})}
    helper.set_model_props(model, metadata(spec, provenance, tensors, mode=mode, sparse_impl=sparse_impl,
                                           opset=str(opset), **extra))
    if sparse_impl == "custom" and any(o.domain == DOMAIN for o in model.opset_import):
        from ...ops import LIBRARY_DOC

        model.doc_string = LIBRARY_DOC
    if model.ByteSize() >= 2**31 - 1:
        raise InputError("model exceeds the 2 GiB protobuf limit of a single ONNX file", path)
    with atomic_output(path) as tmp:
        onnx.save_model(model, str(tmp))
    return Path(path)
