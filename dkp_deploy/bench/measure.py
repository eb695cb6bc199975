"""Side-by-side timing of several callables, and the runners that turn exported files into callables.

Every speed-up `dkp-bench` reports is a ratio of two medians taken in the same `compare` call. The callables are
timed in interleaved rounds (each round takes one `median_seconds` of every callable, in a rotating order), so
a burst of load from other processes lands on the baseline and the candidate alike instead of skewing one.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .timing import median_seconds


@dataclass(frozen=True)
class Budget:
    """How hard to sample: `rounds` interleaved rounds of `repeats` calls (after `warmup`), or `min_time` s."""

    rounds: int = 5
    repeats: int = 60
    warmup: int = 5
    min_time: float = 0.0


QUICK = Budget(rounds=2, repeats=5, warmup=1)
FULL = Budget(rounds=21, repeats=15, warmup=3, min_time=0.008)


@dataclass(frozen=True)
class Timing:
    seconds: float  # median over rounds of each round's median
    spread: float  # (slowest round - fastest round) / seconds: how noisy the machine was


def compare(fns: Mapping[str, Callable[[], object]], budget: Budget = FULL) -> dict[str, Timing]:
    """Median seconds of each callable, sampled in interleaved rounds (see the module docstring)."""
    names = list(fns)
    rounds: dict[str, list[float]] = {k: [] for k in names}
    for r in range(budget.rounds):
        order = names[r % len(names) :] + names[: r % len(names)] if names else []
        for k in order:
            rounds[k].append(
                median_seconds(fns[k], repeats=budget.repeats, warmup=budget.warmup, min_time=budget.min_time)
            )
    out = {}
    for k, v in rounds.items():
        med = statistics.median(v)
        out[k] = Timing(med, (max(v) - min(v)) / med if med > 0 else 0.0)
    return out


def compare_groups(
    fns: Mapping[Any, Callable[[], object]], groups: Sequence[Sequence[Any]], budget: Budget = FULL
) -> dict[Any, Timing]:
    """`compare` run once per group of keys: a baseline is interleaved only with the candidates it is set against,
    so one model's big weights do not evict another's from the caches between rounds (as in a deployment, where
    one model runs)."""
    out: dict[Any, Timing] = {}
    for group in groups:
        out.update(compare({k: fns[k] for k in group}, budget))
    return out


def ort_session(path: str | Path, threads: int = 1, profile_prefix: str | None = None):
    """The project's onnxruntime CPU session (`dkp_deploy.runtime.session`), optionally profiling."""
    from .. import runtime

    opts = {} if profile_prefix is None else {"enable_profiling": True, "profile_file_prefix": profile_prefix}
    return runtime.session(path, threads=threads, **opts)


def ort_runner(session, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
    """One inference per call through IOBinding with inputs and outputs bound once.

    Binding keeps the Python-side cost (feed conversion, output allocation) out of the time, as a C/C++ host
    would: what is left is onnxruntime's own per-run cost plus the kernels.
    """
    import onnxruntime as ort

    feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
    first = session.run(None, feeds)
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    outputs = [np.empty_like(x) for x in first]
    for meta, buf in zip(session.get_outputs(), outputs):
        binding.bind_ortvalue_output(meta.name, ort.OrtValue.ortvalue_from_numpy(buf))
    return lambda: session.run_with_iobinding(binding)


def tflite_runner(
    path: str | Path, feeds: Mapping[str, np.ndarray], threads: int = 1, default_delegates: bool | None = None
) -> Callable[[], object]:
    """One `invoke()` per call on the project's interpreter, inputs set once (TFLite reads them in place).

    `default_delegates` as `dkp_deploy.tflite.interpreter` takes it: None lets the project choose (XNNPACK only
    for models without sparse tensors), False forces the builtin kernels.
    """
    from .. import tflite

    interp = tflite.interpreter(str(path), threads, default_delegates=default_delegates)
    tflite.run(interp, feeds)  # resizes to the feeds' shapes and sets them; invoke() then reuses them
    return interp.invoke


def int8_dense(dense_path: Path | str, out: Path | str) -> Path:
    """onnxruntime's int8 dynamic quantization (QInt8 weights) of a dense file: what a deployment engineer
    tries first, the anchor next to dense fp32."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns about running shape inference first
    try:
        quantize_dynamic(str(dense_path), str(out), weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().setLevel(level)
    return Path(out)
