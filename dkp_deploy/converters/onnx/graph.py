"""A small ONNX graph builder: named nodes, raw initializers stored once, readable tensor names."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

DKP_DOMAIN = "ai.dkp"


def _content_key(array: np.ndarray) -> tuple:
    return array.dtype.str, array.shape, hashlib.sha256(array.tobytes()).hexdigest()


class Graph:
    """Collects the nodes and initializers of one ONNX graph (the main graph or a Scan body).

    Initializers are deduplicated by content (dtype, shape, bytes): tied weights and repeated shape
    constants end up as one tensor in the file. `opset` is the default-domain opset the nodes target.
    """

    def __init__(self, opset: int, prefix: str = ""):
        self.opset = opset
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []  # shapes of inner values (ranks the lowering reads)
        self.initializers: dict[str, onnx.TensorProto] = {}
        self._by_content: dict[tuple, str] = {}
        self._names: set[str] = set()

    # -- names -------------------------------------------------------------------------------------
    def unique(self, name: str) -> str:
        name = self.prefix + name
        out, k = name, 1
        while out in self._names:
            k += 1
            out = f"{name}_{k}"
        self._names.add(out)
        return out

    def share_names(self, names: set[str]) -> None:
        """Draw new names from `names` (a set shared with other builders: one namespace across subgraphs)."""
        self._names = names

    def reserve(self, *names: str) -> None:
        """Mark graph input / outer-scope names as taken."""
        self._names.update(names)

    # -- tensors -----------------------------------------------------------------------------------
    def init(self, name: str, array: np.ndarray, *, shared: bool = True, exact_name: bool = False) -> str:
        """Add an initializer (raw bytes) unless one with the same content exists; return its name.

        `shared=False` always adds a new tensor (graph inputs with defaults); `exact_name` keeps `name` unprefixed.
        """
        array = np.asarray(array, order="C")  # (ascontiguousarray would turn scalars into [1])
        key = _content_key(array)
        if shared and key in self._by_content:
            return self._by_content[key]
        if exact_name:
            self._names.add(name)
        else:
            name = self.unique(name)
        self.initializers[name] = numpy_helper.from_array(array, name)
        if shared:
            self._by_content[key] = name
        return name

    def adopt(self, name: str, array: np.ndarray) -> None:
        """Make an existing initializer of the graph being rewritten reusable by content (`init` returns it)."""
        self._by_content.setdefault(_content_key(np.asarray(array, order="C")), name)

    def i64(self, values: Any, name: str = "const/i64") -> str:
        return self.init(name, np.asarray(values, dtype=np.int64))

    # -- nodes -------------------------------------------------------------------------------------
    def node(
        self,
        op: str,
        inputs: list[str],
        name: str,
        *,
        outputs: int | list[str] = 1,
        domain: str = "",
        **attrs: Any,
    ) -> Any:
        """Add a node named `name` (made unique); return its output name, or the list if several."""
        node_name = self.unique(name)
        if isinstance(outputs, int):
            outs = [node_name] if outputs == 1 else [f"{node_name}:{i}" for i in range(outputs)]
            self._names.update(outs)
        else:
            outs = list(outputs)
            self._names.update(outs)
        self.nodes.append(helper.make_node(op, inputs, outs, name=node_name, domain=domain or None, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def rename_output(self, old: str, new: str) -> None:
        """Give the tensor `old` (a node output) the name `new` (a graph output name)."""
        for n in self.nodes:
            for i, o in enumerate(n.output):
                if o == old:
                    n.output[i] = new
            for i, x in enumerate(n.input):
                if x == old:
                    n.input[i] = new
        self._names.add(new)

    def split(self, x: str, sizes: list[int], axis: int, name: str) -> list[str]:
        """Split along `axis` into pieces of `sizes` (opset-appropriate form)."""
        if self.opset >= 18 and len(set(sizes)) == 1:
            return self.node("Split", [x], name, outputs=len(sizes), axis=axis, num_outputs=len(sizes))
        return self.node("Split", [x, self.i64(sizes, "const/split")], name, outputs=len(sizes), axis=axis)

    def make(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, name, inputs, outputs, initializer=list(self.initializers.values()),
                                 value_info=self.value_info)


def value_info(name: str, dtype: Any, shape: tuple) -> onnx.ValueInfoProto:
    """A graph input/output; string dims are symbolic (e.g. "batch", "time")."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return helper.make_tensor_value_info(name, elem, list(shape))


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph` and, depth first, every subgraph held in a node attribute (a Scan body)."""
    yield graph
    for n in graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from all_graphs(a.g)
