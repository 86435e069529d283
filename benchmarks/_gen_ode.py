"""ODE family of the generalization suite: trajectory fitting of known ODE systems.

What it measures: how well a neural ODE fitted to whole trajectories of a known system
predicts trajectories from *held-out initial conditions* (test MSE in units of the train
data's per-channel variance), and how many vector-field evaluations (NFE) a prediction
then costs, with and without ndes's regularizers.

The training loop is the one a diffrax user writes by hand -- an Equinox MLP vector field,
`Tsit5` under `PIDController(rtol=1e-3, atol=1e-6)`, `SaveAt(ts=ts)`, optax adam,
`eqx.filter_value_and_grad` and a jitted step -- with `diffrax.diffeqsolve` changed by one
line to `ndes.diffeqsolve(..., regularizers=regs, train_step=step)` and the loss to
`MSE + sol.penalty`. Every method runs that same code; the only difference is the
`regularizers` tuple (`()` for vanilla, which ndes guarantees bitwise identical to
diffrax). The batch is solved jointly: the MLP is `jax.vmap`ped over a `(B, d)` state inside
one `ODETerm`, so the regularizers are declared per trajectory with `batch_axis=0,
batch_size=B` (what `ndes.NeuralODE(batch_mode="joint")` does internally).

The "budget" method is the hand-loop use of `ndes.BudgetWeight`: the weight of
`ErrorEstimate` is the traced array `bstate.weight`, and after every step
`bstate = budget.update(bstate, nfe, loss, value)`.

Problems (data generated here with diffrax `Dopri8` at tight tolerances from random
initial conditions; fixed per problem, so every method and seed sees the same data; train
and test initial conditions are disjoint draws; standardised per channel by the train
statistics):

- `vanderpol`: Van der Pol oscillator, mu = 1, over about one period (t in [0, 7]);
- `fitzhugh_nagumo`: FitzHugh--Nagumo, a = 0.7, b = 0.8, tau = 12.5, I = 0.5, over
  about one period of its relaxation oscillation (t in [0, 40]; the model's time is t / 5,
  so that an untrained MLP's speed is of the order of the data's);
- `lotka_volterra`: `ndes.data.lotka_volterra` with its default rates, about two periods
  (t in [0, 5]);
- `pendulum`: damped pendulum theta'' = -sin(theta) - 0.2 theta', over about two periods
  (t in [0, 12]; initial energy below the separatrix, so no trajectory goes over the top).

Settings: 128 train / 64 test trajectories, 30 saved times (40 for FitzHugh--Nagumo), an
MLP of width 64, depth 2, tanh; 500 full-batch adam steps, learning rate 1e-2 with a cosine
decay to 1e-3. `SuiteConfig(quick=True)`: 16 / 8 trajectories, 10 times, width 16, 12 steps.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import ndes

try:  # imported as benchmarks._gen_ode
    from ._gen_common import METHODS, SuiteConfig, budget_for, regularizers
except ImportError:  # imported with benchmarks/ on sys.path (the scripts, the tests)
    from _gen_common import METHODS, SuiteConfig, budget_for, regularizers

__all__ = ["PROBLEMS", "run"]

FAMILY = "ode"
MODEL = "neural_ode"


# ---- the known systems -----------------------------------------------------------------------


def _vanderpol(t, y, args):
    mu = 1.0
    x, v = y[..., 0], y[..., 1]
    return jnp.stack([v, mu * (1 - x**2) * v - x], axis=-1)


def _fitzhugh_nagumo(t, y, args):
    a, b, tau, current = 0.7, 0.8, 12.5, 0.5
    v, w = y[..., 0], y[..., 1]
    return jnp.stack([v - v**3 / 3 - w + current, (v + a - b * w) / tau], axis=-1)


def _pendulum(t, y, args):
    damping = 0.2
    theta, omega = y[..., 0], y[..., 1]
    return jnp.stack([omega, -jnp.sin(theta) - damping * omega], axis=-1)


@dataclasses.dataclass(frozen=True)
class _System:
    t1: float
    num_times: int
    low: tuple[float, ...]  # initial conditions uniform on [low, high)
    high: tuple[float, ...]
    vector_field: Callable | None  # None: ndes.data.lotka_volterra
    time_scale: float = 1.0  # the model's time is the system's divided by this


_SYSTEMS = {
    "vanderpol": _System(7.0, 30, (-2.5, -3.0), (2.5, 3.0), _vanderpol),
    "fitzhugh_nagumo": _System(40.0, 40, (-2.5, -0.5), (2.5, 1.5), _fitzhugh_nagumo, 5.0),
    "lotka_volterra": _System(5.0, 30, (0.5, 0.5), (3.0, 3.0), None),
    "pendulum": _System(12.0, 30, (-2.0, -1.0), (2.0, 1.0), _pendulum),
}

PROBLEMS = tuple(_SYSTEMS)


def _reference_solve(vector_field, ts, y0):
    """High-accuracy trajectories `(N, L, d)` of the initial conditions `y0` `(N, d)`, solved
    as one joint state (every vector field here acts row-wise on a `(N, d)` state)."""
    tol = 1e-10 if ts.dtype == jnp.float64 else 1e-7
    ys = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        diffrax.Dopri8(),
        ts[0],
        ts[-1],
        None,
        y0,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol),
        max_steps=100_000,
    ).ys
    return jnp.swapaxes(ys, 0, 1)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def make_data(problem: str, num_train: int, num_test: int, num_times: int):
    """`(ts, y_train, y_test)`, shapes `(L,)`, `(num_train, L, d)`, `(num_test, L, d)`,
    standardised per channel by the train mean and standard deviation. Train and test are
    disjoint draws of initial conditions; deterministic per problem (the data key does not
    depend on the seed). One compiled function (solves and all)."""
    system = _SYSTEMS[problem]
    ts = jnp.linspace(0.0, system.t1, num_times, dtype=jnp.result_type(float))
    key = jax.random.fold_in(jax.random.key(20240), PROBLEMS.index(problem))
    num = num_train + num_test
    if system.vector_field is None:
        lo, hi = system.low[0], system.high[0]
        _, ys = ndes.data.lotka_volterra(key, num, ts, y0_range=(lo, hi))
    else:
        low = jnp.asarray(system.low, ts.dtype)
        high = jnp.asarray(system.high, ts.dtype)
        y0 = jax.random.uniform(key, (num, len(system.low)), ts.dtype, low, high)
        ys = _reference_solve(system.vector_field, ts, y0)
    y_train, y_test = ys[:num_train], ys[num_train:]
    mean = jnp.mean(y_train, axis=(0, 1))
    std = jnp.std(y_train, axis=(0, 1))
    return ts / system.time_scale, (y_train - mean) / std, (y_test - mean) / std


# ---- the model and the hand-written loop -----------------------------------------------------


class Func(eqx.Module):
    """The learned vector field of a joint batch: an MLP applied to every row of `(B, d)`."""

    mlp: eqx.nn.MLP

    def __init__(self, dim: int, width: int, depth: int, *, key):
        self.mlp = eqx.nn.MLP(dim, dim, width, depth, activation=jnp.tanh, key=key)

    def __call__(self, t, y, args):
        return jax.vmap(self.mlp)(y)


def _per_trajectory(regs: tuple, batch: int) -> tuple:
    """Declare the joint `(B, d)` state a batch of `B` trajectories to every regularizer."""
    return tuple(dataclasses.replace(r, batch_axis=0, batch_size=batch) for r in regs)


def solve(model, ts, y0, regs=(), step=None):
    """The one solve of training and evaluation (`regs=()`: exactly diffrax's solve)."""
    return ndes.diffeqsolve(  # was: diffrax.diffeqsolve
        diffrax.ODETerm(model),
        diffrax.Tsit5(),
        ts[0],
        ts[-1],
        None,
        y0,
        stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6),
        saveat=diffrax.SaveAt(ts=ts),
        regularizers=_per_trajectory(regs, y0.shape[0]),
        train_step=step,
    )


