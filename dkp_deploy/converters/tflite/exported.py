"""Read an exported .tflite back: its metadata and each weight matrix rebuilt densely from the file's buffers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import tflite
from tflite.DimensionType import DimensionType
from tflite.SparseIndexVector import SparseIndexVector

from ...errors import InputError
from ...fileio import existing_file
from ...spec import CSR
from ..exported import ExportedModel, dense_from_parts, layers_from_metadata
from .graph import FILE_IDENTIFIER, NUMPY_TYPES

_INDEX_VECTORS = {SparseIndexVector.Int32Vector: tflite.Int32Vector, SparseIndexVector.Uint16Vector:
                  tflite.Uint16Vector, SparseIndexVector.Uint8Vector: tflite.Uint8Vector}


def _index_vector(kind: int, table) -> np.ndarray:
    if kind not in _INDEX_VECTORS or table is None:
        raise InputError(f"unsupported sparse index vector type {kind}")
    vec = _INDEX_VECTORS[kind]()
    vec.Init(table.Bytes, table.Pos)
    return vec.ValuesAsNumpy().astype(np.int32) if vec.ValuesLength() else np.zeros(0, np.int32)


def sparse_csr(tensor, values: np.ndarray) -> CSR:
    """The CSR matrix a sparse TFLite weight holds: random-sparse (dim 0 DENSE, dim 1 SPARSE_CSR) or 1 x 4 block
    sparse (block map [1], dim 2 DENSE 4; expanded to the CSR of its blocks' entries)."""
    name = tensor.Name().decode()
    s = tensor.Sparsity()
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy())
    order = list(s.TraversalOrderAsNumpy()) if s.TraversalOrderLength() else []
    block_map = list(s.BlockMapAsNumpy()) if s.BlockMapLength() else []
    ndims = s.DimMetadataLength()
    random = order == [0, 1] and not block_map and ndims == 2
    blocked = order == [0, 1, 2] and block_map == [1] and ndims == 3
    if len(shape) != 2 or not (random or blocked):
        raise InputError(f"tensor {name!r}: sparsity is neither 2-D random-sparse CSR (traversal order [0, 1]) nor "
                         "1 x k block CSR (order [0, 1, 2], block map [1])")
    d0, d1 = s.DimMetadata(0), s.DimMetadata(1)
    if d0.Format() != DimensionType.DENSE or d1.Format() != DimensionType.SPARSE_CSR or d0.DenseSize() != shape[0]:
        raise InputError(f"tensor {name!r}: expected dim 0 DENSE (size {shape[0]}) and dim 1 SPARSE_CSR")
    segments = _index_vector(d1.ArraySegmentsType(), d1.ArraySegments())
    indices = _index_vector(d1.ArrayIndicesType(), d1.ArrayIndices())
    width = 1
    if blocked:
        d2 = s.DimMetadata(2)
        width = int(d2.DenseSize())
        if d2.Format() != DimensionType.DENSE or width < 1 or shape[1] % width:
            raise InputError(f"tensor {name!r}: block dim must be DENSE and divide {shape[1]}, got {width}")
        if indices.size * width != values.size:
            raise InputError(f"tensor {name!r}: {indices.size} blocks of {width} need {indices.size * width} values, "
                             f"the buffer holds {values.size}")
    # blocks -> entries: block j of a row covers columns width*j .. width*j + width - 1
    row_ptr = (segments.astype(np.int64) * width).astype(np.int32)
    col_idx = (indices.astype(np.int64)[:, None] * width + np.arange(width)).ravel().astype(np.int32)
    csr = CSR((shape[0], shape[1]), row_ptr, col_idx, values.astype(np.float32))
    csr.check(name)
    return csr


def _tensors(model) -> dict[str, tuple]:
    """name -> (tensor, its buffer's bytes as uint8) over every subgraph (WHILE bodies hold a recurrence's weights)."""
    out = {}
    for k in range(model.SubgraphsLength()):
        sub = model.Subgraphs(k)
        for i in range(sub.TensorsLength()):
            t = sub.Tensors(i)
            buf = model.Buffers(t.Buffer())
            data = buf.DataAsNumpy() if buf is not None and buf.DataLength() else np.zeros(0, np.uint8)
            out.setdefault(t.Name().decode(), (t, data))
    return out


