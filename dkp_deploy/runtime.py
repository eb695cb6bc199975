"""onnxruntime sessions for exported files: the ops library registered only where the graph needs it.

Session defaults are chosen for edge inference at batch 1: one intra-op thread (``threads``), sequential
execution, all graph optimisations (constant folding turns the portable impl's row index into a constant,
MatMul weights are pre-packed), and ORT's own log silenced (errors reach the caller as exceptions anyway).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import InputError
from .fileio import existing_file

DKP_DOMAIN = "ai.dkp"


OPSET_VERSION = 1  # the ai.dkp opset this package implements
# the ai.dkp ops a lowered file may hold, and their attributes
_LOWERED_OPS: dict[str, set[str]] = {"SparseMatVec": set(), "SparseMatVecInt8": set(), "SparseMatVecInteger": set(),
                                     "LSTMCell": set()}


def check_dkp_domain(model: Any) -> None:
    """Refuse an ai.dkp opset version or node this package does not implement (onnxruntime's custom-op API cannot
    see either: it would run such a file as if it were opset 1)."""
    for o in model.opset_import:
        if o.domain == DKP_DOMAIN and o.version != OPSET_VERSION:
            raise InputError(f"the file imports ai.dkp opset {o.version}; this dkp-deploy implements opset "
                             f"{OPSET_VERSION}")
    for n in _nodes(model.graph):
        if n.domain == DKP_DOMAIN:
            label = f"ai.dkp::{n.op_type} node {n.name or n.output[0]!r}"
            if n.op_type not in _LOWERED_OPS:
                hint = " (a hub node: lower the file with dkp-convert)" if n.op_type == "DopedMatMul" else ""
                raise InputError(f"{label}: not an op onnxruntime can run{hint}")
            unknown = sorted({a.name for a in n.attribute} - _LOWERED_OPS[n.op_type])
            if unknown:
                raise InputError(f"{label}: unknown attribute(s) {', '.join(unknown)}")


def _nodes(graph: Any):
    """Every node of `graph` and of its subgraphs (Scan bodies), depth first (deploy side: onnx and numpy only)."""
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.g.node:
                yield from _nodes(a.g)


def uses_dkp_ops(path: str | os.PathLike) -> bool:
    """Whether the ONNX file imports the ai.dkp domain (its custom ops); a version or node of that domain this
    package does not implement is an `InputError`."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    uses = any(o.domain == DKP_DOMAIN for o in model.opset_import)
    if uses:
        check_dkp_domain(model)
    return uses


def session(path: str | os.PathLike, threads: int = 1, **opts: Any):
    """An `onnxruntime.InferenceSession` for `path` on the CPU.

    `threads` sets intra_op_num_threads; `opts` are set as `onnxruntime.SessionOptions` attributes
    (e.g. ``graph_optimization_level``, ``enable_profiling``). A file ORT cannot load is an `InputError`.
    """
    import onnxruntime as ort

    p = existing_file(path)
    try:
        needs_ops = uses_dkp_ops(p)
    except InputError as e:
        raise InputError(str(e), p) from None
    except Exception as e:
        raise InputError(f"not an ONNX file ({type(e).__name__})", p) from None
    attrs: dict[str, Any] = {
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
        "execution_mode": ort.ExecutionMode.ORT_SEQUENTIAL,
        "graph_optimization_level": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "log_severity_level": 4,
    }
    attrs.update(opts)
    if needs_ops:
        from .ops import session_options

        options = session_options(**attrs)
    else:
        options = ort.SessionOptions()
        for name, value in attrs.items():
            setattr(options, name, value)
    try:
        return ort.InferenceSession(str(p), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"onnxruntime cannot load the file: {msg}", p) from None


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
               "tensor(double)": np.float64}


def _zeros_for(sess: Any, name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Zeros for the left-out input `name`, its symbolic dims ("batch") read off the fed inputs' shapes."""
    sizes: dict[str, int] = {}
    for i in sess.get_inputs():
        if i.name in feeds:
            for d, n in zip(i.shape, np.shape(feeds[i.name])):
                if isinstance(d, str):
                    sizes[d] = int(n)
    want = next(i for i in sess.get_inputs() if i.name == name)
    shape = [d if isinstance(d, int) else sizes.get(d) for d in want.shape]
    if any(d is None for d in shape):
        raise InputError(f"input {name!r} was left out and its shape {want.shape} cannot be read off the other inputs")
    return np.zeros(shape, dtype=_ORT_DTYPES.get(want.type, np.float32))


def run(path_or_session: Any, feeds: dict[str, np.ndarray], *, threads: int = 1) -> dict[str, np.ndarray]:
    """Run a file (path) or an existing session on `feeds`; returns every output by name.

    Feeds are cast to the graph's input dtypes; names the graph does not take raise `InputError`. Inputs the file
    lists as optional (its ``dkp.optional_inputs`` metadata: h0 / c0 of a native sequence graph) may be left out:
    they are fed zeros, as torch's nn.LSTM assumes.
    """
    sess = path_or_session if hasattr(path_or_session, "run") else session(path_or_session, threads=threads)
    declared = {i.name: i.type for i in sess.get_inputs()}
    declared.update({i.name: i.type for i in sess.get_overridable_initializers()})
    unknown = sorted(set(feeds) - set(declared))
    if unknown:
        raise InputError(f"the graph has no input(s) {', '.join(unknown)} (inputs: {', '.join(declared)})")
    cast = {k: np.ascontiguousarray(v, dtype=_ORT_DTYPES.get(declared[k])) for k, v in feeds.items()}
    if any(i.name not in cast for i in sess.get_inputs()):  # read the metadata only when something is left out
        optional = sess.get_modelmeta().custom_metadata_map.get("dkp.optional_inputs", "")
        for name in filter(None, optional.split(",")):
            if name in declared and name not in cast:
                cast[name] = _zeros_for(sess, name, cast)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, cast)))
