"""`export`: any torch `nn.Module` holding doped layers -> a hub -> a lowered ONNX file (torch.onnx conventions).

torch.export captures the module (every `DopedLinear` kept whole as one `dkp::doped_linear` call, see
`export.ops`), torch.onnx translates the rest to standard ops, `export.hub` turns each doped layer into an
`ai.dkp::DopedMatMul` hub node (factors + CSR W_s), and `dkp_deploy.lower` rewrites the hub for the target.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from .. import __version__
from ..converters.metadata import FORMAT_VERSION
from ..errors import InputError
from ..fileio import atomic_output
from ..lower import SPARSE_IMPLS, lower
from ..quantize import check_mode

TARGETS = (".onnx", ".tflite")
IMPLS = (*SPARSE_IMPLS, "hub")
OPSETS = range(18, 22)  # torch.onnx writes opset 18 and newer
DEFAULT_OPSET = 18  # onnxruntime >= 1.14 runs it (the ARM board's 1.16 included)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(e).__name__


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """torch.onnx / onnx-ir narrate on stdout and warn through logging: keep a CLI's output to its own lines."""
    loggers = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def program(model: Any, args: tuple, *, kwargs: dict | None = None, dynamic_shapes: Any = None):
    """`torch.export.export` of `model` in eval mode with every DopedLinear kept whole (one `dkp::doped_linear`
    call): the program `torch.export.save` can write as a `.pt2` that `dkp-convert` reads."""
    import torch

    from . import ops

    if not isinstance(args, tuple):
        args = (args,)
    was_training = model.training
    model.eval()
    try:
        with ops.capture(model), torch.no_grad():
            return torch.export.export(model, args, kwargs=kwargs, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as e:
        raise InputError(f"torch.export cannot capture the model: {_first_line(e)}") from None
    finally:
        model.train(was_training)


def hub_from_program(
    exported: Any, *, input_names: list[str] | None = None, output_names: list[str] | None = None,
    opset: int = DEFAULT_OPSET, mode: str = "sequence",
) -> onnx.ModelProto:
    """The hub (an in-memory ONNX model) of a program from `program` (or `torch.export.load`); `mode="step"`
    writes each recurrence as one time step (the program's T must be 1), without Scan."""
    import torch

    from . import hub, ops

    for node in exported.graph.nodes:
        target = str(node.target)
        if node.op == "call_function" and any(k in target for k in ("aten.lstm", "aten.gru", "aten.rnn_")):
            raise InputError(f"the program calls {target}: recurrent layers do not export yet (torch.onnx's own "
                             "translation is wrong at other sequence lengths)")
    try:
        with _quiet_exporters():
            onnx_program = torch.onnx.export(
                exported, dynamo=True, opset_version=opset, custom_translation_table=ops.translation_table(),
                input_names=input_names, output_names=output_names, optimize=True, verbose=False,
            )
            proto = onnx_program.model_proto
    except Exception as e:
        raise InputError(f"torch.onnx cannot translate the model: {_first_line(e)}") from None
    hub.to_hub(proto, opset, mode)
    helper.set_model_props(proto, {"dkp.format_version": str(FORMAT_VERSION), "dkp.tool_version": __version__,
                                   "dkp.front_end": "dkp_deploy.export", "dkp.hub": "1", "dkp.mode": mode})
    proto.producer_name, proto.producer_version = "dkp-deploy", __version__
    # torch.onnx writes the newest IR version (10); the oldest that holds the opset lets onnxruntime 1.16 load it
    proto.ir_version = helper.find_min_ir_version_for(
        [o for o in proto.opset_import if o.domain in ("", "ai.onnx")], ignore_unknown=True)
    return proto


def write(hub_model: onnx.ModelProto, path: str | os.PathLike, sparse_impl: str = "custom",
          quantize: str | None = None) -> Path:
    """Lower `hub_model` for `sparse_impl` (or keep it: "hub") and write it atomically to `path`; a `.tflite` path
    gets the TFLite translation (builtin ops; `sparse_impl` does not apply). `quantize="int8"`: the doped matrices
    in int8 (`dkp_deploy.quantize`; custom and portable .onnx only); `"int8-dynamic"`: the same weights, and each
    doped matrix's input quantized to uint8 at run time (DynamicQuantizeLinear)."""
    p = Path(path)
    if p.suffix.lower() not in TARGETS:
        raise InputError(f"unknown target {p.suffix or '(no extension)'!r}: export writes .onnx or .tflite", p)
    if sparse_impl not in IMPLS:
        raise ValueError(f"sparse_impl must be one of {IMPLS}, got {sparse_impl!r}")
    check_mode(quantize)
    if quantize and (p.suffix.lower() == ".tflite" or sparse_impl not in ("custom", "portable")):
        raise InputError(f"quantize={quantize!r} writes .onnx with sparse_impl 'custom' or 'portable' "
                         f"(not {'.tflite' if p.suffix.lower() == '.tflite' else sparse_impl!r})", p)
    if p.suffix.lower() == ".tflite":
        try:
            from ..converters.tflite.hub import write as write_tflite
        except ImportError as e:
            raise InputError(f"TFLite output needs the tflite extra (pip install 'dkp-deploy[tflite]'): {e}",
                             p) from None
        return write_tflite(hub_model, p)
    out = hub_model if sparse_impl == "hub" else lower(hub_model, sparse_impl, quantize)
    if sparse_impl == "custom" and any(o.domain == "ai.dkp" for o in out.opset_import):
        from ..ops import LIBRARY_DOC

        out.doc_string = LIBRARY_DOC
    if out.ByteSize() >= 2**31 - 1:
        raise InputError("model exceeds the 2 GiB protobuf limit of a single ONNX file", p)
    with atomic_output(p) as tmp:
        onnx.save_model(out, str(tmp))
    return p


def load_hub(path: str | os.PathLike) -> onnx.ModelProto:
    """A hub file written by `export(..., sparse_impl="hub")` (no torch needed)."""
    from ..fileio import existing_file
    from ..hub.schema import register_schemas

    p = existing_file(path)
    register_schemas()
    try:
        model = onnx.load(str(p))
    except Exception as e:
        raise InputError(f"not an ONNX file ({type(e).__name__})", p) from None
    if {m.key: m.value for m in model.metadata_props}.get("dkp.hub") != "1":
        raise InputError("not a dkp hub (export it with sparse_impl='hub'); a lowered file cannot be lowered again",
                         p)
    return model


def convert(source: str | os.PathLike, path: str | os.PathLike, *, sparse_impl: str = "custom",
            opset: int = DEFAULT_OPSET, quantize: str | None = None) -> Path:
    """dkp-convert's general inputs: a hub `.onnx` (torch-free) or a `.pt2` from `program` + `torch.export.save`.
    `quantize`: None, "int8" or "int8-dynamic", as `write` takes it."""
    src = Path(source)
    if src.suffix.lower() == ".pt2":
        import torch

        from ..fileio import existing_file
        from . import ops  # noqa: F401  (registers dkp::doped_linear before the program is loaded)

        try:
            exported = torch.export.load(str(existing_file(src)))
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"not a torch.export program ({_first_line(e)})", src) from None
        return write(hub_from_program(exported, opset=opset), path, sparse_impl, quantize)
    return write(load_hub(src), path, sparse_impl, quantize)


