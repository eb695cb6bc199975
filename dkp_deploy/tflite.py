"""Run exported .tflite files: the interpreter with the safe op resolver, feeding and timing by signature names.

The runtime is `ai_edge_litert` when installed, else `tflite_runtime` (what a Raspberry Pi with an older Python
has). A model that holds sparse tensors (our doping: FULLY_CONNECTED with a CSR weight) is loaded with
`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`: the default XNNPACK delegate decides on FULLY_CONNECTED from
the op version, not the weight's sparsity parameters; at any version but 8 it claims a sparse FC and computes NaN /
garbage or crashes (docs/tflite.md). The builtin kernel handles it (random-sparse CSR, float32).
tests/test_tflite_runtime.py keeps checking both sides.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DkpError, InputError
from .fileio import existing_file


def _interpreter_module():
    try:
        from ai_edge_litert import interpreter as module
    except ImportError:
        try:
            from tflite_runtime import interpreter as module
        except ImportError:
            raise DkpError("no TFLite runtime: pip install ai-edge-litert (or tflite-runtime)") from None
    return module


def runtime_name() -> str:
    """'ai_edge_litert' or 'tflite_runtime': the package `interpreter` uses."""
    return _interpreter_module().__name__.split(".")[0]


def has_sparse_tensors(path: str | os.PathLike) -> bool:
    """Whether any tensor of the model carries sparsity parameters."""
    import tflite

    p = existing_file(path)
    buf = p.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise InputError("not a TFLite file (no TFL3 identifier)", p)
    try:
        model = tflite.Model.GetRootAs(buf, 0)
        for s in range(model.SubgraphsLength()):
            sub = model.Subgraphs(s)
            if any(sub.Tensors(i).Sparsity() is not None for i in range(sub.TensorsLength())):
                return True
    except Exception as e:  # bad offsets in a damaged flatbuffer
        raise InputError(f"corrupt TFLite file ({type(e).__name__})", p) from None
    return False


def interpreter(path: str | os.PathLike, num_threads: int = 1, *, default_delegates: bool | None = None) -> Any:
    """A ready (tensors allocated) TFLite `Interpreter` for `path`.

    `default_delegates`: None (auto) applies the runtime's default delegates (XNNPACK) only when the model holds
    no sparse tensors; True / False force it (tests: True shows the XNNPACK bug on a sparse FC not at op version 8).
    """
    p = existing_file(path)
    module = _interpreter_module()
    if default_delegates is None:
        try:
            default_delegates = not has_sparse_tensors(p)
        except ImportError:  # no `tflite` schema package (a bare device): assume sparse, the safe choice
            default_delegates = False
    kinds = module.OpResolverType
    resolver = kinds.AUTO if default_delegates else kinds.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interp = module.Interpreter(model_path=str(p), num_threads=num_threads,
                                    experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"TFLite cannot load the model: {first}", p) from None
    return interp


def _signature_runner(interp: Any, path: object = None) -> Any:
    if not interp.get_signature_list():
        raise InputError("the model has no SignatureDef (not written by dkp-convert?)", path)
    return interp.get_signature_runner()


def _feeds(runner: Any, feeds: Mapping[str, Any], path: object = None) -> dict[str, np.ndarray]:
    """The feeds cast to the signature's dtypes; unknown or missing names are an `InputError`."""
    details = runner.get_input_details()
    unknown, missing = sorted(set(feeds) - set(details)), sorted(set(details) - set(feeds))
    if unknown or missing:
        raise InputError(f"inputs: expected {sorted(details)}; unknown {unknown}, missing {missing}", path)
    return {k: np.ascontiguousarray(v, dtype=details[k]["dtype"]) for k, v in feeds.items()}


def run(path_or_interpreter: Any, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run the model's signature on `feeds` (named as `dkp_deploy.signature` says; any batch size)."""
    is_path = isinstance(path_or_interpreter, (str, os.PathLike))
    interp = interpreter(path_or_interpreter) if is_path else path_or_interpreter
    where = path_or_interpreter if is_path else None
    runner = _signature_runner(interp, where)
    args = _feeds(runner, feeds, where)
    try:
        out = runner(**args)
    except (ValueError, RuntimeError) as e:
        raise InputError(f"TFLite could not run the inputs: {str(e).strip().splitlines()[0]}", where) from None
    return {k: np.array(v) for k, v in out.items()}


def median_invoke_seconds(
    path: str | os.PathLike,
    feeds: Mapping[str, Any],
    *,
    num_threads: int = 1,
    default_delegates: bool | None = None,
    repeats: int = 200,
    warmup: int = 20,
    min_time: float = 0.0,
) -> float:
    """Median seconds of one `invoke()` of the model at `path` on `feeds`, inputs set once beforehand.

    The timing rule is `dkp_deploy.bench.timing.median_seconds`; the resolver is chosen as `interpreter` does.
    """
    from .bench.timing import median_seconds

    interp = interpreter(path, num_threads, default_delegates=default_delegates)
    runner = _signature_runner(interp, path)
    args = _feeds(runner, feeds, path)
    runner(**args)  # resizes to the feeds' shapes and sets them; invoke() then reuses them in place
    del runner  # a live SignatureRunner holds the interpreter, which then refuses invoke() as unsafe
    return median_seconds(interp.invoke, repeats=repeats, warmup=warmup, min_time=min_time)


def compare_doped_dense(
    spec: Any, directory: str | os.PathLike, *, batch: int = 1, num_threads: int = 1, seed: int = 0,
    **timing: Any,
) -> dict[str, Any]:
    """Time `spec` converted as is (doped) against its densified copy (each W folded into one dense FC).

    Writes both .tflite files into `directory`. Returns medians in seconds and file sizes; the dense file runs
    with the runtime's default delegates (XNNPACK) as a user would get it, and also without them.
    """
    from .bench.workloads import densified
    from .converters.tflite import to_tflite
    from .signature import random_feeds

    d = Path(directory)
    doped_path, dense_path = d / "doped.tflite", d / "dense.tflite"
    to_tflite(spec, doped_path, quiet=True)
    to_tflite(densified(spec), dense_path, quiet=True)
    feeds = random_feeds(spec, "step", batch=batch, seed=seed)
    doped = median_invoke_seconds(doped_path, feeds, num_threads=num_threads, **timing)
    dense = median_invoke_seconds(dense_path, feeds, num_threads=num_threads, default_delegates=False, **timing)
    dense_xnn = median_invoke_seconds(dense_path, feeds, num_threads=num_threads, default_delegates=True, **timing)
    return {
        "batch": batch, "threads": num_threads, "runtime": runtime_name(),
        "doped_s": doped, "dense_s": dense, "dense_xnnpack_s": dense_xnn,
        "speedup": dense / doped, "speedup_vs_xnnpack": dense_xnn / doped,
        "doped_bytes": doped_path.stat().st_size, "dense_bytes": dense_path.stat().st_size,
    }


__all__ = ["interpreter", "run", "has_sparse_tensors", "runtime_name", "median_invoke_seconds",
           "compare_doped_dense"]
