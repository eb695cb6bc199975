"""A doped layer (kron(B, C) + W_s, bias) at 10 / 20 / 25x CF vs the same layer dense, per runtime and batch.

ORT rows: the converter's `custom` (SparseMatVec with the Kronecker half as Y0) and `portable` (standard ops
only) lowerings against its `dense` lowering (one MatMul with the folded W). TFLite rows: the TFLite converter's
doped graph against the folded model on the same builtin kernels, and against the folded model with XNNPACK (what
a user of a dense model gets; XNNPACK cannot run the doped model's sparse weights). Each runtime's baselines are
timed in the same interleaved rounds as its candidates.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .measure import FULL, Budget, compare_groups, int8_dense, ort_runner, ort_session, tflite_runner
from .workloads import MEDIUM_KRON, densified, layer_spec, matrix_bytes, matvec_macs

CFS = (10, 20, 25)
BATCHES = (1, 8)
SHAPE = (2600, 1300)
ORT_IMPLS = ("custom", "portable")
# int8 weights with float activations, and with each doped matrix's activations quantized at run time (integer
# products): the second is what onnxruntime's quantize_dynamic does to the dense layer
INT8_MODES = ("int8", "int8-dynamic")
INT8_IMPLS = tuple(f"custom {m}" for m in INT8_MODES)


def run(
    shape: tuple[int, int] = SHAPE,
    cfs=CFS,
    batches=BATCHES,
    threads: int = 1,
    budget: Budget = FULL,
    kron=MEDIUM_KRON,
    tflite: bool = True,
) -> list[dict[str, Any]]:
    from ..converters import to_onnx, to_tflite

    m, n = shape
    specs = {cf: layer_spec(m, n, cf, seed=cf, kron=kron) for cf in cfs}
    # the same layers with W_s in 1 x 4 blocks: TFLite's optimized sparse FULLY_CONNECTED
    block_specs = {cf: layer_spec(m, n, cf, seed=cf, kron=kron, block=4) for cf in cfs} if n % 4 == 0 else {}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dkp-bench-") as tmp:
        files: dict[tuple[str, Any], Path] = {}
        dense_spec = densified(specs[cfs[0]])  # same shapes for every CF: one dense baseline per runtime
        files["ort", "dense"] = to_onnx_file(to_onnx, dense_spec, Path(tmp) / "dense.onnx", "dense")
        files["ort", "int8"] = int8_dense(files["ort", "dense"], Path(tmp) / "int8.onnx")
        for cf, spec in specs.items():
            for impl in ORT_IMPLS:
                files["ort", (impl, cf)] = to_onnx_file(to_onnx, spec, Path(tmp) / f"{impl}_{cf}.onnx", impl)
            for mode in INT8_MODES:
                path = Path(tmp) / f"custom_{mode}_{cf}.onnx"
                files["ort", (f"custom {mode}", cf)] = to_onnx_file(to_onnx, spec, path, "custom", quantize=mode)
        if tflite:
            files["tflite", "dense"] = Path(tmp) / "dense.tflite"
            to_tflite(dense_spec, files["tflite", "dense"], quiet=True)
            for cf, spec in specs.items():
                files["tflite", cf] = Path(tmp) / f"doped_{cf}.tflite"
                to_tflite(spec, files["tflite", cf], quiet=True)
            for cf, spec in block_specs.items():
                files["tflite", ("1x4", cf)] = Path(tmp) / f"doped_1x4_{cf}.tflite"
                to_tflite(spec, files["tflite", ("1x4", cf)], quiet=True)
        for batch in batches:
            x = np.random.default_rng(batch).standard_normal((batch, n)).astype(np.float32)
            fns = {}
            for key, path in files.items():
                if key[0] == "ort":
                    fns[key] = ort_runner(ort_session(path, threads), {"x": x})
                    if threads == 1 and isinstance(key[1], tuple) and key[1][0] == "custom":  # on a pool of 2 threads
                        fns["ort2", key[1]] = ort_runner(ort_session(path, 2), {"x": x})
                elif key[1] == "dense":  # builtin kernels like the doped model's, and XNNPACK as a user gets it
                    fns[key] = tflite_runner(path, {"x": x}, threads, default_delegates=False)
                    fns["tflite", "dense_xnnpack"] = tflite_runner(path, {"x": x}, threads, default_delegates=True)
                else:
                    fns[key] = tflite_runner(path, {"x": x}, threads)
            groups = [[k for k in fns if k[0] == "ort"]]
            # 2 threads against 1 in rounds of their own: one pool's workers spinning after a run (onnxruntime's
            # default) must not compete with another pool's; measured in the shared rounds the ratio fell to ~1.1x
            for k in [k for k in fns if k[0] == "ort2"]:
                fns["ort1", k[1]] = fns["ort", k[1]]
                groups.append([("ort1", k[1]), k])
            if tflite:
                for cf in specs:
                    fns["tflite_x", cf] = fns["tflite", cf]
                groups += [[("tflite", "dense"), *(("tflite", cf) for cf in specs)],
                           [("tflite", "dense_xnnpack"), *(("tflite_x", cf) for cf in specs),
                            *(("tflite", ("1x4", cf)) for cf in block_specs)]]
            t = compare_groups(fns, groups, budget)
            for cf, spec in specs.items():
                w = spec.blocks[0].weight
                common = {
                    "cf": cf,
                    "batch": batch,
                    "shape": f"{m}x{n}",
                    "kron": [list(f.shape) for f in w.factors.values()],
                    "nnz": w.nnz,
                    "sparsity": 1.0 - w.sparse.density,
                    "mac_reduction": m * n / matvec_macs(w),
                    "bytes_reduction": 4 * m * n / matrix_bytes(w),
                }
                common["file_bytes"] = {"dense": files["ort", "dense"].stat().st_size,
                                        "ORT int8 dense": files["ort", "int8"].stat().st_size,
                                        "custom": files["ort", ("custom", cf)].stat().st_size,
                                        "custom int8": files["ort", ("custom int8", cf)].stat().st_size}
                for impl in (*ORT_IMPLS, *INT8_IMPLS):
                    rows.append(_row(common, "ORT", impl, t["ort", (impl, cf)], t["ort", "dense"]))
                # against onnxruntime's int8 dynamic quantization of the dense layer
                for impl in ("custom", *INT8_IMPLS):
                    rows.append(_row(common, "ORT vs int8", impl, t["ort", (impl, cf)], t["ort", "int8"]))
                if ("ort2", ("custom", cf)) in t:  # intra-op threads: 2 against 1, same file, same rounds
                    rows.append(_row(common, "ORT 2 threads vs 1", "custom", t["ort2", ("custom", cf)],
                                     t["ort1", ("custom", cf)]))
                if tflite:
                    rows.append(_row(common, "TFLite", "doped", t["tflite", cf], t["tflite", "dense"]))
                    xnn = t["tflite", "dense_xnnpack"]
                    rows.append(_row(common, "TFLite", "doped vs XNNPACK", t["tflite_x", cf], xnn))
                    if cf in block_specs:  # W_s in 1 x 4 blocks, same CF, against the same XNNPACK dense layer
                        rows.append(_row(common, "TFLite", "doped 1x4 vs XNNPACK", t["tflite", ("1x4", cf)], xnn))
    return rows


def to_onnx_file(to_onnx, spec, path: Path, impl: str, quantize: str | None = None) -> Path:
    to_onnx(spec, path, sparse_impl=impl, quiet=True, quantize=quantize)
    return path


def _row(common: dict[str, Any], runtime: str, impl: str, t, base) -> dict[str, Any]:
    return {
        **common,
        "runtime": runtime,
        "impl": impl,
        "seconds": t.seconds,
        "baseline_seconds": base.seconds,
        "speedup": base.seconds / t.seconds,
        "spread": max(t.spread, base.spread),
    }
