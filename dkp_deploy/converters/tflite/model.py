"""`to_tflite`: a native `ModelSpec` -> the same hub as `dkp-convert` to ONNX writes (`converters.onnx.model.hub`)
-> the hub's TFLite translation (`converters.tflite.hub`): one TFLite writer for native and exported models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ... import __version__
from ...errors import InputError
from ...fileio import atomic_output
from ...signature import MODES
from ...source import as_spec
from ..metadata import metadata
from .graph import MAX_FILE_BYTES
from .hub import translate


def to_tflite(model_or_path: Any, path: str | os.PathLike, *, mode: str = "step", quiet: bool = False) -> Path:
    """Convert a doped model (ModelSpec, checkpoint path or torch module) to a .tflite file at `path`.

    Builtin ops only; W_s is a FULLY_CONNECTED with a sparse weight (CSR, or 1 x 4 blocks where W_s is in blocks).
    Recurrent models: `mode="step"` (one time step: x_t, h, c -> y_t, h_next, c_next) or `"sequence"` (a WHILE
    over T, as torch.nn.LSTM). Writes atomically; returns the path.
    """
    from ..onnx.model import hub

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    spec, provenance = as_spec(model_or_path)
    mode = mode if spec.is_recurrent else "step"  # no time axis: the file records "step", as it always has
    try:
        g, ins, outs, layers = translate(hub(spec, mode=mode, quiet=quiet))
    except InputError as e:
        source = model_or_path if isinstance(model_or_path, (str, os.PathLike)) else None
        raise (InputError(str(e), source) if e.path is None and source is not None else e) from None
    if sum(len(b) for b in g.buffers) > MAX_FILE_BYTES:
        raise InputError("model exceeds the 2 GiB limit of a single TFLite flatbuffer", path)
    tensors = {name: info["tensors"] for name, info in layers.items()}
    data = g.serialize(ins, outs, metadata(spec, provenance, tensors, mode=mode),
                       description=f"dkp-deploy {__version__}")
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
