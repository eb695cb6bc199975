"""TFLite converter: builtin ops only, one small lowering rule per block (see docs/tflite.md)."""

from __future__ import annotations

from .exported import load_exported
from .model import build, to_tflite

__all__ = ["to_tflite", "build", "load_exported"]
