"""`to_tflite`: a whole `ModelSpec` -> a .tflite file (builtin ops only), wired as `dkp_deploy.signature` says."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ... import __version__
from ...errors import InputError
from ...fileio import atomic_output
from ...signature import MODES, inputs, outputs
from ...source import as_spec
from ...spec import Embedding, Linear, ModelSpec
from ..metadata import metadata, progress
from . import activation, lstm, matrix
from .graph import BATCH, MAX_FILE_BYTES, Graph, Op
from .graph import gather as gather_options


def build(spec: ModelSpec, *, mode: str = "step", quiet: bool = True) -> tuple[Graph, list[int], list[int], dict]:
    """The graph for `spec`, its signature input / output tensors and, per matrix name, its tensors by role."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if spec.is_recurrent and mode != "step":
        raise InputError(f"TFLite export is step-only: a recurrent model ({spec.arch}) converts with mode='step' "
                         f"(one time step: x_t, h, c -> y_t, h_next, c_next), not {mode!r}")
    ins, outs = inputs(spec, "step"), outputs(spec, "step")
    g = Graph()
    g.reserve(*(s.name for s in ins), *(s.name for s in outs))
    in_tensors = [g.input(s.name, s.dtype, [BATCH if d == "batch" else d for d in s.shape]) for s in ins]
    tensors: dict[str, dict] = {}

    def linear(x: int, b: Linear) -> int:
        roles: dict[str, str] = {}
        y = matrix.lower(g, x, b.weight, b.bias, b.name, roles)
        tensors[b.name] = roles
        tick(b.name)
        return y

    with progress(spec, quiet) as tick:
        if spec.arch == "mlp":
            x = in_tensors[0]
            for b in spec.blocks:
                x = linear(x, b) if isinstance(b, Linear) else activation.lower(g, x, b)
            results = [x]
        else:
            x, h, c = in_tensors
            emb = next((b for b in spec.blocks if isinstance(b, Embedding)), None)
            if emb is not None:
                table = g.const(f"{emb.name}/weight", emb.weight.astype(np.float32))
                x = g.op1(Op.GATHER, [table, x], f"{emb.name}/lookup", (BATCH, emb.weight.shape[1]),
                          gather_options(axis=0))
            y, h_next, c_next = lstm.step(g, x, h, c, spec.lstm, tensors, tick)
            if spec.arch == "lstm_lm":
                y = linear(y, spec.blocks[-1])
            results = [y, h_next, c_next]
    for t, sig in zip(results, outs):
        g.rename(t, sig.name)
    return g, in_tensors, results, tensors


def to_tflite(model_or_path: Any, path: str | os.PathLike, *, mode: str = "step", quiet: bool = False) -> Path:
    """Convert a doped model (ModelSpec, checkpoint path or torch module) to a .tflite file at `path`.

    Builtin ops only; the doping is a FULLY_CONNECTED with a random-sparse (CSR) weight tensor. Recurrent models
    export one time step (`mode="step"`, the only mode TFLite supports here). Writes atomically; returns the path.
    """
    spec, provenance = as_spec(model_or_path)
    try:
        g, ins, outs, tensors = build(spec, mode=mode, quiet=quiet)
    except InputError as e:
        source = model_or_path if isinstance(model_or_path, (str, os.PathLike)) else None
        raise (InputError(str(e), source) if e.path is None and source is not None else e) from None
    if sum(len(b) for b in g.buffers) > MAX_FILE_BYTES:
        raise InputError("model exceeds the 2 GiB limit of a single TFLite flatbuffer", path)
    meta = metadata(spec, provenance, tensors, mode="step")
    data = g.serialize(ins, outs, meta, description=f"dkp-deploy {__version__}")
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
