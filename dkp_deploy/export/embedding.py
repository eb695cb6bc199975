"""The torch side of exporting a `DopedEmbedding`: `dkp::doped_embedding`, a custom op that keeps the lookup whole
through torch.export, and its torch.onnx translation (the transient `ai.dkp::DopedGatherRef`, which `export.hub`
rewrites to a `DopedGather` hub node)."""

from __future__ import annotations

import json

import torch
from torch import nn
from torch.nn import functional as F

from ..nn.embedding import DopedEmbedding

ROLES = ("B", "C", "W_s", "mask")


@torch.library.custom_op("dkp::doped_embedding", mutates_args=())
def doped_embedding(ids: torch.Tensor, tensors: list[torch.Tensor], config: str) -> torch.Tensor:
    """W[ids] for W = kron(B, C) + W_s * mask; `config` (JSON) names the role of each of `tensors`.

    Export only traces it (its fake below); run eagerly it forms the table, which `DopedEmbedding.forward` never
    does."""
    parts = dict(zip(json.loads(config)["roles"], tensors))
    w = torch.kron(parts["B"], parts["C"]) + parts["W_s"] * parts["mask"]
    return F.embedding(ids, w)


@doped_embedding.register_fake
def _(ids: torch.Tensor, tensors: list[torch.Tensor], config: str) -> torch.Tensor:
    d = json.loads(config)["shape"][1]
    return tensors[0].new_empty(*ids.shape, d)


def embedding_forward(name: str):
    """A `DopedEmbedding.forward` that calls the op (`export.ops.capture` installs it while exporting)."""

    def forward(self: DopedEmbedding, ids: torch.Tensor) -> torch.Tensor:
        t = self.table
        config = json.dumps({"name": name, "structure": "kron", "shape": [self.num_embeddings, self.embedding_dim],
                             "roles": list(ROLES)})
        return torch.ops.dkp.doped_embedding(ids, [t.B, t.C, t.W_s, t.mask], config)

    return forward


def named_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """`model.named_modules()`, except that a DopedEmbedding's table shared with another module (a tied decoder)
    takes that module's name rather than "<embedding>.table" (the name its DopedMatMul node and checks carry)."""
    tables = {f"{n}.table" if n else "table" for n, m in model.named_modules() if isinstance(m, DopedEmbedding)}
    found: dict[int, tuple[str, nn.Module]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        if id(m) not in found or (found[id(m)][0] in tables and n not in tables):
            found[id(m)] = (n, m)
    return list(found.values())


def translation(dkp) -> dict:
    """The torch.onnx custom_translation_table entry; `dkp` is the onnxscript opset of the ai.dkp domain."""

    def doped_gather_ref(ids, tensors, config: str):
        return dkp.DopedGatherRef(ids, *tensors, config=config)

    return {torch.ops.dkp.doped_embedding.default: doped_gather_ref}


__all__ = ["doped_embedding", "embedding_forward", "named_modules", "translation", "ROLES"]