def _settings(cfg: SuiteConfig) -> dict:
    if cfg.quick:
        return dict(num_train=16, num_test=8, num_times=10, width=16, depth=2, steps=12)
    return dict(num_train=128, num_test=64, num_times=0, width=64, depth=2, steps=500)


LEARNING_RATE = 1e-2


@functools.cache
def optimiser(steps: int) -> optax.GradientTransformation:
    """Adam with a cosine decay of the learning rate to a tenth over `steps` (one object per
    `steps`, so that the jitted step is compiled once for every seed and method)."""
    return optax.adam(optax.cosine_decay_schedule(LEARNING_RATE, steps, alpha=0.1))


def mse_of(sol, y):
    """MSE between the solve's `(L, B, d)` saved states and the data `(B, L, d)`."""
    return jnp.mean((sol.ys - jnp.swapaxes(y, 0, 1)) ** 2)


def loss_fn(model, ts, y, regs, step):
    """MSE + penalty of one joint solve of the batch `y` from its first saved states."""
    sol = solve(model, ts, y[:, 0], regs, step)
    mse = mse_of(sol, y)
    value = sol.penalty_terms.get("ErrorEstimate", jnp.zeros((), mse.dtype))
    return mse + sol.penalty, (mse, sol.stats["num_fevals"], value)


