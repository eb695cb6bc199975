"""A small TFLite model writer over the `tflite` schema bindings and `flatbuffers`: tensors, buffers, builtin ops.

Shapes use -1 for the batch dimension; the file then records batch 1 in `shape` and -1 in `shape_signature`, so
the interpreter resizes the graph to whatever batch is fed. Constant buffers are 16-byte aligned (the schema's
`force_align: 16` on Buffer.data) and deduplicated by content (an LM's tied embedding / decoder is stored once).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import flatbuffers
import numpy as np
import tflite
from tflite.BuiltinOperator import BuiltinOperator as Op
from tflite.BuiltinOptions import BuiltinOptions
from tflite.DimensionType import DimensionType
from tflite.SparseIndexVector import SparseIndexVector
from tflite.TensorType import TensorType

from ...spec import CSR

BATCH = -1
BUFFER_ALIGNMENT = 16
SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"
SIGNATURE_KEY = "serving_default"
MAX_FILE_BYTES = 2**31 - 1  # flatbuffers' offsets are 32-bit

TENSOR_TYPES = {np.dtype(np.float32): TensorType.FLOAT32, np.dtype(np.int32): TensorType.INT32,
                np.dtype(np.int64): TensorType.INT64, np.dtype(np.bool_): TensorType.BOOL}
NUMPY_TYPES = {v: k for k, v in TENSOR_TYPES.items()}

Options = tuple[int, Callable[[flatbuffers.Builder], int]]


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]  # BATCH (-1) marks the batch dimension
    dtype: np.dtype
    buffer: int = 0  # 0: no data (an activation or graph input)
    sparse: CSR | None = None  # set for a constant stored sparse (random CSR, or 1 x 4 block CSR: `_sparsity`)


@dataclass
class Operator:
    code: int
    version: int
    inputs: list[int]
    outputs: list[int]
    options: Options | None


class Graph:
    """One subgraph being built: add inputs, constants and ops, then `serialize`."""

    def __init__(self, parent: Graph | None = None) -> None:
        self.tensors: list[Tensor] = []
        self.ops: list[Operator] = []
        self._names: set[str] = set()
        self._reserved: set[str] = set()
        self._consts: dict[tuple, int] = {}
        # the model's buffers live in the main graph; a subgraph (a WHILE's cond / body) stores into them too
        self.root: Graph = parent.root if parent is not None else self
        if parent is None:
            self.buffers: list[bytes] = [b""]  # buffer 0 is the empty sentinel the schema reserves
            self._buffer_of: dict[bytes, int] = {}
            self.subgraphs: list[tuple[Graph, list[int], list[int], str]] = []  # index 1, 2, ... of the file

    def subgraph(self, name: str) -> tuple[Graph, int]:
        """A new subgraph of the model (WHILE cond / body) and its index in the file; set its inputs / outputs
        with `finish_subgraph`."""
        child = Graph(self)
        self.root.subgraphs.append((child, [], [], name))
        return child, len(self.root.subgraphs)

    def finish_subgraph(self, index: int, inputs: Sequence[int], outputs: Sequence[int]) -> None:
        child, _, _, name = self.root.subgraphs[index - 1]
        self.root.subgraphs[index - 1] = (child, list(inputs), list(outputs), name)

    # -- tensors -----------------------------------------------------------------------------------
    def reserve(self, *names: str) -> None:
        """Keep these names (the signature's) for `input` / `rename`; generated names avoid them."""
        self._reserved.update(names)

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self._names or name in self._reserved:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def _add(self, t: Tensor) -> int:
        self.tensors.append(t)
        return len(self.tensors) - 1

    def input(self, name: str, dtype: type, shape: Sequence[int]) -> int:
        self._reserved.discard(name)
        self._names.add(name)
        return self._add(Tensor(name, tuple(shape), np.dtype(dtype)))

    def rename(self, index: int, name: str) -> None:
        """Give tensor `index` a reserved signature name (an output)."""
        self._names.discard(self.tensors[index].name)
        self._reserved.discard(name)
        self._names.add(name)
        self.tensors[index].name = name

    def _buffer(self, data: bytes) -> int:
        root = self.root
        key = hashlib.sha256(data).digest()
        if key not in root._buffer_of:
            root.buffers.append(data)
            root._buffer_of[key] = len(root.buffers) - 1
        return root._buffer_of[key]

    def const(self, name: str, array: np.ndarray) -> int:
        """A constant tensor; an identical constant (dtype, shape, bytes) already added is reused."""
        a = np.asarray(array, order="C")  # (ascontiguousarray would turn a scalar into [1])
        if a.dtype not in TENSOR_TYPES:
            raise TypeError(f"constant {name!r}: unsupported dtype {a.dtype}")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        data = a.tobytes()
        key = (a.dtype.str, a.shape, hashlib.sha256(data).digest())
        if key not in self._consts:
            self._consts[key] = self._add(Tensor(self.unique(name), a.shape, a.dtype, self._buffer(data)))
        return self._consts[key]

    def sparse_const(self, name: str, csr: CSR) -> int:
        """An M x N float32 constant stored as TFLite random-sparse CSR: only the nnz values in its buffer."""
        values = np.ascontiguousarray(csr.values, dtype="<f4")
        return self._add(Tensor(self.unique(name), tuple(csr.shape), np.dtype(np.float32),
                                self._buffer(values.tobytes()), sparse=csr))

    # -- operators ---------------------------------------------------------------------------------
    def op(self, code: int, inputs: Iterable[int], name: str, shapes: Sequence[Sequence[int]],
           options: Options | None = None, *, dtype: type = np.float32, version: int = 1) -> list[int]:
        """Append a builtin op; returns its output tensors (one per shape, named `name`, `name:1`, ...)."""
        outs = [self._add(Tensor(self.unique(name if i == 0 else f"{name}:{i}"), tuple(s), np.dtype(dtype)))
                for i, s in enumerate(shapes)]
        self.ops.append(Operator(code, version, list(inputs), outs, options))
        return outs

    def op1(self, code: int, inputs: Iterable[int], name: str, shape: Sequence[int],
            options: Options | None = None, **kw) -> int:
        return self.op(code, inputs, name, [shape], options, **kw)[0]

    def shape(self, index: int) -> tuple[int, ...]:
        return self.tensors[index].shape

    # -- serialization -----------------------------------------------------------------------------
    def serialize(self, inputs: Sequence[int], outputs: Sequence[int], metadata: dict[str, str],
                  description: str = "") -> bytes:
        """The .tflite bytes: the main subgraph (and any WHILE subgraphs), a `serving_default` SignatureDef over the
        tensor names, metadata."""
        buffers = [*self.buffers, *(value.encode() for value in metadata.values())]
        meta_buffers = {key: len(self.buffers) + i for i, key in enumerate(metadata)}
        tensors = len(self.tensors) + sum(len(g.tensors) for g, *_ in self.subgraphs)
        size = sum(len(data) + BUFFER_ALIGNMENT for data in buffers) + 64 * tensors + 4096
        b = flatbuffers.Builder(min(size, MAX_FILE_BYTES))

        graphs = [(self, list(inputs), list(outputs), "main"), *self.subgraphs]
        opcodes: dict[tuple[int, int], int] = {}
        for graph, _, _, _ in graphs:
            for o in graph.ops:
                opcodes.setdefault((o.code, o.version), len(opcodes))
        opcode_offsets = [_operator_code(b, code, version) for code, version in opcodes]
        subgraph_offsets = []
        for graph, ins, outs, label in graphs:
            tensor_offsets = [_tensor(b, t) for t in graph.tensors]
            op_offsets = [_operator(b, opcodes[o.code, o.version], o) for o in graph.ops]
            name = b.CreateString(label)
            subgraph_inputs = _int_vector(b, tflite.SubGraphStartInputsVector, ins)
            subgraph_outputs = _int_vector(b, tflite.SubGraphStartOutputsVector, outs)
            tensors_vec = _offset_vector(b, tflite.SubGraphStartTensorsVector, tensor_offsets)
            ops_vec = _offset_vector(b, tflite.SubGraphStartOperatorsVector, op_offsets)
            tflite.SubGraphStart(b)
            tflite.SubGraphAddTensors(b, tensors_vec)
            tflite.SubGraphAddInputs(b, subgraph_inputs)
            tflite.SubGraphAddOutputs(b, subgraph_outputs)
            tflite.SubGraphAddOperators(b, ops_vec)
            tflite.SubGraphAddName(b, name)
            subgraph_offsets.append(tflite.SubGraphEnd(b))

        signature = _signature(b, [(self.tensors[i].name, i) for i in inputs],
                               [(self.tensors[i].name, i) for i in outputs])
        metadata_offsets = []
        for key, buf in meta_buffers.items():
            key_off = b.CreateString(key)
            tflite.MetadataStart(b)
            tflite.MetadataAddName(b, key_off)
            tflite.MetadataAddBuffer(b, buf)
            metadata_offsets.append(tflite.MetadataEnd(b))

        # Buffers last in build order, so (flatbuffers writing back to front) they sit at the front of the file.
        buffer_offsets = [_buffer(b, data) for data in buffers]

        opcodes_vec = _offset_vector(b, tflite.ModelStartOperatorCodesVector, opcode_offsets)
        subgraphs_vec = _offset_vector(b, tflite.ModelStartSubgraphsVector, subgraph_offsets)
        buffers_vec = _offset_vector(b, tflite.ModelStartBuffersVector, buffer_offsets)
        metadata_vec = _offset_vector(b, tflite.ModelStartMetadataVector, metadata_offsets)
        signatures_vec = _offset_vector(b, tflite.ModelStartSignatureDefsVector, [signature])
        desc = b.CreateString(description)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, SCHEMA_VERSION)
        tflite.ModelAddOperatorCodes(b, opcodes_vec)
        tflite.ModelAddSubgraphs(b, subgraphs_vec)
        tflite.ModelAddDescription(b, desc)
        tflite.ModelAddBuffers(b, buffers_vec)
        tflite.ModelAddMetadata(b, metadata_vec)
        tflite.ModelAddSignatureDefs(b, signatures_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=FILE_IDENTIFIER)
        return bytes(b.Output())


