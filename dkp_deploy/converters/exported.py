"""What the validator reads back from an exported file, whatever its format."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..spec import CSR
from .metadata import FORMAT_VERSION


@dataclass
class ExportedModel:
    """An exported file's mode and its weight matrices rebuilt densely from the file's own tensors.

    `matrices` maps the spec's matrix names (`ModelSpec.matrices()`) to the dense float64 W (M x N) that the file
    computes with; `metadata` is the file's key/value metadata (ONNX metadata_props, TFLite metadata).
    """

    path: Path
    format: str  # "onnx" or "tflite"
    mode: str  # "sequence" or "step"
    matrices: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


def dense_from_parts(name: str, shape: tuple[int, int], parts: dict[str, np.ndarray], sparse: CSR | None) -> np.ndarray:
    """W (float64, M x N) from the parts a file stores: "W"; or "B", "C"; or "W_top", "U", "V"; or "U", "V"; or
    none of them (W = W_s only); plus the sparse W_s. Parts that do not make an M x N matrix are an `InputError`."""
    p = {role: np.asarray(a, dtype=np.float64) for role, a in parts.items()}
    try:
        if "W" in p:
            w = p["W"].copy()
        elif "B" in p:
            w = np.kron(p["B"], p["C"])
        elif "W_top" in p:
            w = np.concatenate([p["W_top"], p["U"] @ p["V"]], axis=0)
        elif "U" in p:
            w = p["U"] @ p["V"]
        else:
            w = np.zeros(shape)
        if sparse is not None:
            w = w + sparse.to_dense(np.float64)
    except (KeyError, ValueError) as e:  # a missing partner factor, or factors / W_s that do not fit together
        raise InputError(f"layer {name!r}: its tensors do not make a matrix ({type(e).__name__}: {e})") from None
    if w.shape != tuple(shape):
        raise InputError(f"layer {name!r}: tensors make a {w.shape} matrix, metadata says {tuple(shape)}")
    return w


def layers_from_metadata(meta: dict[str, str], path: object) -> dict[str, dict]:
    """The file's dkp.layers entry (matrix name -> shape, tensors by role, ...), checked; `InputError` naming `path`
    for a file that dkp-convert did not write, a newer metadata format, or a malformed entry."""
    if "dkp.layers" not in meta:
        raise InputError("not written by dkp-convert (no dkp.* metadata)", path)
    version = meta.get("dkp.format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise InputError(f"dkp metadata format version {version!r}: this dkp-deploy reads up to {FORMAT_VERSION}, "
                         "upgrade it", path)
    try:
        layers = json.loads(meta["dkp.layers"])
    except json.JSONDecodeError:
        layers = None
    if not isinstance(layers, dict) or not all(
        isinstance(info, dict) and isinstance(info.get("tensors"), dict) and isinstance(info.get("shape"), list)
        and len(info["shape"]) == 2 for info in layers.values()
    ):
        raise InputError("corrupt dkp.layers metadata", path)
    _check_rebuild_memory(layers, path)
    return layers


def _check_rebuild_memory(layers: dict[str, dict], path: object) -> None:
    """Rebuilding every W in float64 must fit the memory limit (`dkp_deploy.checkpoint.max_memory`, --max-memory):
    a small file may declare any shape, so the declared sizes are checked before anything is allocated."""
    from ..checkpoint import _gib, _limit

    sizes = {}
    for name, info in layers.items():
        m, n = info["shape"]
        if not (isinstance(m, int) and isinstance(n, int)) or m < 0 or n < 0:
            raise InputError(f"layer {name!r}: dkp.layers shape {info['shape']} is not two sizes", path)
        sizes[name] = 8 * m * n
    total, limit = sum(sizes.values()), _limit[0]
    if total > limit:
        big = max(sizes, key=sizes.get)
        m, n = layers[big]["shape"]
        raise InputError(f"layer {big!r} declares a {m} x {n} matrix: rebuilding the file's matrices needs "
                         f"{_gib(total)}, over the {_gib(limit)} limit (--max-memory / max_memory=)", path)
