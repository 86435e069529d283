r"""Samplers of a score model, each returning its exact number of score evaluations (NFE).

- `reverse_sde_sample`: Euler--Maruyama on the reverse-time SDE (Anderson 1982; Song et al.
  2021, eq. 6) $dx = [f(t)x - g(t)^2 s(t, x)]\,dt + g(t)\,d\bar W$.
- `pc_sample`: predictor--corrector (Song et al. 2021, Algorithms 2 and 3; their
  `sampling.py`): Langevin corrector steps then an Euler--Maruyama predictor step.
- `probability_flow_sample` / `probability_flow_log_prob`: the probability-flow ODE
  $\dot x = f(t)x - \tfrac12 g(t)^2 s(t, x)$ (Song et al. 2021, eq. 13) through
  `ndes.diffeqsolve` with an adaptive solver (counters and regularizers apply); its likelihood
  is that of a CNF (`ndes.CNF`, sharing `ndes.models._divergence`).
- `dpm_solver_sample` (in `_dpm_solver.py`): DPM-Solver-1/2/3 for the VP SDE.

NFE counts evaluations of the score network on the whole batch (one evaluation = one call per
sample), i.e. per-sample cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import check_int, check_positive
from .._solve import diffeqsolve
from ..models._cnf import CNF
from ..models._common import JointField, per_trajectory_regularizers
from ._score import ScoreModel
from ._sde import VPSDE

__all__ = [
    "SamplerOutput",
    "reverse_sde_sample",
    "pc_sample",
    "probability_flow_sample",
    "probability_flow_log_prob",
    "probability_flow_cnf",
    "ProbabilityFlowField",
]


class SamplerOutput(eqx.Module):
    """What every sampler returns.

    **Fields:** `samples` `(n, d)`; `nfe` (int scalar: score-network evaluations per sample,
    exact); `log_prob` (`(n,)` nats, or `None`); `penalty`, `penalty_terms` (regularizers of
    the probability-flow solve; 0 / empty otherwise); `stats` (the solve's counters, or
    `{}`)."""

    samples: Float[Array, "n d"]
    nfe: Array
    log_prob: Array | None = None
    penalty: Array = eqx.field(default_factory=lambda: jnp.zeros(()))
    penalty_terms: dict = eqx.field(default_factory=dict)
    stats: dict = eqx.field(default_factory=dict)


def _check_model(model, owner: str) -> ScoreModel:
    if not isinstance(model, ScoreModel):
        raise ValueError(
            f"{owner}: model must be an ndes.diffusion.ScoreModel (network + SDE); got "
            f"{type(model).__name__}."
        )
    return model


def _check_eps(eps, model: ScoreModel, owner: str) -> float:
    eps = float(eps)
    if not (math.isfinite(eps) and 0 < eps < model.sde.T):
        raise ValueError(
            f"{owner}: eps={eps} must lie in (0, T={model.sde.T}); sampling stops at t=eps "
            "(e.g. 1e-3) because the score is singular at t=0."
        )
    return eps


def _initial(model, key, num_samples, x_T, dtype, owner):
    if x_T is not None:
        x_T = jnp.asarray(x_T)
        if x_T.ndim != 2:
            raise ValueError(f"{owner}: x_T must have shape (n, d); got {x_T.shape}.")
        return x_T
    num_samples = check_int(num_samples, "num_samples", owner)
    d = model.data_size
    if d is None:
        raise ValueError(
            f"{owner}: cannot tell the data dimension; give the network a `data_size` "
            "attribute (ScoreMLP has one) or pass x_T= (the prior draws)."
        )
    return model.sde.prior_sample(key, (num_samples, d), dtype or jnp.result_type(float))


def _batched(fn):
    return jax.vmap(fn, in_axes=(None, 0))


def _reverse_em_step(sde, score, x, t, t_next, key):
    """One Euler--Maruyama step of the reverse-time SDE from `t` down to `t_next`; returns
    the next state and its noise-free mean (the last step's output)."""
    dt = t - t_next
    g = sde.diffusion(t)
    mean = x - (sde.drift(t, x) - g**2 * score(t, x)) * dt
    return mean + g * jnp.sqrt(dt) * jr.normal(key, x.shape, x.dtype), mean


def reverse_sde_sample(
    model: ScoreModel,
    key: PRNGKeyArray,
    num_samples: int | None = None,
    *,
    steps: int = 1000,
    eps: float = 1e-3,
    x_T: Float[ArrayLike, "n d"] | None = None,
    dtype=None,
) -> SamplerOutput:
    r"""Euler--Maruyama on the reverse-time SDE from $T$ to `eps` on `steps` uniform steps
    $\Delta = (T - \epsilon)/N$: $x \leftarrow x - [f(t)x - g^2 s(t, x)]\Delta +
    g\sqrt\Delta\,z$, the last step without noise (Song et al.'s `noise_removal`).

    **Arguments:**

    - `model`: a `ScoreModel` (its `sde` gives $T$, the prior and the drift/diffusion).
    - `key`: PRNG key for the prior draws and the noise of every step.
    - `num_samples`: how many samples to draw; ignored when `x_T` is given.
    - `steps`: number of uniform Euler--Maruyama steps (positive int).
    - `eps`: the final (smallest) diffusion time, in $(0, T)$; default 1e-3.
    - `x_T`: optional prior draws `(n, d)` to start from instead of sampling them.
    - `dtype`: dtype of the prior draws (default JAX's default float).

    **Returns:** a `SamplerOutput` with `nfe = steps`."""
    owner = "reverse_sde_sample"
    model = _check_model(model, owner)
    eps, steps = _check_eps(eps, model, owner), check_int(steps, "steps", owner)
    if key is None:
        raise ValueError(f"{owner}: key=None; the reverse SDE needs a PRNG key for its noise.")
    k0, k1 = jr.split(key)
    x = _initial(model, k0, num_samples, x_T, dtype, owner)
    sde, score = model.sde, _batched(model.score)
    ts = jnp.linspace(sde.T, eps, steps + 1, dtype=x.dtype)

    def step(x, inp):
        t, t_next, k = inp
        return _reverse_em_step(sde, score, x, t, t_next, k)

    keys = jr.split(k1, steps)
    x, means = jax.lax.scan(step, x, (ts[:-1], ts[1:], keys))
    return SamplerOutput(means[-1], jnp.asarray(steps))


def pc_sample(
    model: ScoreModel,
    key: PRNGKeyArray,
    num_samples: int | None = None,
    *,
    steps: int = 1000,
    corrector_steps: int = 1,
    snr: float = 0.16,
    eps: float = 1e-3,
    x_T: Float[ArrayLike, "n d"] | None = None,
    dtype=None,
) -> SamplerOutput:
    r"""Predictor--corrector sampling (Song et al. 2021, Alg. 2 (VE) / 3 (VP)): at each of
    `steps` times, `corrector_steps` Langevin steps
    $x \leftarrow x + \epsilon_i s + \sqrt{2\epsilon_i}\,z$ with
    $\epsilon_i = 2\alpha_i(r\lVert z\rVert/\lVert s\rVert)^2$ (norms averaged over the batch
    as in their `LangevinCorrector`; $r$ = `snr`; $\alpha_i = 1 - \beta(t)\Delta$ for VP,
    1 for VE), then one Euler--Maruyama predictor step of `reverse_sde_sample`.

    **Arguments:**

    - `model`: a `ScoreModel` (its `sde` gives $T$, the prior and the drift/diffusion).
    - `key`: PRNG key for the prior draws, the corrector's and the predictor's noise.
    - `num_samples`: how many samples to draw; ignored when `x_T` is given.
    - `steps`: number of predictor steps (positive int).
    - `corrector_steps`: Langevin corrector steps before each predictor step (>= 0).
    - `snr`: the corrector's signal-to-noise ratio $r$ (positive; Song et al. use 0.16).
    - `eps`: the final (smallest) diffusion time, in $(0, T)$; default 1e-3.
    - `x_T`: optional prior draws `(n, d)` to start from instead of sampling them.
    - `dtype`: dtype of the prior draws (default JAX's default float).

    **Returns:** a `SamplerOutput` with `nfe = steps * (1 + corrector_steps)`."""
    owner = "pc_sample"
    model = _check_model(model, owner)
    eps, steps = _check_eps(eps, model, owner), check_int(steps, "steps", owner)
    m = check_int(corrector_steps, "corrector_steps", owner, minimum=0)
    snr = check_positive(snr, "snr", owner, " (e.g. 0.16)")
    if key is None:
        raise ValueError(f"{owner}: key=None; the sampler needs a PRNG key for its noise.")
    k0, k1 = jr.split(key)
    x = _initial(model, k0, num_samples, x_T, dtype, owner)
    sde, score = model.sde, _batched(model.score)
    ts = jnp.linspace(sde.T, eps, steps + 1, dtype=x.dtype)
    vp = isinstance(sde, VPSDE)

    def corrector(x, t, dt, k):
        alpha = jnp.clip(1 - sde.beta(t) * dt, 1e-6, 1.0) if vp else 1.0
        for kk in jr.split(k, m):
            grad = score(t, x)
            z = jr.normal(kk, x.shape, x.dtype)
            g_norm = jnp.mean(jnp.linalg.norm(grad, axis=-1))
            z_norm = jnp.mean(jnp.linalg.norm(z, axis=-1))
            h = 2 * alpha * (snr * z_norm / g_norm) ** 2
            x = x + h * grad + jnp.sqrt(2 * h) * z
        return x

    def step(x, inp):
        t, t_next, k = inp
        kc, kp = jr.split(k)
        dt = t - t_next
        x = corrector(x, t, dt, kc)
        return _reverse_em_step(sde, score, x, t, t_next, kp)

    x, means = jax.lax.scan(step, x, (ts[:-1], ts[1:], jr.split(k1, steps)))
    return SamplerOutput(means[-1], jnp.asarray(steps * (1 + m)))


class ProbabilityFlowField(eqx.Module):
    r"""The probability-flow vector field $f(t)x - \tfrac12 g(t)^2 s(t, x)$ on one sample,
    as `field(t, x, args)`; with `offset` the field is evaluated at `t + offset` (the CNF's
    time $s \in [0, T - \epsilon]$ is diffusion time $t = \epsilon + s$).

    **Arguments:** `model`, the `ScoreModel` whose score drives the flow; `offset`, the
    diffusion time at field time 0 (default 0)."""

    model: ScoreModel
    offset: float = eqx.field(static=True, default=0.0)

    @property
    def data_size(self):
        return self.model.data_size

    def __call__(self, t, x, args=None):
        t = t + self.offset
        sde = self.model.sde
        return sde.drift(t, x) - 0.5 * sde.diffusion(t) ** 2 * self.model.score(t, x)


Solver = diffrax.AbstractAdaptiveSolver


def _controller(rtol, atol, owner):
    rtol = check_positive(rtol, "rtol", owner, " (a tolerance, e.g. 1e-3)")
    atol = check_positive(atol, "atol", owner, " (a tolerance, e.g. 1e-3)")
    return diffrax.PIDController(rtol=rtol, atol=atol)


def probability_flow_sample(
    model: ScoreModel,
    key: PRNGKeyArray,
    num_samples: int | None = None,
    *,
    solver: diffrax.AbstractSolver = diffrax.Tsit5(),
    rtol: float = 1e-3,
    atol: float = 1e-3,
    eps: float = 1e-3,
    regularizers: Sequence = (),
    train_step: ArrayLike | None = None,
    max_steps: int = 4096,
    x_T: Float[ArrayLike, "n d"] | None = None,
    dtype=None,
) -> SamplerOutput:
    r"""Solve the probability-flow ODE from prior draws at $T$ back to `eps` with
    `ndes.diffeqsolve` (adaptive `solver`, default Tsit5, `PIDController(rtol, atol)`,
    initial step by diffrax's heuristic), the batch as one state.

    **Arguments:**

    - `model`: a `ScoreModel` (its `sde` gives $T$, the prior and the drift/diffusion).
    - `key`: PRNG key for the prior draws.
    - `num_samples`: how many samples to draw; ignored when `x_T` is given.
    - `solver`: an adaptive diffrax solver (default `Tsit5()`).
    - `rtol`, `atol`: the `PIDController`'s tolerances (positive).
    - `eps`: the final (smallest) diffusion time, in $(0, T)$; default 1e-3.
    - `x_T`: optional prior draws `(n, d)` to start from instead of sampling them.
    - `dtype`: dtype of the prior draws (default JAX's default float).
    - `regularizers`, `train_step`: passed to `ndes.diffeqsolve` (per-sample quantities:
      the penalty is the batch mean).
    - `max_steps`: the solve's step limit.

    **Returns:** a `SamplerOutput` with `nfe = stats["num_fevals"]` (exact: every stage of
    every accepted and rejected step, FSAL, the initial-step heuristic, local regularizers'
    extra step), `penalty`, `penalty_terms`, `stats`."""
    owner = "probability_flow_sample"
    model = _check_model(model, owner)
    eps = _check_eps(eps, model, owner)
    controller = _controller(rtol, atol, owner)
    x = _initial(model, key, num_samples, x_T, dtype, owner)
    regs = per_trajectory_regularizers(regularizers, x.shape[0], owner)
    sol = diffeqsolve(
        diffrax.ODETerm(JointField(ProbabilityFlowField(model))), solver, model.sde.T, eps,
        None, x, saveat=diffrax.SaveAt(t1=True), stepsize_controller=controller,
        max_steps=max_steps, regularizers=regs, train_step=train_step,
    )  # fmt: skip
    stats = dict(sol.stats)
    return SamplerOutput(
        sol.ys[-1], stats["num_fevals"], None, sol.penalty, dict(sol.penalty_terms), stats
    )


def probability_flow_cnf(
    model: ScoreModel,
    *,
    eps: float = 1e-3,
    divergence: Literal["exact", "hutchinson"] = "exact",
    solver: diffrax.AbstractSolver = diffrax.Tsit5(),
    rtol: float = 1e-5,
    atol: float = 1e-5,
    prior: Any = None,
    max_steps: int = 4096,
) -> CNF:
    r"""The probability-flow ODE as an `ndes.CNF` (FFJORD): data at $t = \epsilon$ is CNF
    time 0, the prior at $t = T$ is CNF time $T - \epsilon$, base = `prior` (default the SDE's
    prior). `CNF.log_prob` then gives $\log p_\epsilon(x)$; `CNF.sample_and_log_prob`
    samples with densities.

    **Arguments:**

    - `model`: a `ScoreModel`.
    - `eps`: the smallest diffusion time (the data end of the flow), in $(0, T)$.
    - `divergence`: `"exact"` (`d` JVPs) or `"hutchinson"` (one VJP with a fixed probe).
    - `solver`: an adaptive diffrax solver (default `Tsit5()`).
    - `rtol`, `atol`: the `PIDController`'s tolerances (positive).
    - `prior`: the base distribution; `None` uses the SDE's prior $p_T$.
    - `max_steps`: the solve's step limit.

    **Returns:** an `ndes.CNF`."""
    owner = "probability_flow_cnf"
    model = _check_model(model, owner)
    eps = _check_eps(eps, model, owner)
    field = ProbabilityFlowField(model, offset=eps)
    return CNF(
        field, base=model.sde if prior is None else prior, t1=model.sde.T - eps,
        divergence=divergence, solver=solver, stepsize_controller=_controller(rtol, atol, owner),
        max_steps=max_steps,
    )  # fmt: skip


def probability_flow_log_prob(
    model: ScoreModel,
    x: Float[ArrayLike, "n d"],
    key: PRNGKeyArray | None = None,
    *,
    eps: float = 1e-3,
    divergence: Literal["exact", "hutchinson"] = "exact",
    solver: diffrax.AbstractSolver = diffrax.Tsit5(),
    rtol: float = 1e-5,
    atol: float = 1e-5,
    prior: Any = None,
    regularizers: Sequence = (),
    max_steps: int = 4096,
) -> SamplerOutput:
    r"""The model's log-density $\log p_\epsilon(x)$ (nats) by the instantaneous change of
    variables along the probability-flow ODE from `eps` to $T$:
    $\log p_\epsilon(x) = \log p_T(x_T) + \int_\epsilon^T \nabla\!\cdot\tilde f\,dt$
    (Song et al. 2021, App. D.2), solved as `probability_flow_cnf(...).log_prob`. The
    divergence is `"exact"` (`d` JVPs, default, small `d`) or `"hutchinson"` (one VJP with
    a Gaussian probe drawn from `key` and fixed for the solve). For bits/dim divide by
    $d\log 2$.

    **Arguments:**

    - `model`: a `ScoreModel`.
    - `x`: data `(n, d)` at diffusion time `eps`.
    - `key`: PRNG key for the Hutchinson probe (unused by `"exact"`).
    - `eps`, `divergence`, `solver`, `rtol`, `atol`, `prior`, `max_steps`: as
      `probability_flow_cnf`.
    - `regularizers`: passed to `CNF.log_prob` (each sample's penalty, batch mean).

    **Returns:** a `SamplerOutput` with `samples` = $x_T$ (the latent), `log_prob` `(n,)`,
    `nfe` (augmented-field evaluations, each one score evaluation plus its divergence)."""
    cnf = probability_flow_cnf(
        model, eps=eps, divergence=divergence, solver=solver, rtol=rtol, atol=atol,
        prior=prior, max_steps=max_steps,
    )  # fmt: skip
    out = cnf.log_prob(x, key, regularizers=regularizers)
    return SamplerOutput(
        out.final_state, out.stats["num_fevals"], out.ys, out.penalty, out.penalty_terms,
        out.stats,
    )  # fmt: skip
