"""ONNX -> TFLite translation rules for the ops a hub holds, one module per family, registered by op type.

A rule gets the `Context` (the TFLite graph being built, the ONNX values translated so far, their inferred shapes
and constant values) and one ONNX node, and binds the node's outputs to TFLite tensors with `ctx.bind`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ....errors import InputError
from ..graph import BATCH, Graph

Rule = Callable[["Context", onnx.NodeProto], None]
RULES: dict[tuple[str, str], Rule] = {}


def rule(*op_types: str, domain: str = "") -> Callable[[Rule], Rule]:
    """Register `fn` as the translation of `op_types` (in `domain`)."""

    def register(fn: Rule) -> Rule:
        for op in op_types:
            RULES[(domain, op)] = fn
        return fn

    return register


@dataclass
class Context:
    g: Graph
    shapes: dict[str, tuple[int, ...]]  # inferred shapes, BATCH (-1) for a symbolic dimension
    dtypes: dict[str, np.dtype]
    consts: dict[str, np.ndarray]  # initializers (and values folded from them)
    values: dict[str, int] = field(default_factory=dict)  # ONNX value -> TFLite tensor
    layers: dict[str, dict] = field(default_factory=dict)  # per doped matrix: shape, structure, tensors by role

    def tensor(self, name: str) -> int:
        """The TFLite tensor of an ONNX value (a constant becomes a TFLite constant on first use)."""
        if name not in self.values:
            if name not in self.consts:
                raise InputError(f"value {name!r} is neither computed before its use nor a constant")
            a = self.consts[name]
            # TFLite does its shape arithmetic (SHAPE, SLICE, RESHAPE's shape) in int32, as its converter writes it
            a = a.astype(np.float32) if a.dtype == np.float64 else a.astype(np.int32) if a.dtype == np.int64 else a
            self.values[name] = self.g.const(name, a)
        return self.values[name]

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name) if name else None

    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self.shapes:
            raise InputError(f"value {name!r} has no inferred shape")
        return self.shapes[name]

    def dtype(self, name: str) -> np.dtype:
        """The TFLite element type of a translated value (int64 shape values are int32 here)."""
        return self.g.tensors[self.tensor(name)].dtype

    def bind(self, onnx_name: str, tensor: int) -> None:
        self.values[onnx_name] = tensor

    def attrs(self, node: onnx.NodeProto) -> dict[str, Any]:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def axis_of(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


from . import conv, doped, elementwise, embedding, matmul, normalization, recurrent, shaping  # noqa: E402,F401  (register)

__all__ = ["RULES", "Context", "rule", "axis_of", "BATCH"]
