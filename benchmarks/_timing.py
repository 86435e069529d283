"""Shared timing for the benchmark scripts: compile once, then time rows interleaved."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import jax


def time_interleaved(
    fns: Sequence[Callable[[], object]], reps: int
) -> list[tuple[float, float, object]]:
    """Call every `fn` once (compilation, timed separately), then `reps` rounds calling each
    `fn` in turn, so that load drift on a shared machine affects all rows alike.

    Returns `[(median seconds per call, first-call seconds, first-call output)]`.
    """
    first = []
    for fn in fns:
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        first.append((time.perf_counter() - t, out))
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            jax.block_until_ready(fn())
            times[i].append(time.perf_counter() - t)
    return [(statistics.median(ts), c, out) for ts, (c, out) in zip(times, first, strict=True)]
