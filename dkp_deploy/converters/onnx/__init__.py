"""ONNX converter: one small lowering rule per block and per sparse impl (see docs/onnx.md)."""

from __future__ import annotations

from .exported import load_exported
from .matrix import SPARSE_IMPLS
from .model import DEFAULT_OPSET, OPSETS, build, to_onnx

__all__ = ["to_onnx", "build", "load_exported", "SPARSE_IMPLS", "DEFAULT_OPSET", "OPSETS"]
