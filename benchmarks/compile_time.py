"""First-call compile time of each model's train step: NeuralODE, NeuralCDE, NeuralSDE,
LatentSDE, a stable SDE (NeuralLSDE), printed as a table.

A train step is `jax.jit` of value_and_grad of the model's loss plus an Adam update, as
`ndes.fit` runs it. For each model the script times, in a fresh jit: tracing + lowering
(`jit(...).lower(...)`, Python time: the model, diffrax's loop, the regularizer plumbing),
XLA compilation (`.compile()`), and one steady-state step after it, so that "first call"
= trace + compile + one step. Sizes (float32): NODE MLP 2->64->64->2, batch 256, Tsit5 +
PID; NCDE hidden 32, 3 channels, length 50, batch 128, Hermite cubic, Midpoint 50 fixed
steps; NSDE MLP 4->64->4, batch 256, Euler--Maruyama 50 steps; LatentSDE data 1, latent 4,
hidden/context 16/8, 50 steps, batch 32 (`elbo_batch`, joint); NeuralLSDE hidden 16, batch
64, 50 steps, a cubic control path. `--quick`: tiny sizes, same code paths.
Run: `python benchmarks/compile_time.py` (each row runs in this process, one after another;
XLA's compile cache is in-process only, so every row compiles from scratch).
"""

from __future__ import annotations

import argparse
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax

from ndes.models._cde import NeuralCDE
from ndes.models._latent_sde import LatentSDE
from ndes.models._ode import NeuralODE
from ndes.models._sde import NeuralSDE
from ndes.models._stable_sde import NeuralLSDE


def _step(loss_fn, model):
    """A jitted value_and_grad + Adam step of `loss_fn(model, key)`; returns `(jitted, args)`."""
    opt = optax.adam(1e-3)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def step(params, opt_state, key):
        loss, g = jax.value_and_grad(lambda p: loss_fn(eqx.combine(p, static), key))(params)
        upd, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    return jax.jit(step), (params, opt.init(params), jr.PRNGKey(1))


def node_case(q):
    B, W = (8, 8) if q else (256, 64)
    m = NeuralODE.mlp(
        2,
        W,
        2,
        key=jr.PRNGKey(0),
        solver=diffrax.Tsit5(),
        stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6),
        dt0=None,
    )
    m = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, m)
    ts = jnp.linspace(0.0, 1.0, 2, dtype=jnp.float32)
    y0 = jr.normal(jr.PRNGKey(2), (B, 2), jnp.float32)
    return _step(lambda mm, k: jnp.mean(mm(ts, y0).ys[:, -1] ** 2), m)


def ncde_case(q):
    B, L, H, steps = (4, 6, 4, 5) if q else (128, 50, 32, 50)
    m = NeuralCDE(
        3,
        H,
        2,
        H,
        1,
        key=jr.PRNGKey(0),
        solver=diffrax.Midpoint(),
        stepsize_controller=diffrax.ConstantStepSize(),
        dt0=1.0 / steps,
        dtype=jnp.float32,
    )
    ts = jnp.linspace(0.0, 1.0, L, dtype=jnp.float32)
    xs = jr.normal(jr.PRNGKey(2), (B, L, 3), jnp.float32)
    coeffs = m.coefficients(ts, xs)
    labels = jnp.arange(B) % 2

    def loss(mm, k):
        logits = mm(ts, coeffs).ys
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return _step(loss, m)


def nsde_case(q):
    B, W, steps = (8, 8, 5) if q else (256, 64, 50)
    m = NeuralSDE.mlp(4, W, 1, key=jr.PRNGKey(0), num_steps=steps, dtype=jnp.float32)
    ts = jnp.array([0.0, 1.0], jnp.float32)
    y0 = jr.normal(jr.PRNGKey(2), (B, 4), jnp.float32)
    return _step(lambda mm, k: jnp.mean((mm(ts, y0, key=k).ys[:, -1] - 1.0) ** 2), m)


def latent_case(q):
    B, L, steps = (4, 6, 5) if q else (32, 50, 50)
    m = LatentSDE(
        1, 4, key=jr.PRNGKey(0), hidden_size=16, context_size=8, width=16, num_steps=steps
    )
    ts = jnp.linspace(0.0, 1.0, L, dtype=jnp.float32)
    xs = jnp.sin(3 * ts[None, :, None] + jnp.arange(B)[:, None, None]).astype(jnp.float32)
    return _step(lambda mm, k: -jnp.mean(mm.elbo_batch(ts, xs, k)[0]), m)


def stable_case(q):
    B, L, H, steps = (4, 6, 4, 5) if q else (64, 50, 16, 50)
    m = NeuralLSDE(
        H,
        H,
        1,
        key=jr.PRNGKey(0),
        input_channels=3,
        out_size=2,
        num_steps=steps,
        dtype=jnp.float32,
    )
    ts = jnp.linspace(0.0, 1.0, L, dtype=jnp.float32)
    xs = jr.normal(jr.PRNGKey(2), (B, L, 3), jnp.float32)
    coeffs = jax.vmap(lambda x: diffrax.backward_hermite_coefficients(ts, x))(xs)
    control = jax.vmap(lambda c: diffrax.CubicInterpolation(ts, c))(coeffs)
    labels = jnp.arange(B) % 2

    def loss(mm, k):
        logits = mm(ts, control, key=k).ys
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return _step(loss, m)


CASES = [
    ("NeuralODE (Tsit5, PID, joint)", node_case),
    ("NeuralCDE (Midpoint 50, joint)", ncde_case),
    ("NeuralSDE (Euler 50, joint)", nsde_case),
    ("LatentSDE (Euler 50, elbo_batch)", latent_case),
    ("NeuralLSDE (Euler 50, control)", stable_case),
]


def measure(build, quick):
    jitted, args = build(quick)
    t = time.perf_counter()
    lowered = jitted.lower(*args)
    t_trace = time.perf_counter() - t
    t = time.perf_counter()
    compiled = lowered.compile()
    t_compile = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    t_step = time.perf_counter() - t
    return t_trace, t_compile, t_step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--only", default=None, help="run the rows whose name contains this")
    a = ap.parse_args(argv)
    print(
        f"jax {jax.__version__} ({jax.default_backend()}), diffrax {diffrax.__version__}, "
        f"equinox {eqx.__version__}; float32; {'--quick sizes' if a.quick else 'full sizes'}"
    )
    print(f"{'train step':34s} {'trace+lower s':>13s} {'compile s':>10s} {'first call s':>12s}")
    for name, build in CASES:
        if a.only and a.only.lower() not in name.lower():
            continue
        tr, co, st = measure(build, a.quick)
        print(f"{name:34s} {tr:13.2f} {co:10.2f} {tr + co + st:12.2f}", flush=True)


if __name__ == "__main__":
    main()
