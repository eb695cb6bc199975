"""Lowering of an `Embedding` block: token ids (any shape) -> Gather of rows."""

from __future__ import annotations

import numpy as np

from ...spec import Embedding
from .graph import Graph


def lower(g: Graph, ids: str, block: Embedding, roles: dict[str, str]) -> str:
    roles["W"] = w = g.init(f"{block.name}/weight", np.asarray(block.weight, dtype=np.float32))
    return g.node("Gather", [w, ids], f"{block.name}/gather", axis=0)
