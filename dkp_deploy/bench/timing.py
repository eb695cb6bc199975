"""Median wall-clock timing of a callable: the one timing rule every benchmark here uses."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], *, repeats: int = 200, warmup: int = 20, min_time: float = 0.0) -> float:
    """Median seconds of one `fn()` call over `repeats` calls after `warmup` calls.

    With `min_time` > 0, keeps sampling past `repeats` until that many seconds were spent, so fast kernels get
    enough samples for a stable median.
    """
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeats or (time.perf_counter() - start) < min_time:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)
