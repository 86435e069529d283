"""First-call compile time of each model's train step: NeuralODE, NeuralCDE, NeuralSDE,
LatentSDE, a stable SDE (NeuralLSDE), printed as a table.

A train step is `jax.jit` of value_and_grad of the model's loss plus an Adam update, as
`ndes.fit` runs it. For each model the script times, in a fresh jit: tracing
(`jit(...).trace(...)`, Python time: the model, diffrax's loop, the regularizer plumbing),
lowering to StableHLO (`.lower()`), XLA compilation (`.compile()`), and one step after it,
so that "first call" = trace + lower + compile + one step; it also prints the traced
program's size (jaxpr equations, counting those in loop bodies, and StableHLO characters).
The "raw diffrax" row is the NODE row's step written with plain `diffrax.diffeqsolve` (same
field, solver, controller, saving, adjoint, loss, update), so the two rows split the NODE
compile time into diffrax's own and ndes's wrapping. Sizes (float32): NODE MLP 2->64->64->2,
batch 256, Tsit5 + PID; NCDE hidden 32, 3 channels, length 50, batch 128, Hermite cubic,
Midpoint 50 fixed steps; NSDE MLP 4->64->4, batch 256, Euler--Maruyama 50 steps; LatentSDE
data 1, latent 4, hidden/context 16/8, 50 steps, batch 32 (`elbo_batch`, joint); NeuralLSDE
hidden 16, batch 64, 50 steps, a cubic control path. `--quick`: tiny sizes, same code paths.
Run: `python benchmarks/compile_time.py` (each row runs in this process, one after another;
XLA's compile cache is in-process only, so every row compiles from scratch; the first row
also pays the process's one-time costs, so compare two rows each in a fresh process with
`--only`, e.g. `--only raw` and `--only tsit5`).
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
from ndes.models._stable_classes import NeuralLSDE


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


def raw_node_case(q):
    """The NODE row's train step with plain `diffrax.diffeqsolve`: the same MLP (the
    model's own field, vmapped over the batch as `JointField` does), Tsit5, PID, `SaveAt(ts)`,
    recursive-checkpoint adjoint, max_steps, loss and Adam update; no ndes counters, checks
    or regularizer plumbing."""
    B, W = (8, 8) if q else (256, 64)
    node = NeuralODE.mlp(2, W, 2, key=jr.PRNGKey(0))
    field = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, node.vector_field
    )
    ts = jnp.linspace(0.0, 1.0, 2, dtype=jnp.float32)
    y0 = jr.normal(jr.PRNGKey(2), (B, 2), jnp.float32)

    def loss(f, k):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, a: jax.vmap(f, in_axes=(None, 0, None))(t, y, a)),
            diffrax.Tsit5(),
            ts[0],
            ts[-1],
            None,
            y0,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6),
            adjoint=diffrax.RecursiveCheckpointAdjoint(),
            max_steps=4096,
        )
        return jnp.mean(jnp.swapaxes(sol.ys, 0, 1)[:, -1] ** 2)

    return _step(loss, field)


def ncde_case(q, **options):
    """`options`: extra model settings (e.g. `adjoint=`), for `scan_vs_loop.py`."""
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
        **options,
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


def stable_case(q, **options):
    """`options`: extra model settings (e.g. `adjoint=`), for `scan_vs_loop.py`."""
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
        **options,
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
    ("NeuralODE step, raw diffrax", raw_node_case),
    ("NeuralCDE (Midpoint 50, joint)", ncde_case),
    ("NeuralSDE (Euler 50, joint)", nsde_case),
    ("LatentSDE (Euler 50, elbo_batch)", latent_case),
    ("NeuralLSDE (Euler 50, control)", stable_case),
]


def _count_eqns(jaxpr) -> int:
    """Equations in a jaxpr, counting those inside sub-jaxprs (loop bodies, custom rules)."""
    n = 0
    for eqn in jaxpr.eqns:
        n += 1
        for v in eqn.params.values():
            for sub in v if isinstance(v, tuple | list) else (v,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    n += _count_eqns(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    n += _count_eqns(sub)
    return n


def measure(build, quick):
    """Seconds to trace, lower, compile and run one step; CPU seconds of this process (all
    threads) for trace + lower + compile, less sensitive to other jobs on a shared machine;
    jaxpr equations; StableHLO characters."""
    jitted, args = build(quick)
    c = time.process_time()
    t = time.perf_counter()
    traced = jitted.trace(*args)
    t_trace = time.perf_counter() - t
    t = time.perf_counter()
    lowered = traced.lower()
    t_lower = time.perf_counter() - t
    t = time.perf_counter()
    compiled = lowered.compile()
    t_compile = time.perf_counter() - t
    cpu = time.process_time() - c
    t = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    t_step = time.perf_counter() - t
    n_eqns = _count_eqns(traced.jaxpr.jaxpr)
    n_hlo = len(lowered.as_text())
    return t_trace, t_lower, t_compile, t_step, cpu, n_eqns, n_hlo


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--only", default=None, help="run the rows whose name contains this")
    ap.add_argument(
        "--cache-dir",
        default=None,
        help="turn on JAX's persistent compilation cache in this folder (every entry kept); "
        "a second run then loads each row's executable instead of compiling it",
    )
    a = ap.parse_args(argv)
    if a.cache_dir:
        jax.config.update("jax_compilation_cache_dir", a.cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    print(
        f"jax {jax.__version__} ({jax.default_backend()}), diffrax {diffrax.__version__}, "
        f"equinox {eqx.__version__}; float32; {'--quick sizes' if a.quick else 'full sizes'}"
    )
    print(
        f"{'train step':34s} {'trace s':>8s} {'lower s':>8s} {'compile s':>10s} "
        f"{'first call s':>12s} {'cpu s':>6s} {'jaxpr eqns':>10s} {'HLO chars':>10s}"
    )
    for name, build in CASES:
        if a.only and a.only.lower() not in name.lower():
            continue
        tr, lo, co, st, cpu, ne, nh = measure(build, a.quick)
        print(
            f"{name:34s} {tr:8.2f} {lo:8.2f} {co:10.2f} {tr + lo + co + st:12.2f} {cpu:6.2f} "
            f"{ne:10d} {nh:10d}",
            flush=True,
        )


if __name__ == "__main__":
    main()