@eqx.filter_jit
def make_step(model, opt_state, ts, y, step, key, weight, method, optim):
    """One adam step. The only thing `method` changes is the `regularizers` tuple."""
    regs = regularizers(method, jax.random.fold_in(key, step))  # a fresh key per step
    if method == "budget":  # ErrorEstimate's weight is the budget's traced weight
        regs = tuple(dataclasses.replace(r, weight=weight) for r in regs)
    grad_fn = eqx.filter_value_and_grad(loss_fn, has_aux=True)
    (_, (mse, nfe, value)), grads = grad_fn(model, ts, y, regs, step)
    updates, opt_state = optim.update(grads, opt_state, eqx.filter(model, eqx.is_array))
    model = eqx.apply_updates(model, updates)
    return model, opt_state, mse, nfe, value


@eqx.filter_jit
def budget_update(budget, bstate, nfe, loss, value):
    """`budget.update(bstate, nfe, loss, value)`, compiled once (it is a dozen small ops)."""
    return budget.update(bstate, nfe, loss, value)


@eqx.filter_jit
def evaluate(model, ts, y):
    """Test MSE and `num_fevals` of one unregularized joint solve of the batch `y`."""
    sol = solve(model, ts, y[:, 0])
    return mse_of(sol, y), sol.stats["num_fevals"]


def run(problem: str, method: str, seed: int, cfg: SuiteConfig = SuiteConfig()) -> list[dict]:
    """Train one neural ODE on `problem` with `method` (see `METHODS`) and evaluate it.

    Returns one record (see `_gen_common`): `value` is the test MSE (standardised units),
    `nfe_per_prediction` the `num_fevals` of one unregularized joint solve of the test batch
    (every series in it costs that many evaluations), `observations` the saved times.
    `train_s` includes the compilation of the step (as `ndes.fit`'s `wall_time` does).
    """
    if problem not in _SYSTEMS:
        raise ValueError(f"unknown problem {problem!r}; choose from {PROBLEMS}.")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}.")
    s = _settings(cfg)
    steps = cfg.steps or s["steps"]
    num_times = s["num_times"] or _SYSTEMS[problem].num_times
    note = ""
    if cfg.max_length and num_times > cfg.max_length:
        note = f"{num_times} saved times cut to {cfg.max_length}"
        num_times = cfg.max_length
    ts, y_train, y_test = make_data(problem, s["num_train"], s["num_test"], num_times)

    k_model, k_reg = jax.random.split(jax.random.key(seed))
    model = Func(y_train.shape[-1], s["width"], s["depth"], key=k_model)
    optim = optimiser(steps)
    opt_state = optim.init(eqx.filter(model, eqx.is_inexact_array))
    budget = budget_for(method, steps)
    bstate = budget.init_state(ts.dtype) if budget is not None else None

    t_start = time.perf_counter()
    for step in range(steps):
        weight = bstate.weight if bstate is not None else 0.0
        model, opt_state, mse, nfe, value = make_step(
            model,
            opt_state,
            ts,
            y_train,
            jnp.asarray(step, jnp.int32),
            k_reg,
            weight,
            method,
            optim,
        )
        if budget is not None:
            bstate = budget_update(budget, bstate, nfe, mse, value)
    jax.block_until_ready(model)
    train_s = time.perf_counter() - t_start

    test_mse, test_nfe = evaluate(model, ts, y_test)
    record = {
        "family": FAMILY,
        "problem": problem,
        "model": MODEL,
        "missing": 0.0,
        "method": method,
        "seed": seed,
        "metric": "test_mse",
        "value": float(test_mse),
        "higher_is_better": False,
        "nfe_per_prediction": float(test_nfe),
        "observations": int(num_times),
        "train_s": train_s,
        "steps": steps,
        "note": note,
    }
    if bstate is not None:
        record["budget_weight"] = float(bstate.weight)
        record["budget_reference_nfe"] = float(bstate.reference_nfe)
    return [record]


if __name__ == "__main__":  # pragma: no cover
    import sys

    # python benchmarks/_gen_ode.py PROBLEM METHOD [STEPS]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    for rec in run(sys.argv[1], sys.argv[2], 0, SuiteConfig(steps=steps)):
        print(rec, flush=True)
