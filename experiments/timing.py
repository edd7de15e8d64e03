"""Timing helpers shared by the inference benchmarks (experiments/bench_multitask.py, bench_students.py)."""

import statistics
import time


def median_call_seconds(run, seconds: float) -> float:
    """Median seconds of one synchronised call of `run()` over at least `seconds` (and >= 5 calls), after
    one warm-up call (compilation excluded)."""
    run()
    samples, start = [], time.perf_counter()
    while len(samples) < 5 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        run()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)
