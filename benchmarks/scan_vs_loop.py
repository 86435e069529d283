"""Fixed-step train steps with `ndes.ScanAdjoint` (diffrax's step in a `lax.scan`) against
diffrax's checkpointed `while_loop`, and the stable SDE saving only its final state against
saving at every time of `ts`: one process, rows interleaved, printed as a table.

Rows (the train steps of `compile_time.py`: NeuralCDE hidden 32, Midpoint 50 steps, batch
128; NeuralLSDE hidden 16, Euler 50 steps, batch 64; float32, Adam):

- `loop`: the model's default (`diffrax.RecursiveCheckpointAdjoint(checkpoints=n)`,
  `max_steps=n`: one checkpoint per step);
- `scan`: the model given `adjoint=ndes.ScanAdjoint(n)` (the same `ys`, bitwise; the same
  memory);
- `scan, no ckpt`: `adjoint=ndes.ScanAdjoint(n, checkpoint=False)` (every step's residuals
  stored instead of recomputed: more memory);
- NeuralLSDE only, `loop, save ts`: the default with `SaveAt(ts=ts)`, the stable SDE's saving
  before it learnt to save only the state its readout reads (switched back by patching one
  private name of ndes in this process).

Each row also reports its first call (trace + compile + one step; the rows compile one after
another in this process, so the first row also pays one-time costs) and its jaxpr size.
Run: `python benchmarks/scan_vs_loop.py` (`--quick`: tiny sizes, 2 repeats).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import jax
from _timing import time_interleaved
from compile_time import _count_eqns, ncde_case, stable_case

import ndes
import ndes.models._stable_sde as _stable


@contextlib.contextmanager
def _saving_every_time(on: bool):
    solve = _stable.solve_sde

    def all_times(*args, **kwargs):
        return solve(*args, **dict(kwargs, final_only=False))

    try:
        if on:
            _stable.solve_sde = all_times
        yield
    finally:
        _stable.solve_sde = solve


def _row(build, quick, adjoint=None, save_ts=False):
    """A runner of one jitted train step (compiled now, and timed); `adjoint`: `None` (the
    model's default), `"scan"` or `"no ckpt"` (`ndes.ScanAdjoint(n, checkpoint=...)`)."""
    options = {}
    if adjoint is not None:
        n = 5 if quick else 50
        options["adjoint"] = ndes.ScanAdjoint(n, checkpoint=adjoint == "scan")
    with _saving_every_time(save_ts):
        jitted, args = build(quick, **options)
        eqns = _count_eqns(jax.make_jaxpr(jitted)(*args).jaxpr)
        t = time.perf_counter()
        jax.block_until_ready(jitted(*args))
        first = time.perf_counter() - t
    state = list(args)

    def run():
        return jax.block_until_ready(jitted(*state))

    return run, eqns, first


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats")
    ap.add_argument("--repeats", type=int, default=None)
    a = ap.parse_args(argv)
    repeats = a.repeats or (2 if a.quick else 40)
    cases = [
        ("NeuralCDE", "loop", ncde_case, None, False),
        ("NeuralCDE", "scan", ncde_case, "scan", False),
        ("NeuralCDE", "scan, no ckpt", ncde_case, "no ckpt", False),
        ("NeuralLSDE", "loop, save ts", stable_case, None, True),
        ("NeuralLSDE", "loop", stable_case, None, False),
        ("NeuralLSDE", "scan", stable_case, "scan", False),
        ("NeuralLSDE", "scan, no ckpt", stable_case, "no ckpt", False),
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"jax {jax.__version__} ({jax.default_backend()}); {os.cpu_count()} CPUs, load "
        f"average {load:.2f} at start; median of {repeats}, rows interleaved"
    )
    rows = [(m, label, *_row(build, a.quick, *flags)) for m, label, build, *flags in cases]
    res = time_interleaved([r[2] for r in rows], repeats)
    print(f"{'model':11s} {'row':14s} {'step ms':>9s} {'/ loop':>7s} {'first s':>8s} {'eqns':>6s}")
    loop_ms = {m: r[0] for (m, lab, *_), r in zip(rows, res, strict=True) if lab == "loop"}
    for (model, label, _, eqns, first), (med, _, _) in zip(rows, res, strict=True):
        print(
            f"{model:11s} {label:14s} {med * 1e3:9.3f} {med / loop_ms[model]:6.2f}x "
            f"{first:8.2f} {eqns:6d}"
        )


if __name__ == "__main__":
    main()
