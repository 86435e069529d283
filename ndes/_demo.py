"""`ndes demo`: a neural ODE fitted to spiral trajectories three ways.

The ground truth is the cubic spiral `dy/dt = (y**3) @ A` with
`A = [[-0.1, 2.0], [-2.0, -0.1]]` (the classic toy of Chen et al. 2018's neural-ODE demo).
A small neural ODE is trained on trajectories from random initial conditions, once without
regularization and once with each global solver-heuristic regularizer. The table reports
what matters for the mission: the test error and what a prediction costs afterwards
(function evaluations and steps per solve, measured without any regularizer).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import ndes

__all__ = ["DemoConfig", "DemoResult", "run_demo", "format_table", "spiral_trajectories"]

_A_TRUE = np.array([[-0.1, 2.0], [-2.0, -0.1]], dtype=np.float32)


def spiral_trajectories(key, num: int, ts: jax.Array, *, radius=(0.5, 1.3)) -> tuple:
    """`num` trajectories of `dy/dt = (y**3) @ A` sampled at `ts`.

    Initial conditions are uniform on the annulus `radius`; returns `(y0, ys)` with shapes
    `(num, 2)` and `(num, len(ts), 2)` (float32), solved to 1e-8 tolerance with Dopri8.
    """
    kr, ka = jax.random.split(key)
    r = jax.random.uniform(kr, (num,), minval=radius[0], maxval=radius[1])
    a = jax.random.uniform(ka, (num,), maxval=2 * jnp.pi)
    y0 = jnp.stack([r * jnp.cos(a), r * jnp.sin(a)], axis=-1).astype(jnp.float32)
    A = jnp.asarray(_A_TRUE)
    term = diffrax.ODETerm(lambda t, y, args: (y**3) @ A)

    def one(y):
        return diffrax.diffeqsolve(
            term,
            diffrax.Dopri8(),
            ts[0],
            ts[-1],
            None,
            y,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-8),
            max_steps=100_000,
        ).ys

    return y0, jax.vmap(one)(y0)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo. `quick()` is a seconds-long variant used by the tests."""

    steps: int = 1500
    batch: int = 64
    num_test: int = 256
    num_times: int = 16
    t1: float = 4.0
    width: int = 32
    lr: float = 5e-3
    rtol: float = 1e-3
    atol: float = 1e-6
    error_weight: float = 1e-2
    stiffness_weight: float = 2e-2
    seed: int = 0

    @staticmethod
    def quick() -> "DemoConfig":
        return DemoConfig(steps=20, batch=8, num_test=16, num_times=6, width=8)


@dataclasses.dataclass(frozen=True)
class DemoResult:
    method: str
    test_mse: float
    nfe: float
    accepted: float
    rejected: float
    train_s: float
    history: list[tuple[int, float, float]]  # (step, train loss, mean NFE per solve)


class _Field(eqx.Module):
    mlp: eqx.nn.MLP

    def __call__(self, t, y, args):
        return self.mlp(y)


def _methods(cfg: DemoConfig) -> list[tuple[str, tuple]]:
    return [
        ("vanilla", ()),
        ("ErrorEstimate", (ndes.ErrorEstimate(cfg.error_weight),)),
        ("StiffnessEstimate", (ndes.StiffnessEstimate(cfg.stiffness_weight),)),
    ]


def _train_one(cfg: DemoConfig, name: str, regs, data, progress: bool) -> DemoResult:
    (y0_tr, ys_tr), (y0_te, ys_te), ts = data
    ctrl = diffrax.PIDController(rtol=cfg.rtol, atol=cfg.atol)
    key = jax.random.key(cfg.seed + 1)
    model = _Field(eqx.nn.MLP(2, 2, cfg.width, 2, activation=jnp.tanh, key=key))

    def solve(field, y0, regularizers):
        sol = ndes.diffeqsolve(
            diffrax.ODETerm(field),
            diffrax.Tsit5(),
            ts[0],
            ts[-1],
            None,
            y0,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=ctrl,
            regularizers=regularizers,
            max_steps=2048,
        )
        return sol.ys, sol.penalty, sol.stats

    def loss_fn(field, y0, ys):
        pred, pen, stats = jax.vmap(solve, in_axes=(None, 0, None))(field, y0, regs)
        mse = jnp.mean((pred - ys) ** 2)
        return mse + jnp.mean(pen), (mse, jnp.mean(stats["num_fevals"]))

    opt = optax.adam(cfg.lr)
    opt_state = opt.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def train_step(model, opt_state, y0, ys):
        (_, (mse, nfe)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, y0, ys)
        updates, opt_state = opt.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, mse, nfe

    @eqx.filter_jit
    def evaluate(model, y0, ys):
        pred, _, stats = jax.vmap(solve, in_axes=(None, 0, None))(model, y0, ())
        return (
            jnp.mean((pred - ys) ** 2),
            jnp.mean(stats["num_fevals"]),
            jnp.mean(stats["num_accepted_steps"]),
            jnp.mean(stats["num_rejected_steps"]),
        )

    rng = np.random.default_rng(cfg.seed)
    history = []
    bar = tqdm(range(cfg.steps), desc=f"{name:>17}", disable=not progress, leave=True)
    t0 = time.perf_counter()
    for step in bar:
        idx = rng.choice(len(y0_tr), cfg.batch, replace=False)
        model, opt_state, mse, nfe = train_step(model, opt_state, y0_tr[idx], ys_tr[idx])
        if step % 10 == 0 or step == cfg.steps - 1:
            mse_f, nfe_f = float(mse), float(nfe)
            history.append((step, mse_f, nfe_f))
            bar.set_postfix(mse=f"{mse_f:.4f}", nfe=f"{nfe_f:.0f}")
    jax.block_until_ready(model)
    train_s = time.perf_counter() - t0
    bar.close()
    mse, nfe, acc, rej = (float(x) for x in evaluate(model, y0_te, ys_te))
    return DemoResult(name, mse, nfe, acc, rej, train_s, history)


def run_demo(
    cfg: DemoConfig = DemoConfig(), *, methods: Sequence[str] | None = None, progress=None
) -> list[DemoResult]:
    """Train the three variants and return their results (see module docstring).

    `progress=None` shows a progress bar only when attached to a terminal.
    """
    ts = jnp.linspace(0.0, cfg.t1, cfg.num_times, dtype=jnp.float32)
    k_tr, k_te = jax.random.split(jax.random.key(cfg.seed))
    train = spiral_trajectories(k_tr, max(4 * cfg.batch, 256), ts)
    test = spiral_trajectories(k_te, cfg.num_test, ts)
    out = []
    for name, regs in _methods(cfg):
        if methods is not None and name not in methods:
            continue
        out.append(_train_one(cfg, name, regs, (train, test, ts), progress))
    return out


def format_table(results: Sequence[DemoResult]) -> str:
    """A plain-text table; NFE ratio is against the first (vanilla) row."""
    head = (
        f"{'method':18} {'test MSE':>10} {'NFE/solve':>10} {'vs vanilla':>10} "
        f"{'accepted':>9} {'rejected':>9} {'train s':>8}"
    )
    lines = [head, "-" * len(head)]
    base = results[0].nfe if results else 1.0
    for r in results:
        lines.append(
            f"{r.method:18} {r.test_mse:10.5f} {r.nfe:10.1f} {r.nfe / base:10.2f} "
            f"{r.accepted:9.1f} {r.rejected:9.1f} {r.train_s:8.1f}"
        )
    return "\n".join(lines)
