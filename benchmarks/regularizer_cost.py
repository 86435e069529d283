"""What each regularizer costs per train step, relative to the unregularized solve.

One neural-ODE train step (jitted value-and-grad of an MSE loss on the final state plus the
penalty) per row, same model, solver (Tsit5), tolerances and data, timed interleaved in one
process (median of `--reps`). The batch is solved jointly as one state (ndes's default,
`batch_axis=0` on every regularizer so each means the per-trajectory value). Columns:

- `ms/step`: median wall time of one train step;
- `ratio`: against the unregularized row;
- `steps`, `NFE`: accepted steps and vector-field evaluations of the forward solve
  (`NFE` includes the local regularizers' one extra step);
- `ratio/NFE`: the time ratio divided by the ratio of NFE, i.e. the cost per vector-field
  evaluation. For the local rows it nets out the one extra step (its 7 evaluations), for
  RandomEndTime the changed length of the solve; every other row has the same NFE.

The vector field is `MLP(y) + omega * R y` with `R` the 90-degree rotation: the rotation makes
the solve take a realistic number of steps (a freshly initialised MLP alone is solved in ~4
steps, where the local regularizers' one extra step would be a large fraction of the work).

Goals (issue 5): global <= 1.10x, local <= 1.05x per evaluation (`ratio/NFE`), i.e. 1.05x plus
the cost of the one extra step.

    python benchmarks/regularizer_cost.py            # MLP 2-64-64-2, batch 256
    python benchmarks/regularizer_cost.py --quick    # seconds; used by the test suite
    python benchmarks/regularizer_cost.py --only Taylor   # the baseline and the Taylor rows
"""

from __future__ import annotations

import argparse
import platform

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from _timing import time_interleaved

import ndes


def rows(key, batch):
    kw = dict(batch_axis=0, batch_size=batch)
    return [
        ("none", ()),
        ("ErrorEstimate", (ndes.ErrorEstimate(1e-2, **kw),)),
        ("StiffnessEstimate", (ndes.StiffnessEstimate(1e-3, **kw),)),
        ("LocalErrorEstimate unbiased", (ndes.LocalErrorEstimate(1e-2, key=key, **kw),)),
        (
            "LocalErrorEstimate biased",
            (ndes.LocalErrorEstimate(1e-2, sampling="biased", key=key, **kw),),
        ),
        ("LocalStiffnessEstimate", (ndes.LocalStiffnessEstimate(1e-3, key=key, **kw),)),
        ("KineticEnergy", (ndes.KineticEnergy(1e-2, **kw),)),
        ("JacobianFrobenius", (ndes.JacobianFrobenius(1e-2, key=key, **kw),)),
        ("TaylorDerivative K=2", (ndes.TaylorDerivative(1e-3, order=2, **kw),)),
        ("TaylorDerivative K=3", (ndes.TaylorDerivative(1e-4, order=3, **kw),)),
        ("RandomEndTime b=0.5", (ndes.RandomEndTime(0.5, key=key),)),
    ]


def make_step(make_regs, rtol, atol, t1, omega):
    ctrl = diffrax.PIDController(rtol=rtol, atol=atol)
    rot = jnp.array([[0.0, omega], [-omega, 0.0]], jnp.float32)

    def loss(model, y0, target, key):
        term = diffrax.ODETerm(lambda t, y, a: jax.vmap(model)(y) + y @ rot)
        sol = ndes.diffeqsolve(
            term,
            diffrax.Tsit5(),
            0.0,
            t1,
            None,
            y0,
            stepsize_controller=ctrl,
            max_steps=4096,
            regularizers=make_regs(key),
        )
        stats = (sol.stats["num_accepted_steps"], sol.stats["num_fevals"])
        return jnp.mean((sol.ys[-1] - target) ** 2) + sol.penalty, stats

    @eqx.filter_jit
    def step(model, y0, target, key):
        (val, stats), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model, y0, target, key)
        return val, grads, stats

    return step


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repetitions")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--reps", type=int, default=40)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--atol", type=float, default=1e-6)
    p.add_argument("--t1", type=float, default=2.0)
    p.add_argument("--omega", type=float, default=6.0, help="rotation rate (rad/time)")
    p.add_argument(
        "--only",
        default="",
        help="comma-separated name fragments: time only the rows whose name contains one "
        "(the unregularized row is always timed, as the baseline)",
    )
    a = p.parse_args(argv)
    if a.quick:
        a.batch, a.width, a.reps = 8, 8, 2

    model = eqx.nn.MLP(2, 2, a.width, 2, activation=jnp.tanh, key=jax.random.key(0))
    y0 = jax.random.normal(jax.random.key(1), (a.batch, 2), jnp.float32)
    target = jnp.roll(y0, 1, axis=-1)
    key = jax.random.key(2)
    wanted = [w for w in a.only.split(",") if w]
    picked = [
        i
        for i, (name, _) in enumerate(rows(key, a.batch))
        if i == 0 or not wanted or any(w in name for w in wanted)
    ]
    names = [rows(key, a.batch)[i][0] for i in picked]

    def regs_of(i):
        return lambda k: rows(k, a.batch)[i][1]

    steps = [make_step(regs_of(i), a.rtol, a.atol, a.t1, a.omega) for i in picked]
    fns = [lambda s=s: s(model, y0, target, key) for s in steps]
    timed = time_interleaved(fns, a.reps)

    print(
        f"ndes regularizer cost: MLP 2-{a.width}-{a.width}-2 (tanh) + {a.omega} * rotation, "
        f"batch {a.batch} solved jointly, Tsit5, PIDController(rtol={a.rtol}, atol={a.atol}), "
        "float32, "
        f"t in [0, {a.t1}], median of {a.reps} train steps (value and grad), interleaved"
    )
    print(
        f"jax {jax.__version__}, diffrax {diffrax.__version__}, equinox {eqx.__version__}, "
        f"{platform.processor() or platform.machine()}, devices {jax.devices()}"
    )
    header = (
        f"{'regularizer':30} {'ms/step':>9} {'ratio':>7} {'steps':>6} {'NFE':>6} "
        f"{'ratio/NFE':>10} {'compile s':>10}"
    )
    print(header)
    print("-" * len(header))
    base_ms, _, base_out = timed[0]
    base_nfe = int(base_out[2][1])
    for name, (med, comp, out) in zip(names, timed, strict=True):
        nsteps, nfe = int(out[2][0]), int(out[2][1])
        ratio = med / base_ms
        per_step = ratio / (nfe / base_nfe)
        print(
            f"{name:30} {med * 1e3:9.2f} {ratio:7.3f} {nsteps:6d} {nfe:6d} "
            f"{per_step:10.3f} {comp:10.2f}"
        )


if __name__ == "__main__":
    main()
