"""TFLite converter: a hub (native checkpoint or `dkp_deploy.export`) translated to builtin ops by one rule per op
family (rules/), doped matrices by the matrix rule (matrix.py); see docs/tflite.md."""

from __future__ import annotations

from .exported import load_exported
from .model import to_tflite

__all__ = ["to_tflite", "load_exported"]
