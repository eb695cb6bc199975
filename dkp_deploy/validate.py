"""`dkp-validate`: prove an exported file computes what its source model computes.

Two kinds of checks, each a row of the `Report`:

- per layer: the dense W rebuilt from the source (spec / checkpoint) vs the dense W rebuilt from the file's own
  tensors (`load_exported`). Error = max |W_file - W_src| / max |W_src| (normwise relative), tolerance `rtol_layer`.
- end to end: seeded random inputs shaped by `dkp_deploy.signature` (for a sequence graph once with h0/c0 and
  once without, and at T = 1 and T = 5), plus optional user inputs, through the float64 `dkp_deploy.reference`
  and through the runtime. Error per output = max |out - ref| / max(1, max |ref|): absolute for outputs of
  magnitude <= 1 (states, activations), relative to the output's scale for larger ones (logits); tolerance
  `atol_e2e` (default 1e-4; `INT8_DYNAMIC_ATOL` for int8-dynamic files).

Quantized files (``dkp.quantize`` metadata) are compared with the source's weights as the file dequantizes them;
for int8-dynamic files the reference also passes each doped matrix's input through DynamicQuantizeLinear and back
(`dkp_deploy.quantize.dynamic_roundtrip`), as the file does.

The file's format comes from its extension: ``.onnx`` (onnxruntime with the ops library) or ``.tflite``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import reference, signature
from .errors import DkpError, InputError
from .fileio import existing_file
from .quantize import DYNAMIC, dequantize_hub, dequantized_spec, matrix_input
from .source import as_spec
from .spec import ModelSpec


@dataclass
class Row:
    kind: str  # "layer", "e2e" or "int8" (an int8 file's weights against the float ones)
    name: str  # matrix name, or "<feeds>:<output>"
    max_abs: float
    max_rel: float
    error: float  # the number compared with `tol`
    tol: float
    passed: bool
    note: str = ""


@dataclass
class Report:
    source: str
    exported: str
    format: str
    mode: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # informational, never decide pass/fail

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "exported": self.exported, "format": self.format, "mode": self.mode,
                "passed": self.passed, "rows": [_finite_json(asdict(r)) for r in self.rows], "notes": self.notes}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def table(self) -> str:
        """A table for people."""
        head = ("check", "name", "max abs", "max rel", "error", "tol", "")
        body = [(r.kind, r.name, f"{r.max_abs:.3g}", f"{r.max_rel:.3g}", f"{r.error:.3g}", f"{r.tol:.0e}",
                 ("ok" if r.passed else "FAIL") + (f" ({r.note})" if r.note else "")) for r in self.rows]
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
        fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths[:-1])) + "  {}"
        lines = [f"{self.exported} ({self.format}, {self.mode}) vs {self.source}", fmt.format(*head)]
        lines += [fmt.format(*b) for b in body]
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"{'PASSED' if self.passed else 'FAILED'}: {sum(r.passed for r in self.rows)}/{len(self.rows)}"
                     " checks within tolerance")
        return "\n".join(lines)

    __str__ = table


INT8_RTOL = 0.02  # int8 with one scale per row: ~0.3-0.8% of ||W||_F; a wrong scale or clip rule is far above
# int8-dynamic files end to end: the reference quantizes a doped matrix's input as the file does, but a value the
# float32 file and the float64 reference hold an ulp apart (after a layer or an LSTM step) can round to the
# neighbouring uint8 step, an error of one step times |W| there. Measured when only W_s read the quantization
# (tests/_onnx_models and torch-exported LSTM taggers, both impls, ~5000 output checks): <= 3e-7 without such a flip;
# flips in ~0.5% of the checks of big_mlp (W_s values ~N(0, 1), activations up to 13): 1.2e-3 and 2.9e-3; none
# elsewhere (the structured half's factors, read quantized too since, are smaller than those W_s values). The
# tolerance sits above those, so a correct file does not fail on a flip; the weights are checked exactly by the
# layer rows, and a wrong scale, zero point or wiring is off by far more. (A file that skipped the activation
# quantization altogether is off by 3e-4 to 9e-3: the layer-level tests catch that, not this tolerance.)
INT8_DYNAMIC_ATOL = 1e-2
_FLIP_NOTE = "int8-dynamic: an input within an ulp of a rounding boundary may round one uint8 step apart; see --atol"
E2E_ATOL = 1e-4


def _e2e_tol(atol_e2e: float | None, quantize: str | None) -> float:
    return atol_e2e if atol_e2e is not None else INT8_DYNAMIC_ATOL if quantize == DYNAMIC else E2E_ATOL


_DYNAMIC_NOTE = " and each doped matrix's input quantized as the file does (DynamicQuantizeLinear)"


def _int8_rows(report: Report, got: dict[str, np.ndarray], floats: dict[str, Any]) -> None:
    """An int8 file's doped matrices against the float ones, independently of how the file was quantized:
    ||W_file - W||_F <= INT8_RTOL ||W||_F (the checks against the dequantized weights show the file is exact)."""
    for name, w in floats.items():
        if w.structure == "dense" or name not in got:
            continue
        want = w.dense(np.float64)
        diff = np.asarray(got[name], np.float64) - want
        rel = float(np.linalg.norm(diff) / max(np.linalg.norm(want), 1e-30))
        max_abs = float(np.abs(diff).max()) if diff.size else 0.0
        report.rows.append(Row("int8", name, max_abs, rel, rel, INT8_RTOL, rel <= INT8_RTOL,
                               "vs the float weights, relative Frobenius"))


def _finite_json(row: dict[str, Any]) -> dict[str, Any]:
    """Strict JSON has no inf/NaN: write them as null (the row's `passed` and `note` say why)."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}


def _errors(out: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(max abs, max abs / max |ref|, max abs / max(1, max |ref|)); NaN anywhere counts as infinite error."""
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape:
        return float("inf"), float("inf"), float("inf")
    if out.size == 0:
        return 0.0, 0.0, 0.0
    diff = np.abs(out - ref)
    max_abs = float("inf") if not np.all(np.isfinite(diff)) else float(diff.max())
    scale = float(np.abs(ref).max())
    return max_abs, (max_abs / scale if scale else max_abs), max_abs / max(1.0, scale)


def _e2e_row(name: str, out: np.ndarray, ref: np.ndarray, tol: float, quantize: str | None) -> Row:
    """One output against its float64 reference (an int8-dynamic file's failure notes the rounding flips)."""
    max_abs, max_rel, err = _errors(out, ref)
    note = _FLIP_NOTE if quantize == DYNAMIC and err > tol else ""
    return Row("e2e", name, max_abs, max_rel, err, tol, err <= tol, note)


def _layer_row(name: str, got: np.ndarray | None, want: np.ndarray, tol: float) -> Row:
    """W rebuilt from the file (`got`, None when absent) against the source's W: normwise relative error."""
    if got is None:
        return Row("layer", name, np.inf, np.inf, np.inf, tol, False, "not in file")
    max_abs, max_rel, _ = _errors(got, want)
    return Row("layer", name, max_abs, max_rel, max_rel, tol, max_rel <= tol)


def _backend(path: Path):
    """(format, load_exported, runner factory) for the file's extension."""
    ext = path.suffix.lower()
    if ext == ".onnx":
        from . import runtime
        from .converters.onnx import load_exported

        def onnx_runner(p: Path):
            sess = runtime.session(p)  # a file onnxruntime cannot load is bad input (InputError)
            return lambda feeds: runtime.run(sess, feeds)

        return "onnx", load_exported, onnx_runner
    if ext == ".tflite":
        from . import tflite
        from .converters.tflite import load_exported

        return "tflite", load_exported, lambda p: (lambda feeds: tflite.run(p, feeds))
    raise InputError("unknown file type (expected .onnx or .tflite)", path)


def _check_npz_headers(path: Any, sigs: dict[str, Any]) -> None:
    """Names, ranks and sizes of an .npz's arrays from its zip directory and .npy headers, before any decompression.

    A deflated member can inflate to any size: only the few header bytes of each member are decompressed here,
    and the arrays must fit the checkpoint memory limit (`dkp_deploy.checkpoint.max_memory`).
    """
    import zipfile

    from .checkpoint import _limit

    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = sorted(i.filename.removesuffix(".npy") for i in infos)
            unknown = sorted(set(names) - set(sigs))
            if unknown or len(set(names)) != len(names):
                raise InputError(f"inputs: expected arrays {sorted(sigs)}; unknown {unknown[:8]}")
            total = 0
            for info in infos:
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0  # 3.0 differs from 2.0 only in the header's encoding
                    shape, _, dtype = read(f)
                name = info.filename.removesuffix(".npy")
                if len(shape) != len(sigs[name].shape):
                    raise InputError(f"inputs: {name!r} has shape {shape}, expected {sigs[name].shape}")
                total += math.prod(shape) * dtype.itemsize
            if total > _limit[0]:
                raise InputError(f"inputs: the arrays declare {total / (1 << 30):.1f} GiB, over the "
                                 f"{_limit[0] / (1 << 30):.1f} GiB limit (--max-memory)")
    except InputError as e:
        raise InputError(str(e), path) from None
    except Exception as e:  # noqa: BLE001 - a broken zip or .npy header fails in many ways
        raise InputError(f"not a readable .npz file ({type(e).__name__})", path) from None


def _user_feeds(inputs: Any, spec: ModelSpec, mode: str) -> dict[str, np.ndarray] | None:
    if inputs is None:
        return None
    if isinstance(inputs, dict):
        feeds = dict(inputs)
    else:
        path = existing_file(inputs)
        _check_npz_headers(path, {s.name: s for s in signature.inputs(spec, mode)})
        try:
            with np.load(path, allow_pickle=False) as z:
                feeds = {k: z[k] for k in z.files}
        except Exception as e:
            raise InputError(f"not a readable .npz file ({type(e).__name__})", path) from None
    sigs = {s.name: s for s in signature.inputs(spec, mode)}
    unknown = sorted(set(feeds) - set(sigs))
    missing = sorted(n for n, s in sigs.items() if not s.optional and n not in feeds)
    if unknown or missing:
        raise InputError(f"inputs: expected arrays {sorted(sigs)}; unknown {unknown}, missing {missing}",
                         None if isinstance(inputs, dict) else inputs)
    where = None if isinstance(inputs, dict) else inputs
    vocab = spec.blocks[0].weight.shape[0] if spec.arch == "lstm_lm" else None
    symbols: dict[str, int] = {}  # "batch" / "time" must mean one size across the arrays
    for name, arr in feeds.items():
        want = sigs[name].shape
        arr = np.asarray(arr)
        if arr.ndim != len(want) or any(
            symbols.setdefault(d, n) != n if isinstance(d, str) else d != n for d, n in zip(want, arr.shape)
        ):
            raise InputError(f"inputs: {name!r} has shape {arr.shape}, expected {want} (sizes so far: {symbols})",
                             where)
        if sigs[name].dtype == np.int64:
            if arr.dtype.kind not in "iu" or (arr.size and (arr.min() < 0 or arr.max() >= vocab)):
                raise InputError(f"inputs: {name!r} must hold integer token ids in [0, {vocab})", where)
        elif arr.dtype.kind not in "fiu" or not np.all(np.isfinite(arr)):
            raise InputError(f"inputs: {name!r} must be finite numbers", where)
    return feeds


def _size(dim: Any, first: Any, feeds: dict[str, np.ndarray]) -> int:
    """A signature dimension's size: a number, or "batch" read off the first input (`first`, its signature)."""
    return dim if isinstance(dim, int) else int(feeds[first.name].shape[first.shape.index(dim)])


def validate(
    source: Any,
    exported_path: str | os.PathLike,
    *,
    inputs: Any = None,
    rtol_layer: float = 1e-5,
    atol_e2e: float | None = None,
    seed: int = 0,
) -> Report:
    """Compare `exported_path` against `source` (ModelSpec, checkpoint path or torch module). See module doc.

    `inputs`: an .npz path or a dict of arrays named as the graph's inputs (`dkp_deploy.signature`).
    `atol_e2e`: None = 1e-4, or `INT8_DYNAMIC_ATOL` for an int8-dynamic file.
    """
    spec, provenance = as_spec(source)
    path = existing_file(exported_path)
    fmt, load_exported, runner = _backend(path)
    exported = load_exported(path)
    run = runner(path)
    mode = exported.mode
    src_name = provenance.get("source") or (str(source) if isinstance(source, (str, os.PathLike)) else "model")
    report = Report(source=str(src_name), exported=str(path), format=fmt, mode=mode)
    recorded = exported.metadata.get("dkp.source_sha256")
    if recorded and provenance.get("source_sha256") and recorded != provenance["source_sha256"]:
        report.notes.append("the file records a different source checkpoint (sha256); the weights decide")
    quantize = exported.metadata.get("dkp.quantize") or None
    atol_e2e = _e2e_tol(atol_e2e, quantize)
    if quantize:
        _int8_rows(report, exported.matrices, spec.matrices())
        spec = dequantized_spec(spec)
        report.notes.append(f"{quantize} file: checked against the source with its doped weights as the file "
                            "dequantizes them" + _DYNAMIC_NOTE * (quantize == DYNAMIC)
                            + " (the quantization error itself is not a failure)")

    for name, w in spec.matrices().items():
        report.rows.append(_layer_row(name, exported.matrices.get(name), w.dense(np.float64), rtol_layer))
    extra = sorted(set(exported.matrices) - set(spec.matrices()))
    for name in extra:
        report.rows.append(Row("layer", name, np.inf, np.inf, np.inf, rtol_layer, False, "not in source"))

    cases: list[tuple[str, dict[str, np.ndarray]]] = []
    if spec.is_recurrent and mode == "sequence":
        cases.append(("random T=5", signature.random_feeds(spec, mode, batch=2, time=5, seed=seed)))
        cases.append(("random T=1 no state", signature.random_feeds(spec, mode, batch=3, time=1, seed=seed + 1,
                                                                    with_state=False)))
    else:
        cases.append(("random", signature.random_feeds(spec, mode, batch=2, seed=seed)))
        cases.append(("random batch 1", signature.random_feeds(spec, mode, batch=1, seed=seed + 1)))
    user = _user_feeds(inputs, spec, mode)
    if user is not None:
        cases.append(("user", user))
    for label, feeds in cases:
        ref = reference.run(spec, feeds, mode, matrix_input=matrix_input(quantize))
        if fmt == "tflite":  # TFLite has no optional inputs: a state left out is fed as the zeros it stands for
            sigs = signature.inputs(spec, mode)
            feeds = {**{s.name: np.zeros([_size(d, sigs[0], feeds) for d in s.shape], s.dtype)
                        for s in sigs if s.optional and s.name not in feeds}, **feeds}
        try:
            out = run(feeds)
        except DkpError as e:
            if not isinstance(e, InputError):  # e.g. the ops library is not built: say so, do not "fail"
                raise
            report.rows.append(Row("e2e", label, np.inf, np.inf, np.inf, atol_e2e, False, str(e)))
            continue
        except Exception as e:  # the runtime refusing the inputs: the file does not compute the source's function
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            report.rows.append(Row("e2e", label, np.inf, np.inf, np.inf, atol_e2e, False, f"runtime error: {msg}"))
            continue
        for name, r in ref.items():
            if name not in out:
                report.rows.append(Row("e2e", f"{label}: {name}", np.inf, np.inf, np.inf, atol_e2e, False,
                                       "output missing"))
                continue
            report.rows.append(_e2e_row(f"{label}: {name}", out[name], r, atol_e2e, quantize))
    return report


def _random_feeds(graph, sizes: dict[str, int], rng: np.random.Generator,
                  bounds: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Random inputs for a lowered file's graph: symbolic dims from `sizes`, token ids below their table's rows (a
    Gather's table, a hub's DopedGather, or `bounds`: ids input -> rows, from a lowered file's dkp.layers)."""
    from onnx import helper

    from .hub.embedding import DOPED_GATHER

    inits = {t.name: t for t in graph.initializer}
    bound = {n.input[1]: int(inits[n.input[0]].dims[0]) for n in graph.node
             if n.op_type == "Gather" and n.input[0] in inits and len(n.input) > 1}
    for n in graph.node:
        if n.op_type == DOPED_GATHER:
            shape = next((list(a.ints) for a in n.attribute if a.name == "shape"), [2])
            bound[n.input[0]] = min(bound.get(n.input[0], shape[0]), shape[0])
    for name, rows in (bounds or {}).items():
        bound[name] = min(bound.get(name, rows), rows)
    feeds = {}
    for vi in graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else sizes.setdefault(d.dim_param, 2 + len(sizes))
                 for d in t.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        if dtype.kind in "iu":
            feeds[vi.name] = rng.integers(0, bound.get(vi.name, 2), shape).astype(dtype)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def validate_export(
    exported_path: str | os.PathLike,
    *,
    hub: Any = None,
    model: Any = None,
    args: tuple | None = None,
    atol_e2e: float | None = None,
    rtol_layer: float = 1e-5,
    seed: int = 0,
) -> Report:
    """A file from `dkp_deploy.export` (.onnx or .tflite) against its hub (a path or ModelProto, run in float64
    by onnx.reference, torch-free) and / or the torch `model` (run in float64 on a copy; `args` as given to export,
    for the input structure), on random inputs at two different sets of dynamic sizes; plus every doped matrix of
    the hub rebuilt from the file's own tensors. A .tflite file needs its hub (its inputs carry no dim names).
    `atol_e2e`: None = 1e-4, or `INT8_DYNAMIC_ATOL` for an int8-dynamic file."""
    import onnx

    from .hub import reference

    path = existing_file(exported_path)
    if hub is None and model is None:
        raise ValueError("validate_export needs a hub and / or a torch model to compare with")
    hub_model = hub if hub is None or isinstance(hub, onnx.ModelProto) else onnx.load(str(existing_file(hub)))
    fmt, load_exported, make_runner = _backend(path)
    if fmt == "tflite":
        if hub_model is None:
            raise InputError("a .tflite export validates against its hub (export it with sparse_impl='hub' too)",
                             path)
        graph = hub_model.graph  # names and symbolic sizes of the inputs, as the .tflite's signature keeps them
        mode = {p.key: p.value for p in hub_model.metadata_props}.get("dkp.mode", "sequence")
    else:
        lowered = onnx.load(str(path))
        graph, mode = lowered.graph, lowered_mode(lowered)
    bounds = _embedding_bounds(lowered) if fmt == "onnx" else {}
    source = "hub" if hub is not None else type(model).__name__
    report = Report(source=str(hub) if isinstance(hub, (str, os.PathLike)) else source, exported=str(path),
                    format=fmt, mode=mode)
    quantized = (fmt == "onnx" and {p.key: p.value for p in lowered.metadata_props}.get("dkp.quantize")) or None
    atol_e2e = _e2e_tol(atol_e2e, quantized)
    if quantized:
        if hub_model is None:
            raise InputError(f"a {quantized} file validates against its hub (its weights as the file dequantizes "
                             "them); pass hub=", path)
        _int8_rows(report, load_exported(path).matrices, _hub_matrices(hub_model))
        hub_model = dequantize_hub(hub_model)
        if model is not None:
            model = None
            report.notes.append(f"{quantized} file: checked against its hub with the weights dequantized"
                                + _DYNAMIC_NOTE * (quantized == DYNAMIC)
                                + "; the torch model (float weights) is not a parity reference for it")
    if hub_model is not None:
        exported = load_exported(path)
        for name, w in _hub_matrices(hub_model).items():
            report.rows.append(_layer_row(name, exported.matrices.get(name), w.dense(np.float64), rtol_layer))
    run = make_runner(path)
    inputs = [vi.name for vi in graph.input if vi.name not in {t.name for t in graph.initializer}]
    outputs = [o.name for o in graph.output]
    rng = np.random.default_rng(seed)
    dims = _dim_params(graph)
    # two sets of dynamic sizes: 2, 3, 4, ... and 1, 2, 3, ... (a batch of 1 and a different T)
    for label, sizes in (("sizes A", {p: 2 + i for i, p in enumerate(dims)}),
                         ("sizes B", {p: 1 + i * 3 for i, p in enumerate(dims)})):
        feeds = _random_feeds(graph, sizes, rng, bounds)
        out = run(feeds)
        refs: list[tuple[str, list[np.ndarray]]] = []
        if hub_model is not None:
            ref_out = reference.run(hub_model, feeds, matrix_input=matrix_input(quantized))
            refs.append(("hub", list(ref_out.values())))
        if model is not None:
            refs.append(("torch", _torch_outputs(model, args, [feeds[name] for name in inputs])))
        for ref_name, values in refs:
            for name, ref in zip(outputs, values):
                report.rows.append(_e2e_row(f"{label} vs {ref_name}: {name}", out[name],
                                            np.asarray(ref, np.float64), atol_e2e, quantized))
    return report


def _embedding_bounds(model) -> dict[str, int]:
    """ids input -> table rows, for the lowered doped embeddings a file's dkp.layers lists (their ids reach no
    Gather on a V-row table)."""
    try:
        layers = json.loads({p.key: p.value for p in model.metadata_props}.get("dkp.layers", "{}"))
        return {str(info["indices"]): int(info["shape"][0]) for info in layers.values()
                if isinstance(info, dict) and info.get("kind") == "embedding" and "indices" in info}
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):  # malformed metadata: no bounds
        return {}


def _hub_matrices(hub_model: Any) -> dict[str, Any]:
    """Every doped matrix of a hub (DopedMatMul weights, DopedGather tables, subgraphs too) by its name."""
    from onnx import numpy_helper

    from .converters.onnx.graph import all_graphs
    from .hub.embedding import DOPED_GATHER, read_doped_gather
    from .hub.matrix import DOPED_MATMUL, matrix_name, read_doped_matmul

    out = {}
    for g in all_graphs(hub_model.graph):
        arrays = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for node in g.node:
            if node.op_type == DOPED_MATMUL:
                out[matrix_name(node)] = read_doped_matmul(node, arrays)[0]
            elif node.op_type == DOPED_GATHER:  # a doped embedding's table
                out[matrix_name(node)] = read_doped_gather(node, arrays)
    return out


def _dim_params(graph) -> list[str]:
    return sorted({d.dim_param for vi in graph.input for d in vi.type.tensor_type.shape.dim if d.dim_param})


def lowered_mode(model) -> str:
    return {p.key: p.value for p in model.metadata_props}.get("dkp.mode", "sequence")


def _torch_outputs(model: Any, args: tuple | None, flat_inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The torch model's outputs, flattened, in float64 on a copy; inputs unflattened like `args`."""
    import copy

    import torch
    from torch.utils import _pytree

    if args is None:
        raise ValueError("validate_export with a torch model needs the args given to export (their structure)")
    _, spec = _pytree.tree_flatten(args if isinstance(args, tuple) else (args,))
    tensors = [torch.from_numpy(np.asarray(x, np.float64) if x.dtype.kind == "f" else x) for x in flat_inputs]
    m = copy.deepcopy(model).double().eval()
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            out = m(*_pytree.tree_unflatten(tensors, spec))
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return [t.numpy() for t in _pytree.tree_leaves(out)]


def assert_parity(source: Any, exported_path: str | os.PathLike, *, args: tuple | None = None,
                  **tolerances: Any) -> Report:
    """pytest helper: `validate` (a native source) or, with `args` (a torch model and what export was given) or a
    hub source, `validate_export`; raises AssertionError with the table unless every check passes."""
    if args is not None:
        report = validate_export(exported_path, model=source, args=args, **tolerances)
    elif isinstance(source, (str, os.PathLike)) and str(source).lower().endswith(".onnx"):
        report = validate_export(exported_path, hub=source, **tolerances)
    else:
        report = validate(source, exported_path, **tolerances)
    if not report.passed:
        raise AssertionError("numerical parity failed\n" + report.table())
    return report


__all__ = ["validate", "validate_export", "assert_parity", "Report", "Row"]