def _array(name: str, entry: tuple) -> np.ndarray | CSR:
    t, data = entry
    dtype = NUMPY_TYPES.get(t.Type())
    if dtype is None:
        raise InputError(f"tensor {name!r}: unsupported type {t.Type()}")
    values = np.frombuffer(data.tobytes(), dtype=dtype.newbyteorder("<"))
    if t.Sparsity() is not None:
        return sparse_csr(t, values)
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    if values.size != int(np.prod(shape)):
        raise InputError(f"tensor {name!r}: buffer holds {values.size} values, shape {shape} needs {np.prod(shape)}")
    return values.reshape(shape)


def _dense(name: str, info: dict, tensors: dict[str, tuple]) -> np.ndarray:
    """W (float64) from the tensors the file computes with, as named in the dkp.layers metadata."""
    try:
        t = {role: _array(tname, tensors[tname]) for role, tname in info.get("tensors", {}).items()}
    except KeyError as e:
        raise InputError(f"layer {name!r}: tensor {e.args[0]!r} named in the metadata is not in the file") from None
    sparse = t.get("W_s")
    if sparse is None and {"row_ptr", "col_idx", "values"} <= set(t):  # W_s as plain CSR arrays (an embedding's)
        sparse = CSR(tuple(info["shape"]), t["row_ptr"], t["col_idx"], np.asarray(t["values"], np.float32))
        sparse.check(name)
    parts = {role: a for role, a in t.items() if role in ("W", "B", "C", "U", "V", "W_top")}
    return dense_from_parts(name, tuple(info["shape"]), parts, sparse if isinstance(sparse, CSR) else None)


def _check_buffers_in_file(model: Any, size: int) -> None:
    """Every buffer and table must lie inside the file: flatbuffers reads lazily, so a cut file parses, fails late."""
    for i in range(model.BuffersLength()):
        b = model.Buffers(i)
        n = b.DataLength()
        if n:
            start = b._tab.Vector(b._tab.Offset(4))  # where the byte vector's data begins
            if start + n > size:
                raise InputError(f"truncated TFLite file (buffer {i} ends at byte {start + n}, the file has {size})")
        if b.Offset() > 1 and b.Offset() + b.Size() > size:  # out-of-band buffers (files over 2 GB)
            raise InputError(f"truncated TFLite file (buffer {i} ends past the end of the file)")
    # Touch every table the runtime reads: a read past the end raises (struct / numpy errors: "corrupt" below).
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        code.BuiltinCode(), code.DeprecatedBuiltinCode(), code.Version()
    for g in range(model.SubgraphsLength()):
        sub = model.Subgraphs(g)
        sub.InputsAsNumpy(), sub.OutputsAsNumpy()
        for t in range(sub.TensorsLength()):
            tensor = sub.Tensors(t)
            tensor.ShapeAsNumpy(), tensor.Buffer(), tensor.Type(), tensor.Name()
        for o in range(sub.OperatorsLength()):
            op = sub.Operators(o)
            op.OpcodeIndex(), op.InputsAsNumpy(), op.OutputsAsNumpy(), op.BuiltinOptionsType()


def load_exported(path: str | os.PathLike) -> ExportedModel:
    """The file's metadata, mode and dense W per matrix name (`ModelSpec.matrices()` names)."""
    p = existing_file(path)
    buf = p.read_bytes()
    if len(buf) < 8 or buf[4:8] != FILE_IDENTIFIER:
        raise InputError("not a TFLite file (no TFL3 identifier)", p)
    try:
        model = tflite.Model.GetRootAs(buf, 0)
        _check_buffers_in_file(model, len(buf))
        meta = {}
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            data = model.Buffers(entry.Buffer())
            raw = data.DataAsNumpy().tobytes() if data is not None and data.DataLength() else b""
            meta[entry.Name().decode()] = raw.decode("utf-8", errors="replace")
        layers = layers_from_metadata(meta, p)
        if model.SubgraphsLength() < 1:
            raise InputError("the file has no subgraph", p)
        tensors = _tensors(model)
        matrices = {name: _dense(name, info, tensors) for name, info in layers.items()}
    except InputError as e:
        raise e if e.path else InputError(str(e), p) from None
    except Exception as e:  # a flatbuffer with bad offsets fails in many ways (struct, index, unicode errors)
        raise InputError(f"corrupt TFLite file ({type(e).__name__})", p) from None
    return ExportedModel(path=Path(p), format="tflite", mode=meta.get("dkp.mode", "step"), matrices=matrices,
                         metadata=meta)
