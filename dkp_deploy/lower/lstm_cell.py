"""Fuse an LSTM cell into one ``ai.dkp::LSTMCell`` node (the custom lowering; an onnxscript rewrite rule).

The hub writes an LSTM step's cell in standard ops (`dkp_deploy.hub.recurrent`): Split of the gates into i, f, g,
o, three Sigmoid, two Tanh, three Mul and an Add. At batch 1 those ten nodes cost more in onnxruntime's per-node
overhead than in arithmetic; the C++ op does the same in one pass. The rule matches the computation, not our
names, so a cell torch.onnx wrote for a user's own module fuses too, wherever shapes show it is one: the Split on
the last axis in four equal parts, c of the parts' shape (no broadcasting). Scan bodies are rewritten as well.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx_ir.passes import common as common_passes
from onnxscript.rewriter import RewritePass, pattern

from ..converters.onnx.graph import all_graphs
from ..hub.schema import DOMAIN, VERSION


class LSTMCellFusion(pattern.RewriteRuleClassBase):
    """c' = sigmoid(f) * c + sigmoid(i) * tanh(g), h' = sigmoid(o) * tanh(c') -> LSTMCell(gates, c)."""

    def pattern(self, op, gates, c):
        i, f, g, o = op.Split(gates, _allow_other_inputs=True, _outputs=["i", "f", "g", "o"])
        c_next = op.Add(op.Mul(op.Sigmoid(f), c), op.Mul(op.Sigmoid(i), op.Tanh(g)))
        return op.Mul(op.Sigmoid(o), op.Tanh(c_next)), c_next

    def check(self, context, gates: ir.Value, c: ir.Value, i: ir.Value, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        split = i.producer()
        if gates.dtype != ir.DataType.FLOAT or c.dtype != ir.DataType.FLOAT:
            return result.fail("gates and c must be float32", gates)
        if gates.shape is None or c.shape is None or gates.shape.rank() != c.shape.rank() or not gates.shape.rank():
            return result.fail("the ranks of gates and c are not known to match", gates)
        rank = gates.shape.rank()
        if split.attributes.get_int("axis", 0) not in (-1, rank - 1):
            return result.fail("the Split is not on the last axis", split)
        if len(split.inputs) > 1 and split.inputs[1] is not None:
            sizes = ir.convenience.get_const_tensor(split.inputs[1])
            if sizes is None or len(set(sizes.numpy().tolist())) != 1:
                return result.fail("the Split's parts are not known to be equal", split)
        elif split.attributes.get_int("num_outputs", 4) != 4:
            return result.fail("the Split does not make four parts", split)
        hidden, width = c.shape[rank - 1], gates.shape[rank - 1]
        if not (isinstance(hidden, int) and isinstance(width, int) and width == 4 * hidden):
            return result.fail("gates' last dim is not known to be 4 times c's", gates)
        if list(gates.shape)[:-1] != list(c.shape)[:-1]:
            return result.fail("c's leading dims are not known to equal the gates'", c)
        return result

    def rewrite(self, op, gates, c, i, **_):
        h_next, c_next = op.LSTMCell(gates, c, _domain=DOMAIN, _version=VERSION, _outputs=2)
        split = i.producer().name or ""  # the cell's scope: "lstm/l0/split_gates" -> "lstm/l0/lstm_cell"
        h_next.producer().name = f"{split.rpartition('/')[0] or split}/lstm_cell".lstrip("/")
        return h_next, c_next


# commute: the Mul and Add operands in either order (another exporter's cell, or a user's own)
RULES = pattern.RewriteRuleSet([LSTMCellFusion.rule()], commute=True)


def fuse_lstm_cells(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every LSTM cell the rule matches (any graph, Scan bodies too) as one LSTMCell node."""
    from ..hub.schema import register_schemas

    if not any(n.op_type == "Sigmoid" for g in all_graphs(model.graph) for n in g.node):
        return model  # no cell to find: spare a model without one the round trip through onnx-ir and inference
    register_schemas()  # shape inference must know the ai.dkp ops the lowering wrote
    typed = {v.name for g in all_graphs(model.graph) for v in g.value_info}
    passes = ir.passes.PassManager((
        common_passes.ShapeInferencePass(strict_mode=False),  # a node inference cannot follow leaves its values untyped
        RewritePass(RULES),
        common_passes.RemoveUnusedNodesPass(),
    ))
    out = ir.serde.serialize_model(passes(ir.serde.deserialize_model(model)).model)
    for g in all_graphs(out.graph):  # the shapes inference found served the rule's checks: the file keeps its own
        kept = [v for v in g.value_info if v.name in typed]
        del g.value_info[:]
        g.value_info.extend(kept)
    return out


__all__ = ["fuse_lstm_cells", "LSTMCellFusion", "RULES"]