# -- flatbuffer pieces -------------------------------------------------------------------------------
def _int_vector(b: flatbuffers.Builder, start: Callable, values: Sequence[int]) -> int:
    start(b, len(values))
    for v in reversed(values):
        b.PrependInt32(int(v))
    return b.EndVector()


def _offset_vector(b: flatbuffers.Builder, start: Callable, offsets: Sequence[int]) -> int:
    start(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _aligned_bytes(b: flatbuffers.Builder, data: bytes) -> int:
    b.StartVector(1, len(data), BUFFER_ALIGNMENT)
    b.head -= len(data)
    b.Bytes[b.head : b.head + len(data)] = data
    return b.EndVector()


def _buffer(b: flatbuffers.Builder, data: bytes) -> int:
    vec = _aligned_bytes(b, data) if data else None
    tflite.BufferStart(b)
    if vec is not None:
        tflite.BufferAddData(b, vec)
    return tflite.BufferEnd(b)


def _operator_code(b: flatbuffers.Builder, code: int, version: int) -> int:
    tflite.OperatorCodeStart(b)
    # Codes above 127 live in builtin_code; the deprecated int8 field then holds the placeholder.
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, Op.PLACEHOLDER_FOR_GREATER_OP_CODES))
    tflite.OperatorCodeAddBuiltinCode(b, code)
    tflite.OperatorCodeAddVersion(b, version)
    return tflite.OperatorCodeEnd(b)


