"""Shared timing for the benchmark scripts: compile once, then time rows interleaved."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np


def time_interleaved(
    fns: Sequence[Callable[[], object]], reps: int
) -> list[tuple[float, float, object]]:
    """Call every `fn` once (compilation, timed separately), then `reps` rounds calling each
    `fn` once, so that load drift on a shared machine affects all rows alike. Each round
    calls the rows in a fresh random order (seeded, so reproducible): with a fixed order the
    row that always follows the torch rows measured 10--20 % slower than the same step in
    another position (cnf_speed.py, 2026-12-03; docs/benchmarks.md), a penalty a shuffle
    spreads over every row instead of charging it to one.

    Returns `[(median seconds per call, first-call seconds, first-call output)]`.
    """
    first = []
    for fn in fns:
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        first.append((time.perf_counter() - t, out))
    times: list[list[float]] = [[] for _ in fns]
    rng = np.random.default_rng(0)
    for _ in range(reps):
        for i in rng.permutation(len(fns)):
            t = time.perf_counter()
            jax.block_until_ready(fns[i]())
            times[i].append(time.perf_counter() - t)
    return [(statistics.median(ts), c, out) for ts, (c, out) in zip(times, first, strict=True)]