def export(
    model: Any,
    args: tuple,
    path: str | os.PathLike,
    *,
    kwargs: dict | None = None,
    dynamic_shapes: Any = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    sparse_impl: str = "custom",
    mode: str = "sequence",
    opset: int | None = None,
    quantize: str | None = None,
) -> Path:
    """Export `model(*args, **kwargs)` to `path`, with torch.onnx.export's conventions.

    `args` is a tuple (nested tuples flatten, in order, into graph inputs; outputs flatten likewise);
    `dynamic_shapes` as `torch.export.export` takes them. `sparse_impl`: "custom" (ai.dkp::SparseMatVec, needs
    the op library), "portable" (standard ops), "dense" (folded W, the baseline) or "hub" (the un-lowered hub,
    which `dkp-convert` lowers later without torch). Every DopedLinear becomes one doped node; the other layers
    stay standard ops; recurrent modules become Scan bodies (right at any T). `mode="step"`: each recurrence as
    one time step without Scan (export with T = 1: x_t and states in, outputs and states out).
    `quantize="int8"`: doped matrices stored in int8 (weights only; see `dkp_deploy.quantize`); `"int8-dynamic"`:
    the same weights, and each doped matrix's input quantized at run time (W8A8 dynamic; custom and portable).
    Writes atomically; returns the path.
    """
    if Path(path).suffix.lower() not in TARGETS:
        raise InputError(f"unknown target {Path(path).suffix or '(no extension)'!r}: export writes .onnx or .tflite",
                         path)
    if mode not in ("sequence", "step"):
        raise ValueError(f"mode must be 'sequence' or 'step', got {mode!r}")
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset not in OPSETS:
        raise ValueError(f"opset must be in {OPSETS.start}..{OPSETS.stop - 1}, got {opset}")
    if sparse_impl not in IMPLS:
        raise ValueError(f"sparse_impl must be one of {IMPLS}, got {sparse_impl!r}")
    exported = program(model, args, kwargs=kwargs, dynamic_shapes=dynamic_shapes)
    hub_model = hub_from_program(exported, input_names=input_names, output_names=output_names, opset=opset,
                                 mode=mode)
    return write(hub_model, path, sparse_impl, quantize)


class _CallableModule(types.ModuleType):
    """`dkp_deploy.export` is this package and the function at once: importing a submodule (which makes the package
    an attribute of `dkp_deploy`) must not turn `dkp_deploy.export(model, ...)` into "module is not callable"."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["export", "program", "hub_from_program", "write", "load_hub", "convert", "DEFAULT_OPSET", "OPSETS",
           "IMPLS"]
