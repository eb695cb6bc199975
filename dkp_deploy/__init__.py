"""dkp-deploy: train, convert and deploy networks compressed with doped Kronecker products (DKP).

The core (spec, checkpoint reading, converters, validator, runtime) needs numpy, scipy, onnx and onnxruntime
only. The torch-facing names (`save`, `load`, `compress`, `nn`, `train`) import torch on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "save": ("dkp_deploy.checkpoint", "save"),
    "load": ("dkp_deploy.checkpoint", "load"),
    "load_spec": ("dkp_deploy.checkpoint", "load_spec"),
    "compress": ("dkp_deploy.compression", "compress"),
}
_SUBMODULES = (
    "nn", "train", "compression", "spec", "reference", "signature", "checkpoint", "converters", "validate", "ops",
    "hub", "lower", "export",  # export: the package, callable as dkp_deploy.export(model, args, path, ...)
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    if name in _SUBMODULES:
        return import_module(f"dkp_deploy.{name}")
    raise AttributeError(f"module 'dkp_deploy' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY, *_SUBMODULES]
