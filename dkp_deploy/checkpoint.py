"""The versioned checkpoint file: `save` a doped model, `load_spec` it back (torch optional), `load` a torch module.

A checkpoint is a torch zip file (``torch.save``) holding one dict of plain values and tensors only, so that
``torch.load(path, weights_only=True)`` reads it; docs/checkpoint-format.md lists every field. Reading needs no
torch: without it (an ARM board running dkp-convert / dkp-validate) the zip is parsed here with a restricted
unpickler that knows only the few globals a tensor rebuild uses and maps tensors to numpy. Nothing in a file is
ever executed; every problem with a file is an `InputError` naming it.
"""

from __future__ import annotations

import collections
import contextlib
import io
import math
import os
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import InputError
from .fileio import atomic_output, existing_file
from .spec import (
    ACTIVATIONS,
    ARCHITECTURES,
    CSR,
    FACTOR_NAMES,
    LSTM,
    STRUCTURES,
    Activation,
    DopedMatrix,
    Embedding,
    Linear,
    LSTMLayer,
    ModelSpec,
)

FORMAT = "dkp-deploy-checkpoint"
VERSION = 2  # the newest format version this module writes and reads (2: config.layers.<name>.sparse_block)
DEFAULT_MAX_MEMORY = 4 << 30  # bytes a checkpoint may need once loaded and folded; `max_memory` / --max-memory
_limit = [DEFAULT_MAX_MEMORY]  # the active limit (a list: `max_memory` swaps it without a global statement)
_MAX_DEPTH = 32  # nesting allowed in config / metadata: deeper is a malformed (or hostile) file
_CORRUPT = "corrupted or truncated checkpoint"
# a stride-0 view: copying it could take any amount of memory, and dkp_deploy.save never writes one
_BROADCAST = "a tensor with more elements than its stored data (a broadcast view), which checkpoints never hold"
_SHARED = "two tensors share stored data, which checkpoints never hold"

# -- save -----------------------------------------------------------------------------------------------------


def save(model: Any, path: str | os.PathLike) -> None:
    """Write `model`, a doped torch module (via `dkp_deploy.nn.to_spec`) or a `ModelSpec`, as a checkpoint at `path`.

    Arrays are stored as float32 (weights) and int32 (CSR indices). The file is written atomically and is
    deterministic: the same model gives the same bytes.
    """
    import torch

    if isinstance(model, ModelSpec):
        spec = model
    else:
        from .nn import to_spec

        spec = to_spec(model)
    spec.check()
    _check_csr_order(spec)  # refuse to write what load_spec would refuse to read
    payload = _to_payload(spec, lambda a, dtype: torch.from_numpy(np.array(a, dtype=dtype, order="C", copy=True)))
    # Into memory first: torch names the zip's top folder after the file, and the temp name is random.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_output(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _to_payload(spec: ModelSpec, tensor: Any) -> dict[str, Any]:
    def matrix(w: DopedMatrix) -> dict[str, Any]:
        sparse = None
        if w.sparse is not None:
            s = w.sparse
            sparse = {
                "row_ptr": tensor(s.row_ptr, np.int32),
                "col_idx": tensor(s.col_idx, np.int32),
                "values": tensor(s.values, np.float32),
            }
        return {
            "shape": [int(w.shape[0]), int(w.shape[1])],
            "structure": w.structure,
            "factors": {k: tensor(v, np.float32) for k, v in w.factors.items()},
            "W_s": sparse,
        }

    def vector(b: np.ndarray | None) -> Any:
        return None if b is None else tensor(b, np.float32)

    blocks: list[dict[str, Any]] = []
    for b in spec.blocks:
        if isinstance(b, Linear):
            blocks.append({"type": "linear", "name": b.name, "weight": matrix(b.weight), "bias": vector(b.bias)})
        elif isinstance(b, Activation):
            blocks.append({"type": "activation", "name": b.name, "kind": b.kind})
        elif isinstance(b, LSTM):
            layers = [{"weight": matrix(layer.weight), "bias": vector(layer.bias)} for layer in b.layers]
            blocks.append(
                {
                    "type": "lstm",
                    "name": b.name,
                    "input_size": int(b.input_size),
                    "hidden_size": int(b.hidden_size),
                    "batch_first": bool(b.batch_first),
                    "layers": layers,
                }
            )
        else:
            blocks.append({"type": "embedding", "name": b.name, "weight": tensor(b.weight, np.float32)})
    summary = spec.summary()
    metadata = {
        **_plain_for_save(spec.metadata, "metadata"),
        "tool": "dkp-deploy",
        "tool_version": __version__,
        "compression_factor": summary["compression_factor"],
        "layers": summary["layers"],
    }
    return {
        "format": FORMAT,
        "version": VERSION,
        "arch": spec.arch,
        "blocks": blocks,
        "config": _plain_for_save(spec.config, "config"),
        "metadata": metadata,
    }


