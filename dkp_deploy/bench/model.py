"""Table 7 redone: doped-KP LSTM LMs at the paper's shapes vs dense, one step graph (batch 1) per model.

For each model: CF, W_s sparsity, MAC reduction, the bytes one step must stream, file sizes, and the speed-up of
the ONNX step graph over the dense step graph, for the LSTM layers alone (the paper's table 7 compresses and
times only these) and for the whole LM as deployed (embedding and dense softmax decoder included).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..signature import random_feeds
from ..spec import ModelSpec
from .measure import FULL, Budget, compare_groups, int8_dense, ort_runner, ort_session, tflite_runner
from .workloads import (
    LARGE,
    MEDIUM,
    QUICK,
    LMShape,
    block_lstm_spec,
    densified,
    doped_decoder,
    lm_specs,
    matrix_bytes,
    matvec_macs,
)

SHAPES = (MEDIUM[10], MEDIUM[20], MEDIUM[25], LARGE)
# the LM steps also exported by the general path (torch needed; else skipped)
GENERAL_SHAPES = (MEDIUM[25].name, QUICK.name)
ORT_IMPLS = ("custom", "portable", "dense")
# the doped files in int8 (custom op) by quantize mode: weights only, and with each doped matrix's activations
# quantized at run time like onnxruntime's quantize_dynamic (integer products)
INT8_IMPLS = {"custom_int8": "int8", "custom_int8dyn": "int8-dynamic"}


def weight_costs(spec: ModelSpec) -> dict[str, int]:
    """MACs and streamed bytes of one step, doped and dense, over the spec's matrices (decoder included)."""
    macs = dense_macs = nbytes = dense_bytes = 0
    for w in spec.matrices().values():
        m, n = w.shape
        macs += matvec_macs(w)
        dense_macs += m * n
        nbytes += matrix_bytes(w)
        dense_bytes += 4 * m * n
    return {"macs": macs, "dense_macs": dense_macs, "bytes": nbytes, "dense_bytes": dense_bytes}


def general_lm_step(spec: ModelSpec, path: Path) -> Path | None:
    """The LM step written by `dkp_deploy.export` from the torch module of `spec` (None without torch): the
    general path's file, to time against the native converter's."""
    try:
        import torch

        from ..export import export
        from ..nn import from_spec
    except ImportError:
        return None
    lstm = spec.lstm
    state = tuple(torch.zeros(lstm.num_layers, 1, lstm.hidden_size) for _ in range(2))
    export(from_spec(spec).eval(), (torch.zeros(1, 1, dtype=torch.int64), state), path, mode="step",
           input_names=["x_t", "h", "c"])
    return path


def _general_runner(path: Path, feeds: dict, threads: int):
    """Runs the general step file on the native step's feeds (its token input is [1, batch], time first)."""
    session = ort_session(path, threads)
    return ort_runner(session, {"x_t": feeds["x_t"][None, :], "h": feeds["h"], "c": feeds["c"]})


def run(
    shapes: tuple[LMShape, ...] = SHAPES,
    threads: int = 1,
    budget: Budget = FULL,
    batch: int = 1,
    tflite: bool = True,
) -> list[dict[str, Any]]:
    """One row per model (see the module docstring)."""
    from ..converters import to_onnx, to_tflite

    rows = []
    for shape in shapes:
        lstm_spec, lm_spec = lm_specs(shape, seed=int(shape.cf))
        lmd_spec = doped_decoder(lm_spec, shape.cf, seed=int(shape.cf) + 1)  # the decoder doped too
        with tempfile.TemporaryDirectory(prefix="dkp-bench-") as tmp:
            d = Path(tmp)
            fns, sizes = {}, {}
            for part, spec in (("lstm", lstm_spec), ("lm", lm_spec), ("lmd", lmd_spec)):
                feeds = random_feeds(spec, "step", batch=batch, seed=1)
                for impl in (*ORT_IMPLS, *INT8_IMPLS) if part != "lmd" else ("custom", *INT8_IMPLS):
                    if part == "lm" and impl in INT8_IMPLS:
                        continue  # the int8 doped model that counts is the one with its decoder doped too
                    path = d / f"{part}_{impl}.onnx"
                    to_onnx(spec, path, sparse_impl="custom" if impl in INT8_IMPLS else impl, mode="step",
                            quiet=True, quantize=INT8_IMPLS.get(impl))
                    sizes[part, impl] = path.stat().st_size
                    fns[part, impl] = ort_runner(ort_session(path, threads), feeds)
                if part != "lmd":
                    path = int8_dense(d / f"{part}_dense.onnx", d / f"{part}_int8.onnx")
                    sizes[part, "int8"] = path.stat().st_size
                    fns[part, "int8"] = ort_runner(ort_session(path, threads), feeds)
                if part == "lm" and shape.name in GENERAL_SHAPES and general_lm_step(spec, d / "general.onnx"):
                    sizes[part, "general"] = (d / "general.onnx").stat().st_size
                    fns[part, "general"] = _general_runner(d / "general.onnx", feeds, threads)
                if tflite and part == "lstm":
                    doped, dense = d / "lstm_doped.tflite", d / "lstm_dense.tflite"
                    to_tflite(spec, doped, mode="step", quiet=True)
                    to_tflite(densified(spec), dense, mode="step", quiet=True)
                    sizes[part, "tflite"], sizes[part, "tflite_dense"] = doped.stat().st_size, dense.stat().st_size
                    fns[part, "tflite"] = tflite_runner(doped, feeds, threads)
                    # builtin kernels like the doped model's, and XNNPACK as a user of the dense model gets it
                    fns[part, "tflite_dense"] = tflite_runner(dense, feeds, threads, default_delegates=False)
                    fns[part, "tflite_dense_xnnpack"] = tflite_runner(dense, feeds, threads, default_delegates=True)
                    blocked = d / "lstm_doped_1x4.tflite"  # W_s in 1 x 4 blocks: TFLite's optimized sparse kernel
                    to_tflite(block_lstm_spec(shape, seed=int(shape.cf)), blocked, mode="step", quiet=True)
                    sizes[part, "tflite_1x4"] = blocked.stat().st_size
                    fns[part, "tflite_1x4"] = tflite_runner(blocked, feeds, threads)
            groups = [[(part, impl) for impl in (*ORT_IMPLS, "int8")] for part in ("lstm", "lm")]
            groups[0] += [("lstm", impl) for impl in INT8_IMPLS]
            groups[1] += [("lmd", "custom"), *(("lmd", impl) for impl in INT8_IMPLS)]  # next to dense and int8
            if ("lm", "general") in fns:
                fns["lm", "custom_g"] = fns["lm", "custom"]
                groups.append([("lm", "custom_g"), ("lm", "general")])
            if tflite:
                fns["lstm", "tflite_x"] = fns["lstm", "tflite"]
                groups += [[("lstm", "tflite"), ("lstm", "tflite_dense")],
                           [("lstm", "tflite_x"), ("lstm", "tflite_dense_xnnpack"), ("lstm", "tflite_1x4")]]
            t = compare_groups(fns, groups, budget)
        rows.append(_row(shape, lstm_spec, lm_spec, t, sizes, batch, tflite))
    return rows


