"""Converters from a model spec (or a checkpoint / torch model) to deployable files."""

from __future__ import annotations

from typing import Any


def to_onnx(model_or_path: Any, path: Any, **options: Any) -> Any:
    from .onnx import to_onnx as _to_onnx

    return _to_onnx(model_or_path, path, **options)


def to_tflite(model_or_path: Any, path: Any, **options: Any) -> Any:
    from .tflite import to_tflite as _to_tflite

    return _to_tflite(model_or_path, path, **options)


__all__ = ["to_onnx", "to_tflite"]
