"""Overhead of ndes.diffeqsolve over raw diffrax, and of each global regularizer.

Same model, solver and tolerances in one process; one neural-ODE *train step* (jitted
value-and-grad of a loss on the final state, plus the penalty) per row, timed as the median
of `--reps` calls after warm-up. Both ways users batch a neural ODE are covered:

- `vmap`: `jax.vmap` of per-sample solves (each trajectory its own steps);
- `joint`: one solve of the whole batch as a single state (shared steps).

Ratios are against the row named in the `vs` column. Goals (issue 4): ndes without
regularizers <= 1.03x raw diffrax with identical step counts; ErrorEstimate <= 1.03x;
StiffnessEstimate <= 1.05x.

    python benchmarks/overhead.py            # full: MLP 2-64-64-2, batch 256
    python benchmarks/overhead.py --quick    # seconds; used by the test suite
"""

from __future__ import annotations

import argparse
import platform
from functools import partial

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from _timing import time_interleaved

import ndes


def build(width: int, key):
    return eqx.nn.MLP(2, 2, width, 2, activation=jnp.tanh, key=key)


def make_step(kind: str, mode: str, regs, rtol: float, atol: float, t1: float):
    """A jitted train step: (model, y0, target) -> (loss, grads, num_steps)."""
    ctrl = diffrax.PIDController(rtol=rtol, atol=atol)

    def solve(model, y0):
        if mode == "joint":
            term = diffrax.ODETerm(lambda t, y, a: jax.vmap(model)(y))
        else:
            term = diffrax.ODETerm(lambda t, y, a: model(y))
        kw = dict(stepsize_controller=ctrl, max_steps=4096)
        if kind == "diffrax":
            sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, t1, None, y0, **kw)
            return sol.ys[-1], jnp.zeros(()), sol.stats["num_steps"]
        sol = ndes.diffeqsolve(term, diffrax.Tsit5(), 0.0, t1, None, y0, regularizers=regs, **kw)
        return sol.ys[-1], sol.penalty, sol.stats["num_steps"]

    def loss(model, y0, target):
        if mode == "joint":
            y1, pen, steps = solve(model, y0)
        else:
            y1, pen, steps = jax.vmap(solve, in_axes=(None, 0))(model, y0)
            pen = jnp.mean(pen)
        return jnp.mean((y1 - target) ** 2) + pen, steps

    @eqx.filter_jit
    def step(model, y0, target):
        (val, steps), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model, y0, target)
        return val, grads, jnp.sum(steps)

    return step


def time_rows(steps, model, y0, target, reps: int):
    """Compile every row, then time them interleaved (`_timing.time_interleaved`).
    Returns [(median s, compile s, num_steps)]."""
    timed = time_interleaved([partial(step, model, y0, target) for step in steps], reps)
    return [(med, comp, int(out[2])) for med, comp, out in timed]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repetitions")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--reps", type=int, default=150)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--atol", type=float, default=1e-6)
    p.add_argument("--t1", type=float, default=1.0, help="end time (longer: more steps)")
    a = p.parse_args(argv)
    if a.quick:
        a.batch, a.width, a.reps = 8, 8, 3

    key = jax.random.key(0)
    model = build(a.width, key)
    y0 = jax.random.normal(jax.random.key(1), (a.batch, 2), jnp.float32)
    target = jnp.roll(y0, 1, axis=-1)
    rows = [
        ("diffrax", "raw diffrax", ()),
        ("ndes", "ndes, no regularizer", ()),
        ("ndes", "ndes + ErrorEstimate", (ndes.ErrorEstimate(1e-2),)),
        ("ndes", "ndes + StiffnessEstimate", (ndes.StiffnessEstimate(1e-3),)),
    ]
    vs = {1: 0, 2: 1, 3: 1}
    print(
        f"ndes overhead benchmark: MLP 2-{a.width}-{a.width}-2 (tanh), batch {a.batch}, Tsit5, "
        f"PIDController(rtol={a.rtol}, atol={a.atol}), float32, t in [0, {a.t1}], "
        f"median of {a.reps} train steps"
    )
    print(
        f"jax {jax.__version__}, diffrax {diffrax.__version__}, equinox {eqx.__version__}, "
        f"{platform.processor() or platform.machine()}, devices {jax.devices()}"
    )
    header = f"{'mode':6} {'row':26} {'ms/step':>9} {'compile s':>10} {'steps':>7} {'ratio':>7}  vs"
    print(header)
    print("-" * len(header))
    for mode in ("vmap", "joint"):
        steps = [make_step(kind, mode, regs, a.rtol, a.atol, a.t1) for kind, _, regs in rows]
        timed = time_rows(steps, model, y0, target, a.reps)
        results = [(med, n) for med, _, n in timed]
        for i, ((_, name, _), (med, comp, steps)) in enumerate(zip(rows, timed, strict=True)):
            ratio, ref = "", ""
            if i in vs:
                ratio = f"{med / results[vs[i]][0]:.3f}"
                ref = rows[vs[i]][1]
            print(f"{mode:6} {name:26} {med * 1e3:9.2f} {comp:10.2f} {steps:7d} {ratio:>7}  {ref}")
        same = results[0][1] == results[1][1]
        print(f"{mode:6} identical step counts ndes vs diffrax: {same}")


if __name__ == "__main__":
    main()