def _plain_for_save(value: Any, where: str, depth: int = 0) -> Any:
    """`value` with numpy scalars made Python ones; TypeError for anything a checkpoint cannot hold."""
    if depth > _MAX_DEPTH:
        raise TypeError(f"{where}: nested too deeply for a checkpoint")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        items = [_plain_for_save(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string")
            out[k] = _plain_for_save(v, f"{where}.{k}", depth + 1)
        return out
    raise TypeError(f"{where}: a {type(value).__name__} cannot be stored in a checkpoint (plain values only)")


# -- load -----------------------------------------------------------------------------------------------------


def load(path: str | os.PathLike) -> Any:
    """The torch module a checkpoint holds (`dkp_deploy.nn.from_spec` of `load_spec`), in eval mode."""
    from .nn import from_spec

    return from_spec(load_spec(path))


@contextlib.contextmanager
def max_memory(limit: int) -> Iterator[None]:
    """Within the block, `load_spec` refuses checkpoints that would need more than `limit` bytes (see `load_spec`)."""
    old, _limit[0] = _limit[0], int(limit)
    try:
        yield
    finally:
        _limit[0] = old


def load_spec(path: str | os.PathLike, *, use_torch: bool | None = None, max_memory: int | None = None) -> ModelSpec:
    """Read and check a checkpoint; every problem is an `InputError` naming `path`.

    `use_torch`: None reads with ``torch.load(weights_only=True)`` when torch is importable and with the
    torch-free reader otherwise; True / False force one of them (both give identical specs).
    `max_memory`: bytes the file may need (its stored tensors, and each layer's M x N matrix folded in float64,
    the largest array a converter or the validator builds); checked from the zip headers and declared shapes
    before anything that large is allocated. Default: the `max_memory` context's limit, else 4 GiB.
    """
    limit = _limit[0] if max_memory is None else int(max_memory)
    try:
        file = existing_file(path)
        _check_stored_size(file, limit)
        raw = _read(file, use_torch)
        spec = _parse(raw)
        _check_declared_size(spec, limit)
        spec.check()
        _check_csr_order(spec)
        _check_metadata(spec)
    except InputError as e:
        message = str(e)[len(e.path) + 2 :] if e.path is not None else str(e)
        raise InputError(" ".join(message.split()), path) from None  # one line, whatever the file held
    return spec


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 26 else f"{n} bytes"


def _check_stored_size(file: Path, limit: int) -> None:
    """Refuse a zip whose members would inflate past `limit`, from its central directory (nothing decompressed)."""
    try:
        with zipfile.ZipFile(file) as zf:
            total = sum(max(0, i.file_size) for i in zf.infolist())
    except Exception:  # noqa: BLE001 - not a readable zip: `_read` says so with the right message
        return
    if total > limit:
        raise InputError(f"its stored data would take {_gib(total)} in memory, over the {_gib(limit)} limit "
                         "(--max-memory / max_memory=)")


def _check_declared_size(spec: ModelSpec, limit: int) -> None:
    """Refuse a layer whose declared M x N, folded in float64, would take more than `limit` bytes."""
    matrices = spec.matrices() if hasattr(spec, "matrices") else {}
    for name, w in matrices.items():
        shape = getattr(w, "shape", None)
        if not (isinstance(shape, (tuple, list)) and len(shape) == 2 and all(type(d) is int for d in shape)):
            continue  # spec.check() reports a malformed shape
        need = 8 * max(0, shape[0]) * max(0, shape[1])
        if need > limit:
            raise InputError(f"layer {name!r} declares a {shape[0]} x {shape[1]} matrix, which needs {_gib(need)} "
                             f"to check and convert, over the {_gib(limit)} limit (--max-memory / max_memory=)")


def _read(file: Path, use_torch: bool | None) -> Any:
    """The unpickled top-level object of a torch zip file, tensors as numpy arrays."""
    try:
        is_zip = zipfile.is_zipfile(file)
    except Exception as e:  # noqa: BLE001 - is_zipfile raises on some malformed end records
        raise InputError(f"not a readable zip archive: {_CORRUPT} ({_first_line(e)})") from None
    if not is_zip:
        raise InputError(_not_zip_reason(file))
    if use_torch is None:
        try:
            import torch  # noqa: F401
        except ImportError:
            use_torch = False
        else:
            use_torch = True
    if not use_torch:
        return _read_without_torch(file)
    try:  # the torch-free reader's layout and CRC checks (and messages), before torch sees the file
        with zipfile.ZipFile(file) as zf:
            _TorchZip(zf).verify()
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile reports broken bytes with many exception types
        raise InputError(f"{_CORRUPT} ({_first_line(e)})") from None
    return _read_with_torch(file)


def _not_allowed(what: str) -> str:
    return (
        f"refusing to load: the file holds pickled code or objects that are not allowed in a checkpoint ({what}); "
        "nothing in it was executed"
    )


def _not_zip_reason(file: Path) -> str:
    with open(file, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        return f"not a readable zip archive: {_CORRUPT}"
    if head[:1] == b"\x80":  # a pickle of protocol >= 2: say so, and say it if it carries code
        try:
            _scan_opcodes(file.read_bytes())
            with open(file, "rb") as f:
                _RestrictedUnpickler(f, None).load()
        except _Forbidden as e:
            return _not_allowed(str(e))
        except Exception:  # noqa: BLE001 - any failure of a hostile or broken pickle means "not ours"
            pass
        return "a bare pickle, not a dkp-deploy checkpoint (a torch zip file written by dkp_deploy.save)"
    return "not a dkp-deploy checkpoint (a torch zip file written by dkp_deploy.save)"


def _read_with_torch(file: Path) -> Any:
    import torch

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            raw = torch.load(file, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - torch reports broken or refused files with many exception types
        # torch's reasons are long and vary by version; the torch-free reader names the problem the same way
        # on both paths (it is as restrictive, so running it on a refused file executes nothing either).
        _read_without_torch(file)
        raise InputError(f"{_CORRUPT} ({_first_line(e)})") from None

    converted: dict[int, Any] = {}  # by id: a hostile pickle can reference one object many times (a DAG)
    storages: set[int] = set()

    def to_numpy(obj: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise InputError("nested too deeply: not a dkp-deploy checkpoint")
        if id(obj) in converted:
            return converted[id(obj)]
        out = obj
        if isinstance(obj, torch.Tensor):
            if obj.device.type != "cpu":  # map_location="cpu" leaves meta tensors, which hold no data
                raise InputError(f"a tensor on device {obj.device.type!r} holds no data: not a dkp-deploy checkpoint")
            name = str(obj.dtype).removeprefix("torch.")
            if obj.layout != torch.strided or name not in _NUMPY_DTYPES:
                out = _UnsupportedTensor(f"{name} ({obj.layout})" if obj.layout != torch.strided else name)
            else:
                storage = obj.untyped_storage()
                if obj.numel() * obj.element_size() > storage.nbytes():
                    raise InputError(_BROADCAST)
                if storage.nbytes() and storage.data_ptr() in storages:
                    raise InputError(_SHARED)
                storages.add(storage.data_ptr())
                out = np.array(obj.detach().numpy(), copy=True, order="C")
        elif isinstance(obj, dict):
            out = converted[id(obj)] = {}
            out.update((k, to_numpy(v, depth + 1)) for k, v in obj.items())
        elif isinstance(obj, list):
            out = converted[id(obj)] = []
            out.extend(to_numpy(v, depth + 1) for v in obj)
        elif isinstance(obj, tuple):
            out = tuple(to_numpy(v, depth + 1) for v in obj)
        converted[id(obj)] = out
        return out

    return to_numpy(raw, 0)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


# -- the torch-free reader ------------------------------------------------------------------------------------

# numpy dtypes of the storages and tensor dtypes torch writes (names as torch spells them)
_NUMPY_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
}
_STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "BFloat16Storage": "bfloat16",
}
# opcodes that build or mutate arbitrary objects; a weights-only file never needs them
_OBJECT_OPCODES = {"BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"}


class _Forbidden(Exception):
    """A pickle asked for something a weights-only file may not hold (its text names what)."""


class _UnsupportedTensor:
    """A tensor of a dtype or layout numpy cannot hold; the schema check reports it."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


class _StorageType:
    """What `torch.FloatStorage` & co. unpickle to: only the dtype name (not callable)."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


class _Storage:
    def __init__(self, data: np.ndarray | None, dtype: str) -> None:
        self.data = data  # None for dtypes numpy lacks
        self.dtype = dtype
        self.used = False  # one tensor per storage: else a small file could make many large copies


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> Any:
    """torch._utils._rebuild_tensor_v2 for numpy: a contiguous copy of the strided view, bounds checked."""
    if not isinstance(storage, _Storage):
        raise ValueError("tensor without a storage")
    ints = (offset, *size, *stride) if isinstance(size, tuple) and isinstance(stride, tuple) else None
    if ints is None or len(size) != len(stride) or not all(type(v) is int and v >= 0 for v in ints):
        raise ValueError("malformed tensor header")
    if storage.used:
        raise InputError(_SHARED)
    storage.used = True
    if storage.data is None:
        return _UnsupportedTensor(storage.dtype)
    numel = math.prod(size)
    if numel > storage.data.shape[0]:
        raise InputError(_BROADCAST)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if numel else offset - 1
    if last >= storage.data.shape[0]:
        raise ValueError("tensor extends past its storage")
    flat = storage.data[offset:]
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat, shape=size, strides=tuple(s * item for s in stride), writeable=False)
    return np.array(view, copy=True)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles the data.pkl of a torch zip file with only tensor-rebuild globals; storages read from the zip."""

    def __init__(self, file: Any, zip_file: _TorchZip | None) -> None:
        super().__init__(file)
        self._zip = zip_file
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise _Forbidden(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if self._zip is None:
            raise ValueError("persistent id outside a torch zip file")
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ValueError("unsupported persistent id")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or type(numel) is not int:
            raise ValueError("malformed storage reference")
        if key not in self._storages:
            self._storages[key] = self._zip.storage(key, storage_type.dtype, numel)
        return self._storages[key]


class _TorchZip:
    """The records of a torch zip file (``<prefix>/data.pkl``, ``<prefix>/data/<key>``, ``<prefix>/byteorder``)."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        names = zf.namelist()
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if any(n.endswith("/constants.pkl") for n in names):
            raise InputError("a TorchScript archive, not a dkp-deploy checkpoint")
        if len(pickles) != 1:
            raise InputError("a zip file but not a torch checkpoint (no single <archive>/data.pkl)")
        self.prefix = pickles[0][: -len("data.pkl")]
        order = self.read(self.prefix + "byteorder").decode("ascii") if self.prefix + "byteorder" in names else "little"
        if order not in ("little", "big"):
            raise ValueError(f"unknown byte order {order!r}")
        self.byteorder = "<" if order == "little" else ">"

    def read(self, name: str) -> bytes:
        info = self.zf.getinfo(name)
        if info.compress_type != zipfile.ZIP_STORED:  # torch never compresses; refusing avoids zip bombs
            raise ValueError(f"record {name} is compressed")
        return self.zf.read(info)

    def verify(self) -> None:
        """Check the layout torch.load insists on, then read every record once so zipfile checks its CRC.

        Both readers run this first, so they refuse the same files with the same message: data before the
        archive, a member outside ``<prefix>/`` (``../x``, absolute), or central-directory sizes that disagree
        with the local headers (zipfile alone would trust the central directory).
        """
        fp = self.zf.fp
        infos = self.zf.infolist()
        if fp is not None and infos:
            fp.seek(0)
            if fp.read(4) != b"PK\x03\x04" or min(i.header_offset for i in infos) != 0:
                raise InputError(f"data before the zip archive: {_CORRUPT}")
        for info in infos:
            name = info.filename
            parts = name.split("/")
            if not name.startswith(self.prefix) or name.startswith("/") or "\\" in name or ".." in parts:
                raise InputError(f"a zip member outside the archive's folder ({_show_name(name)}): {_CORRUPT}")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"record {info.filename} is compressed")
            if info.compress_size != info.file_size:
                raise InputError(f"record {_show_name(name)}: sizes disagree in the zip directory: {_CORRUPT}")
            if fp is not None:
                fp.seek(info.header_offset)
                header = fp.read(30)
                if len(header) < 30 or header[:4] != b"PK\x03\x04":
                    raise InputError(f"record {_show_name(name)}: no local header where the directory says: {_CORRUPT}")
                flags, csize, usize = (int.from_bytes(header[a:b], "little") for a, b in ((6, 8), (18, 22), (22, 26)))
                if not flags & 0x08 and (csize, usize) != (info.compress_size, info.file_size):
                    raise InputError(f"record {_show_name(name)}: sizes in the zip directory disagree with its local "
                                     f"header: {_CORRUPT}")
            with self.zf.open(info) as f:
                while f.read(1 << 20):
                    pass

    def storage(self, key: str, dtype: str, numel: int) -> _Storage:
        name = f"{self.prefix}data/{key}"
        if dtype not in _NUMPY_DTYPES:
            self.zf.getinfo(name)
            return _Storage(None, dtype)
        np_dtype = np.dtype(_NUMPY_DTYPES[dtype]).newbyteorder(self.byteorder)
        if self.zf.getinfo(name).file_size != numel * np_dtype.itemsize:
            raise ValueError(f"storage {key}: size does not match {numel} {dtype} elements")
        data = np.frombuffer(self.read(name), dtype=np_dtype)
        return _Storage(data.astype(data.dtype.newbyteorder("=")), dtype)


def _show_name(name: str) -> str:
    return repr(name[:80])


def _scan_opcodes(data: bytes) -> None:
    """Refuse object-building opcodes before anything is unpickled (no code runs while scanning)."""
    for op, _arg, _pos in pickletools.genops(data):
        if op.name in _OBJECT_OPCODES:
            raise _Forbidden(f"pickle opcode {op.name}")


def _read_without_torch(file: Path) -> Any:
    try:
        with zipfile.ZipFile(file) as zf:
            tz = _TorchZip(zf)
            tz.verify()
            data = tz.read(tz.prefix + "data.pkl")
            _scan_opcodes(data)
            return _RestrictedUnpickler(io.BytesIO(data), tz).load()
    except InputError:
        raise
    except _Forbidden as e:
        raise InputError(_not_allowed(str(e))) from None
    except Exception as e:  # noqa: BLE001 - zipfile/pickle report broken bytes with many exception types
        raise InputError(f"{_CORRUPT} ({_first_line(e)})") from None


# -- the schema: plain values and numpy arrays -> ModelSpec -----------------------------------------------------


def _show(value: Any, limit: int = 60) -> str:
    """A short one-line description of a value read from a file, for error messages."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype.name} tensor of shape {list(value.shape)}"
    if isinstance(value, _UnsupportedTensor):
        return f"a {value.dtype} tensor"
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fields(obj: Any, where: str, required: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a dict, found a {type(obj).__name__}")
    keys = set(obj)
    if keys - required:
        raise InputError(f"{where}: unexpected field(s) {', '.join(sorted(map(_show, keys - required)))}")
    if required - keys:
        raise InputError(f"{where}: missing field(s) {sorted(required - keys)}")
    return obj


def _typed(value: Any, where: str, kind: type | tuple[type, ...]) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if type(value) not in kinds:
        want = " or ".join(k.__name__ for k in kinds)
        raise InputError(f"{where}: expected {want}, found {type(value).__name__}")
    return value


def _size(value: Any, where: str, minimum: int = 0) -> int:
    _typed(value, where, int)
    if value < minimum:
        raise InputError(f"{where}: {value} is below {minimum}")
    return value


def _array(value: Any, where: str, dtype: type, ndim: int) -> np.ndarray:
    want = np.dtype(dtype).name
    if isinstance(value, _UnsupportedTensor):
        raise InputError(f"tensor {where}: dtype {value.dtype}, expected {want}")
    if not isinstance(value, np.ndarray):
        raise InputError(f"{where}: expected a {want} tensor, found {type(value).__name__}")
    if value.dtype != dtype:
        raise InputError(f"tensor {where}: dtype {value.dtype.name}, expected {want}")
    if value.ndim != ndim:
        raise InputError(f"tensor {where}: {value.ndim}-D (shape {list(value.shape)}), expected {ndim}-D")
    return value


def _plain(value: Any, where: str, depth: int = 0, seen: set[int] | None = None) -> None:
    """Raise unless `value` is a tree of plain values (no container reached twice: no DAG, no cycle)."""
    seen = set() if seen is None else seen
    if depth > _MAX_DEPTH:
        raise InputError(f"{where}: nested too deeply")
    if value is None or type(value) in (bool, int, float, str):
        return
    if type(value) in (list, tuple, dict, collections.OrderedDict) and len(value):
        if id(value) in seen:
            raise InputError(f"{where}: a shared or cyclic reference, which checkpoints never hold")
        seen.add(id(value))
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            _plain(v, f"{where}[{i}]", depth + 1, seen)
    elif type(value) in (dict, collections.OrderedDict):
        for k, v in value.items():
            if type(k) is not str:
                raise InputError(f"{where}: key {_show(k)} is not a string")
            _plain(v, f"{where}.{k}", depth + 1, seen)
    else:
        raise InputError(f"{where}: a {type(value).__name__} where only plain values are allowed")


def _matrix(obj: Any, where: str) -> DopedMatrix:
    d = _fields(obj, where, {"shape", "structure", "factors", "W_s"})
    shape = _typed(d["shape"], f"{where}.shape", (list, tuple))
    if len(shape) != 2:
        raise InputError(f"{where}.shape: expected [rows, cols], found {len(shape)} entries")
    m, n = (_size(v, f"{where}.shape") for v in shape)
    structure = _typed(d["structure"], f"{where}.structure", str)
    if structure not in STRUCTURES:
        raise InputError(f"{where}: unknown structure {_show(structure)} (known: {', '.join(STRUCTURES)})")
    factors = _typed(d["factors"], f"{where}.factors", (dict, collections.OrderedDict))
    want = set(FACTOR_NAMES[structure])
    if missing := want - set(factors):
        raise InputError(f"{where}: missing tensor(s) {sorted(missing)} (structure {structure!r} needs {sorted(want)})")
    if extra := set(factors) - want:
        raise InputError(
            f"{where}: unexpected tensor(s) {', '.join(sorted(map(_show, extra)))} for structure {structure!r}"
        )
    arrays = {k: _array(factors[k], f"{where}.{k}", np.float32, 2) for k in FACTOR_NAMES[structure]}
    sparse = None
    if d["W_s"] is not None:
        s = _fields(d["W_s"], f"{where}.W_s", {"row_ptr", "col_idx", "values"})
        sparse = CSR(
            (m, n),
            _array(s["row_ptr"], f"{where}.W_s.row_ptr", np.int32, 1),
            _array(s["col_idx"], f"{where}.W_s.col_idx", np.int32, 1),
            _array(s["values"], f"{where}.W_s.values", np.float32, 1),
        )
    return DopedMatrix((m, n), structure, arrays, sparse)


def _bias(value: Any, where: str) -> np.ndarray | None:
    return None if value is None else _array(value, where, np.float32, 1)


def _block(obj: Any, index: int) -> Any:
    if not isinstance(obj, dict):
        raise InputError(f"blocks[{index}]: expected a dict, found a {type(obj).__name__}")
    kind = obj.get("type")
    name = obj.get("name")
    if type(name) is not str or not name or len(name) > 200 or not name.isprintable():
        raise InputError(f"blocks[{index}]: missing or invalid 'name' {_show(name)}")
    if type(kind) is not str:
        raise InputError(f"block {name!r}: missing or non-string 'type'")
    if kind == "linear":
        d = _fields(obj, name, {"type", "name", "weight", "bias"})
        return Linear(name, _matrix(d["weight"], f"{name}.weight"), _bias(d["bias"], f"{name}.bias"))
    if kind == "activation":
        d = _fields(obj, name, {"type", "name", "kind"})
        act = _typed(d["kind"], f"{name}.kind", str)
        if act not in ACTIVATIONS:
            raise InputError(f"{name}: unknown activation {_show(act)} (known: {', '.join(ACTIVATIONS)})")
        return Activation(name, act)
    if kind == "lstm":
        d = _fields(obj, name, {"type", "name", "input_size", "hidden_size", "batch_first", "layers"})
        layers = []
        for k, layer in enumerate(_typed(d["layers"], f"{name}.layers", list)):
            ld = _fields(layer, f"{name}.{k}", {"weight", "bias"})
            bias = _array(ld["bias"], f"{name}.{k}.bias", np.float32, 1)
            layers.append(LSTMLayer(_matrix(ld["weight"], f"{name}.{k}.weight"), bias))
        return LSTM(
            name,
            _size(d["input_size"], f"{name}.input_size", 1),
            _size(d["hidden_size"], f"{name}.hidden_size", 1),
            layers,
            batch_first=_typed(d["batch_first"], f"{name}.batch_first", bool),
        )
    if kind == "embedding":
        d = _fields(obj, name, {"type", "name", "weight"})
        return Embedding(name, _array(d["weight"], f"{name}.weight", np.float32, 2))
    raise InputError(f"block {name!r}: unknown block type {_show(kind)} (known: linear, activation, lstm, embedding)")


def _parse(raw: Any) -> ModelSpec:
    if not isinstance(raw, dict) or type(raw.get("format")) is not str or raw["format"] != FORMAT:
        if isinstance(raw, dict) and raw and all(isinstance(v, (np.ndarray, _UnsupportedTensor)) for v in raw.values()):
            raise InputError(
                f"a plain state_dict ({len(raw)} tensors), not a dkp-deploy checkpoint: write models with "
                "dkp_deploy.save"
            )
        raise InputError(f"not a dkp-deploy checkpoint (no format tag {FORMAT!r})")
    version = raw.get("version")
    if type(version) is not int or version < 1:
        raise InputError(f"unknown checkpoint format version {_show(version)}")
    if version > VERSION:
        raise InputError(
            f"written by a newer dkp-deploy (format version {version}); this reader supports up to {VERSION}: "
            "upgrade dkp-deploy"
        )
    d = _fields(raw, "checkpoint", {"format", "version", "arch", "blocks", "config", "metadata"})
    arch = _typed(d["arch"], "arch", str)
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture {_show(arch)} (known: {', '.join(ARCHITECTURES)})")
    for key in ("config", "metadata"):
        _typed(d[key], key, (dict, collections.OrderedDict))
        _plain(d[key], key)
    blocks = [_block(b, i) for i, b in enumerate(_typed(d["blocks"], "blocks", list))]
    return ModelSpec(arch, blocks, dict(d["config"]), dict(d["metadata"]))


def _check_csr_order(spec: ModelSpec) -> None:
    """Column indices strictly increase within each row (no duplicates): what CSR.from_dense and kernels assume."""
    for name, w in spec.matrices().items():
        s = w.sparse
        if s is None or s.nnz < 2:
            continue
        rows = np.repeat(np.arange(s.shape[0]), np.diff(s.row_ptr.astype(np.int64)))
        same_row = rows[1:] == rows[:-1]
        if np.any(np.diff(s.col_idx.astype(np.int64))[same_row] <= 0):
            raise InputError(f"{name}.W_s.col_idx: not strictly increasing within a row (unsorted or duplicate)")


def _check_metadata(spec: ModelSpec) -> None:
    """The per-layer shapes and nnz the metadata records must describe the tensors actually stored."""
    layers = spec.metadata.get("layers")
    matrices = spec.matrices()
    if not isinstance(layers, dict) or set(layers) != set(matrices):
        raise InputError(f"metadata.layers must list exactly the layers {sorted(matrices)}")
    for name, w in matrices.items():
        rec = layers[name]
        shape, nnz = (rec.get("shape"), rec.get("nnz")) if isinstance(rec, dict) else (None, None)
        if type(nnz) is not int or nnz != w.nnz or type(shape) not in (list, tuple) or list(shape) != list(w.shape):
            got = (shape, nnz) if isinstance(rec, dict) else rec
            raise InputError(
                f"metadata for layer {name!r} records shape/nnz {_show(got)}, but the tensors hold {list(w.shape)} / "
                f"{w.nnz}: inconsistent file"
            )


__all__ = ["DEFAULT_MAX_MEMORY", "FORMAT", "VERSION", "load", "load_spec", "max_memory", "save"]