def _row(shape, lstm_spec, lm_spec, t, sizes, batch, tflite) -> dict[str, Any]:
    lstm_cost, lm_cost = weight_costs(lstm_spec), weight_costs(lm_spec)
    summary = lstm_spec.summary()
    w0 = lstm_spec.lstm.layers[0].weight
    row: dict[str, Any] = {
        "model": shape.name,
        "hidden": shape.hidden,
        "layers": shape.layers,
        "vocab": shape.vocab,
        "batch": batch,
        "target_cf": shape.cf,
        "cf": summary["compression_factor"],
        "kron": [list(f.shape) for f in w0.factors.values()],
        "nnz_per_layer": w0.nnz,
        "sparsity": 1.0 - w0.sparse.density,
        "paper_sparsity": shape.paper_sparsity,
        "paper_speedup": shape.paper_speedup,
        "paper_mac_reduction": shape.paper_mac_reduction,
        "mac_reduction_lstm": lstm_cost["dense_macs"] / lstm_cost["macs"],
        "mac_reduction_model": lm_cost["dense_macs"] / lm_cost["macs"],
        "bytes_lstm": lstm_cost["bytes"],
        "bytes_lstm_dense": lstm_cost["dense_bytes"],
        "bytes_model": lm_cost["bytes"],
        "bytes_model_dense": lm_cost["dense_bytes"],
        "file_bytes": {f"{p}_{i}": v for (p, i), v in sizes.items()},
        "seconds": {f"{p}_{i}": v.seconds for (p, i), v in t.items()},
        "spread": max(v.spread for v in t.values()),
    }
    for part in ("lstm", "lm"):
        for impl in ("custom", "portable"):
            row[f"speedup_{part}_{impl}"] = t[part, "dense"].seconds / t[part, impl].seconds
        # against onnxruntime's int8 dynamic quantization of the dense model (the anchor a user tries first)
        row[f"speedup_{part}_int8"] = t[part, "dense"].seconds / t[part, "int8"].seconds
        row[f"{part}_custom_vs_int8"] = t[part, "int8"].seconds / t[part, "custom"].seconds
    # whole-model doping: the LM with its decoder doped at the same CF, against the dense and int8 LMs
    row["speedup_lmd_custom"] = t["lm", "dense"].seconds / t["lmd", "custom"].seconds
    row["lmd_custom_vs_int8"] = t["lm", "int8"].seconds / t["lmd", "custom"].seconds
    # the doped files stored in int8 (quantize="int8") against onnxruntime's int8 dense ones: speed and bytes
    # (custom_int8dyn: the same files with the doped matrices' activations quantized at run time, integer products)
    for impl in INT8_IMPLS:
        row[f"lstm_{impl}_vs_int8"] = t["lstm", "int8"].seconds / t["lstm", impl].seconds
        row[f"lmd_{impl}_vs_int8"] = t["lm", "int8"].seconds / t["lmd", impl].seconds
    row["lstm_int8_file_ratio"] = sizes["lstm", "int8"] / sizes["lstm", "custom_int8"]
    row["lmd_int8_file_ratio"] = sizes["lm", "int8"] / sizes["lmd", "custom_int8"]
    if ("lm", "general") in t:  # the general path's file over the native one, timed side by side
        row["general_vs_native_lm"] = t["lm", "custom_g"].seconds / t["lm", "general"].seconds
    if tflite:
        row["speedup_lstm_tflite"] = t["lstm", "tflite_dense"].seconds / t["lstm", "tflite"].seconds
        xnn = t["lstm", "tflite_dense_xnnpack"].seconds
        row["speedup_lstm_tflite_vs_xnnpack"] = xnn / t["lstm", "tflite_x"].seconds
        row["speedup_lstm_tflite_1x4_vs_xnnpack"] = xnn / t["lstm", "tflite_1x4"].seconds
    # the speed-up if a step cost only its weight bytes at the dense step's bandwidth (the memory-bound limit)
    row["bytes_bound_lstm"] = lstm_cost["dense_bytes"] / lstm_cost["bytes"]
    row["bytes_bound_model"] = lm_cost["dense_bytes"] / lm_cost["bytes"]
    return row