BLOCK = 4  # TFLite's optimized sparse FULLY_CONNECTED (FullyConnectedSparseWeight1x4) takes 1 x 4 blocks


def _sparsity(b: flatbuffers.Builder, csr: CSR) -> int:
    """Sparsity parameters of an M x N weight: 1 x 4 block CSR when the entries form aligned 1 x 4 blocks
    (traversal order [0, 1, 2], block map [1], dims DENSE M / SPARSE_CSR over N / 4 blocks / DENSE 4: the layout
    TFLite's fast sparse kernel takes), else random-sparse CSR (order [0, 1], DENSE M / SPARSE_CSR N)."""
    def int32_vector(values: np.ndarray) -> int:
        vec = b.CreateNumpyVector(np.ascontiguousarray(values, dtype="<i4"))
        tflite.Int32VectorStart(b)
        tflite.Int32VectorAddValues(b, vec)
        return tflite.Int32VectorEnd(b)

    def dense_dim(size: int) -> int:
        tflite.DimensionMetadataStart(b)
        tflite.DimensionMetadataAddFormat(b, DimensionType.DENSE)
        tflite.DimensionMetadataAddDenseSize(b, size)
        return tflite.DimensionMetadataEnd(b)

    blocks = csr.block_columns(BLOCK)
    if blocks is not None:
        segments, indices = int32_vector(csr.row_ptr // BLOCK), int32_vector(blocks)
    else:
        segments, indices = int32_vector(csr.row_ptr), int32_vector(csr.col_idx)
    dim0 = dense_dim(csr.shape[0])
    tflite.DimensionMetadataStart(b)
    tflite.DimensionMetadataAddFormat(b, DimensionType.SPARSE_CSR)
    tflite.DimensionMetadataAddArraySegmentsType(b, SparseIndexVector.Int32Vector)
    tflite.DimensionMetadataAddArraySegments(b, segments)
    tflite.DimensionMetadataAddArrayIndicesType(b, SparseIndexVector.Int32Vector)
    tflite.DimensionMetadataAddArrayIndices(b, indices)
    dim1 = tflite.DimensionMetadataEnd(b)
    dims = [dim0, dim1] if blocks is None else [dim0, dim1, dense_dim(BLOCK)]
    order = _int_vector(b, tflite.SparsityParametersStartTraversalOrderVector, list(range(len(dims))))
    block_map = _int_vector(b, tflite.SparsityParametersStartBlockMapVector, [1]) if blocks is not None else None
    dim_vector = _offset_vector(b, tflite.SparsityParametersStartDimMetadataVector, dims)
    tflite.SparsityParametersStart(b)
    tflite.SparsityParametersAddTraversalOrder(b, order)
    if block_map is not None:
        tflite.SparsityParametersAddBlockMap(b, block_map)
    tflite.SparsityParametersAddDimMetadata(b, dim_vector)
    return tflite.SparsityParametersEnd(b)


def _tensor(b: flatbuffers.Builder, t: Tensor) -> int:
    name = b.CreateString(t.name)
    shape = _int_vector(b, tflite.TensorStartShapeVector, [1 if d == BATCH else d for d in t.shape])
    dynamic = BATCH in t.shape
    signature = _int_vector(b, tflite.TensorStartShapeSignatureVector, t.shape) if dynamic else None
    sparsity = _sparsity(b, t.sparse) if t.sparse is not None else None
    tflite.TensorStart(b)
    tflite.TensorAddShape(b, shape)
    tflite.TensorAddType(b, TENSOR_TYPES[t.dtype])
    tflite.TensorAddBuffer(b, t.buffer)
    tflite.TensorAddName(b, name)
    if signature is not None:
        tflite.TensorAddShapeSignature(b, signature)
    if sparsity is not None:
        tflite.TensorAddSparsity(b, sparsity)
    return tflite.TensorEnd(b)


def _operator(b: flatbuffers.Builder, opcode_index: int, o: Operator) -> int:
    options = o.options[1](b) if o.options is not None else None
    ins = _int_vector(b, tflite.OperatorStartInputsVector, o.inputs)
    outs = _int_vector(b, tflite.OperatorStartOutputsVector, o.outputs)
    tflite.OperatorStart(b)
    tflite.OperatorAddOpcodeIndex(b, opcode_index)
    tflite.OperatorAddInputs(b, ins)
    tflite.OperatorAddOutputs(b, outs)
    if options is not None:
        tflite.OperatorAddBuiltinOptionsType(b, o.options[0])
        tflite.OperatorAddBuiltinOptions(b, options)
    return tflite.OperatorEnd(b)


def _signature(b: flatbuffers.Builder, inputs: list[tuple[str, int]], outputs: list[tuple[str, int]]) -> int:
    def maps(pairs: list[tuple[str, int]]) -> list[int]:
        out = []
        for name, index in pairs:
            s = b.CreateString(name)
            tflite.TensorMapStart(b)
            tflite.TensorMapAddName(b, s)
            tflite.TensorMapAddTensorIndex(b, index)
            out.append(tflite.TensorMapEnd(b))
        return out

    ins = _offset_vector(b, tflite.SignatureDefStartInputsVector, maps(inputs))
    outs = _offset_vector(b, tflite.SignatureDefStartOutputsVector, maps(outputs))
    key = b.CreateString(SIGNATURE_KEY)
    tflite.SignatureDefStart(b)
    tflite.SignatureDefAddInputs(b, ins)
    tflite.SignatureDefAddOutputs(b, outs)
    tflite.SignatureDefAddSignatureKey(b, key)
    tflite.SignatureDefAddSubgraphIndex(b, 0)
    return tflite.SignatureDefEnd(b)


# -- builtin options ---------------------------------------------------------------------------------
def _table(kind: int, start: Callable, end: Callable, *fields: tuple[Callable, int]) -> Options:
    def build(b: flatbuffers.Builder) -> int:
        start(b)
        for add, value in fields:
            add(b, value)
        return end(b)

    return kind, build


def fully_connected(keep_num_dims: bool = False) -> Options:
    return _table(BuiltinOptions.FullyConnectedOptions, tflite.FullyConnectedOptionsStart,
                  tflite.FullyConnectedOptionsEnd, (tflite.FullyConnectedOptionsAddKeepNumDims, keep_num_dims))


def batch_matmul() -> Options:
    return _table(BuiltinOptions.BatchMatMulOptions, tflite.BatchMatMulOptionsStart, tflite.BatchMatMulOptionsEnd)


def reshape() -> Options:
    return _table(BuiltinOptions.ReshapeOptions, tflite.ReshapeOptionsStart, tflite.ReshapeOptionsEnd)


def add() -> Options:
    return _table(BuiltinOptions.AddOptions, tflite.AddOptionsStart, tflite.AddOptionsEnd)


def mul() -> Options:
    return _table(BuiltinOptions.MulOptions, tflite.MulOptionsStart, tflite.MulOptionsEnd)


def concatenation(axis: int) -> Options:
    return _table(BuiltinOptions.ConcatenationOptions, tflite.ConcatenationOptionsStart,
                  tflite.ConcatenationOptionsEnd, (tflite.ConcatenationOptionsAddAxis, axis))


def split(num: int) -> Options:
    return _table(BuiltinOptions.SplitOptions, tflite.SplitOptionsStart, tflite.SplitOptionsEnd,
                  (tflite.SplitOptionsAddNumSplits, num))


def pack(count: int, axis: int = 0) -> Options:
    return _table(BuiltinOptions.PackOptions, tflite.PackOptionsStart, tflite.PackOptionsEnd,
                  (tflite.PackOptionsAddValuesCount, count), (tflite.PackOptionsAddAxis, axis))


def unpack(num: int, axis: int = 0) -> Options:
    return _table(BuiltinOptions.UnpackOptions, tflite.UnpackOptionsStart, tflite.UnpackOptionsEnd,
                  (tflite.UnpackOptionsAddNum, num), (tflite.UnpackOptionsAddAxis, axis))


def gather(axis: int = 0) -> Options:
    return _table(BuiltinOptions.GatherOptions, tflite.GatherOptionsStart, tflite.GatherOptionsEnd,
                  (tflite.GatherOptionsAddAxis, axis))


def gelu(approximate: bool = False) -> Options:
    return _table(BuiltinOptions.GeluOptions, tflite.GeluOptionsStart, tflite.GeluOptionsEnd,
                  (tflite.GeluOptionsAddApproximate, approximate))


def split_v(num: int) -> Options:
    return _table(BuiltinOptions.SplitVOptions, tflite.SplitVOptionsStart, tflite.SplitVOptionsEnd,
                  (tflite.SplitVOptionsAddNumSplits, num))


def reducer(keep_dims: bool) -> Options:
    return _table(BuiltinOptions.ReducerOptions, tflite.ReducerOptionsStart, tflite.ReducerOptionsEnd,
                  (tflite.ReducerOptionsAddKeepDims, keep_dims))


def squeeze(dims: Sequence[int]) -> Options:
    def build(b: flatbuffers.Builder) -> int:
        vec = _int_vector(b, tflite.SqueezeOptionsStartSqueezeDimsVector, list(dims))
        tflite.SqueezeOptionsStart(b)
        tflite.SqueezeOptionsAddSqueezeDims(b, vec)
        return tflite.SqueezeOptionsEnd(b)

    return BuiltinOptions.SqueezeOptions, build


def while_(cond: int, body: int) -> Options:
    return _table(BuiltinOptions.WhileOptions, tflite.WhileOptionsStart, tflite.WhileOptionsEnd,
                  (tflite.WhileOptionsAddCondSubgraphIndex, cond), (tflite.WhileOptionsAddBodySubgraphIndex, body))


def fill() -> Options:
    return _table(BuiltinOptions.FillOptions, tflite.FillOptionsStart, tflite.FillOptionsEnd)


def shape_of() -> Options:
    return _table(BuiltinOptions.ShapeOptions, tflite.ShapeOptionsStart, tflite.ShapeOptionsEnd,
                  (tflite.ShapeOptionsAddOutType, TensorType.INT32))


def slice_() -> Options:
    return _table(BuiltinOptions.SliceOptions, tflite.SliceOptionsStart, tflite.SliceOptionsEnd)


def expand_dims() -> Options:
    return _table(BuiltinOptions.ExpandDimsOptions, tflite.ExpandDimsOptionsStart, tflite.ExpandDimsOptionsEnd)


def pad() -> Options:
    return _table(BuiltinOptions.PadOptions, tflite.PadOptionsStart, tflite.PadOptionsEnd)


def conv2d(stride: int, dilation: int) -> Options:
    from tflite.Padding import Padding

    return _table(BuiltinOptions.Conv2DOptions, tflite.Conv2DOptionsStart, tflite.Conv2DOptionsEnd,
                  (tflite.Conv2DOptionsAddPadding, Padding.VALID), (tflite.Conv2DOptionsAddStrideW, stride),
                  (tflite.Conv2DOptionsAddStrideH, 1), (tflite.Conv2DOptionsAddDilationWFactor, dilation),
                  (tflite.Conv2DOptionsAddDilationHFactor, 1))


__all__ = ["Graph", "Tensor", "Op", "BATCH", "NUMPY_TYPES", "TENSOR_TYPES", "SIGNATURE_KEY", "MAX_FILE_BYTES"]
