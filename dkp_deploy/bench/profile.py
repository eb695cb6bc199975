"""Where a step's time goes: onnxruntime's per-node profile of a graph, summarised by op type and by node."""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .measure import ort_runner, ort_session


def summarise(events: list[dict[str, Any]], top: int = 12) -> dict[str, Any]:
    """Per-run microseconds by op type and by node from ORT profiling events, plus the cost outside kernels.

    Each node's time is the median of its `*_kernel_time` events (one per run, so warm-up runs and load spikes
    do not count); `run_us` is the median `model_run` duration and `kernel_us` the sum of the node medians.
    Their difference is onnxruntime's own per-run and per-node work (scheduling, allocation, fences).
    """
    durs: dict[str, list[float]] = defaultdict(list)
    node_op: dict[str, str] = {}
    run_durs = []
    for e in events:
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            run_durs.append(float(e.get("dur", 0)))
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        durs[node].append(float(e.get("dur", 0)))
        node_op[node] = e.get("args", {}).get("op_name", "?")
    by_node = {k: float(np.median(v)) for k, v in durs.items()}
    by_op: dict[str, float] = defaultdict(float)
    for k, v in by_node.items():
        by_op[node_op[k]] += v
    kernel = sum(by_node.values())
    run_us = float(np.median(run_durs)) if run_durs else float("nan")
    share = (lambda us: us / kernel) if kernel else (lambda us: 0.0)
    return {
        "runs": len(run_durs),
        "run_us": run_us,
        "kernel_us": kernel,
        "overhead_us": run_us - kernel,
        "nodes": len(node_op),
        "by_op": [
            {"op": k, "us": v, "share": share(v), "count": sum(1 for x in node_op.values() if x == k)}
            for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])
        ],
        "top_nodes": [
            {"node": k, "op": node_op[k], "us": v, "share": share(v)}
            for k, v in sorted(by_node.items(), key=lambda kv: -kv[1])[:top]
        ],
    }


def profile(path: str | Path, feeds: Mapping[str, np.ndarray], runs: int = 200, threads: int = 1) -> dict[str, Any]:
    """Run the graph `runs` times with onnxruntime profiling on and summarise the profile."""
    with tempfile.TemporaryDirectory(prefix="dkp-profile-") as tmp:
        session = ort_session(path, threads, profile_prefix=os.path.join(tmp, "ort"))
        fn = ort_runner(session, feeds)  # its set-up run is profiled too; summarise() counts model_run events
        for _ in range(runs):
            fn()
        events = json.loads(Path(session.end_profiling()).read_text())
    return summarise(events)


def step_profiles(shape, threads: int = 1, runs: int = 200, impls=("custom", "dense")) -> dict[str, Any]:
    """Profiles of the step graphs of one LM shape: the LSTM layers alone and the whole LM, per lowering."""
    from ..converters import to_onnx
    from ..signature import random_feeds
    from .workloads import lm_specs

    lstm_spec, lm_spec = lm_specs(shape, seed=int(shape.cf))
    out = {}
    with tempfile.TemporaryDirectory(prefix="dkp-profile-") as tmp:
        for part, spec in (("lstm", lstm_spec), ("lm", lm_spec)):
            feeds = random_feeds(spec, "step", batch=1, seed=1)
            for impl in impls:
                path = Path(tmp) / f"{part}_{impl}.onnx"
                to_onnx(spec, path, sparse_impl=impl, mode="step", quiet=True)
                out[f"{part}_{impl}"] = {"model": shape.name, **profile(path, feeds, runs, threads)}
    return out
