r"""DPM-Solver (Lu, Zhou, Bao, Chen, Li, Zhu, "DPM-Solver: a fast ODE solver for diffusion
probabilistic model sampling in around 10 steps", NeurIPS 2022): singlestep DPM-Solver-1/2/3
(Algorithms 1 and 2, noise-prediction form) on steps uniform in the half log-SNR $\lambda$, for
the VP SDE, with a fixed budget of network evaluations. Checked against the authors' reference
code (`LuChengTHU/dpm-solver`, `dpm_solver_pytorch.py`: `dpm_solver_first_update`,
`singlestep_dpm_solver_second_update`, `singlestep_dpm_solver_third_update` with
`solver_type="dpmsolver"`, `get_orders_and_timesteps_for_singlestep_solver`)."""

from __future__ import annotations

import itertools
from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from .._checks import check_int
from ._samplers import SamplerOutput, _batched, _check_eps, _check_model, _initial
from ._score import ScoreModel
from ._sde import VPSDE

__all__ = ["dpm_solver_sample", "dpm_solver_orders"]


def dpm_solver_orders(nfe: int, order: int, schedule: str = "fast") -> list[int]:
    """The order of each step for a budget of `nfe` evaluations.

    `"fast"`: DPM-Solver-fast of Lu et al. 2022 (Sec. 3.4 and their reference code's
    `get_orders_and_timesteps_for_singlestep_solver`): for order 3, `K = nfe // 3 + 1` steps
    ending in `[2, 1]`, `[1]` or `[2]` by `nfe % 3`; for order 2, `[2] * (nfe // 2)` plus a
    final `[1]` when `nfe` is odd; order 1 is `nfe` DDIM steps. `"singlestep"`: `nfe /
    order` steps all of `order` (needs `nfe % order == 0`); `schedule` is one of the two.

    **Returns:** a list of step orders summing to `nfe`."""
    if order not in (1, 2, 3):
        raise ValueError(f"dpm_solver: order={order!r} must be 1, 2 or 3.")
    if schedule == "singlestep":
        if nfe % order:
            raise ValueError(
                f"dpm_solver: schedule='singlestep' needs nfe divisible by order; got "
                f"nfe={nfe}, order={order} (use schedule='fast' for any nfe)."
            )
        return [order] * (nfe // order)
    if schedule != "fast":
        raise ValueError(f"dpm_solver: schedule={schedule!r} must be 'fast' or 'singlestep'.")
    if order == 1:
        return [1] * nfe
    if order == 2:
        return [2] * (nfe // 2) + ([1] if nfe % 2 else [])
    if nfe < 3:
        raise ValueError(f"dpm_solver: order=3 needs nfe >= 3 with schedule='fast'; got {nfe}.")
    k = nfe // 3 + 1
    tail = {0: [2, 1], 1: [1], 2: [2]}[nfe % 3]
    return [3] * (k - len(tail)) + tail


def _dpm_step(noise, sde, x, s, t, order):
    r"""One singlestep DPM-Solver step from `s` to `t` (Lu et al. 2022, eqs. (3.7), Alg. 1
    with $r_1 = 1/2$, Alg. 2 with $r_1 = 1/3$, $r_2 = 2/3$); noise-prediction form."""
    lam_s, lam_t = sde.log_snr(s), sde.log_snr(t)
    h = lam_t - lam_s
    la_s = sde.log_alpha(s)

    def coeffs(u):
        return jnp.exp(sde.log_alpha(u) - la_s), sde.sigma(u)

    e_s = noise(s, x)
    a_t, sig_t = coeffs(t)
    phi_1 = jnp.expm1(h)
    if order == 1:  # DDIM
        return a_t * x - sig_t * phi_1 * e_s
    if order == 2:
        r1 = 0.5
        s1 = sde.inverse_log_snr(lam_s + r1 * h)
        a1, sig1 = coeffs(s1)
        u1 = a1 * x - sig1 * jnp.expm1(r1 * h) * e_s
        e_1 = noise(s1, u1)
        return a_t * x - sig_t * phi_1 * e_s - (0.5 / r1) * sig_t * phi_1 * (e_1 - e_s)
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    s1 = sde.inverse_log_snr(lam_s + r1 * h)
    s2 = sde.inverse_log_snr(lam_s + r2 * h)
    a1, sig1 = coeffs(s1)
    a2, sig2 = coeffs(s2)
    u1 = a1 * x - sig1 * jnp.expm1(r1 * h) * e_s
    d1 = noise(s1, u1) - e_s
    phi_22 = jnp.expm1(r2 * h) / (r2 * h) - 1.0
    u2 = a2 * x - sig2 * jnp.expm1(r2 * h) * e_s - (r2 / r1) * sig2 * phi_22 * d1
    d2 = noise(s2, u2) - e_s
    phi_2 = phi_1 / h - 1.0
    return a_t * x - sig_t * phi_1 * e_s - (1.0 / r2) * sig_t * phi_2 * d2


def dpm_solver_sample(
    model: ScoreModel,
    key: PRNGKeyArray,
    num_samples: int | None = None,
    *,
    nfe: int = 20,
    order: int = 3,
    schedule: Literal["fast", "singlestep"] = "fast",
    eps: float = 1e-3,
    x_T: Float[ArrayLike, "n d"] | None = None,
    dtype=None,
) -> SamplerOutput:
    r"""DPM-Solver (Lu et al. 2022): the probability-flow ODE of a VP SDE solved from $T$ to
    `eps` by the exponential integrator in $\lambda_t = \log(\alpha_t/\sigma_t)$,
    $x_t = \tfrac{\alpha_t}{\alpha_s}x_s - \alpha_t\int_{\lambda_s}^{\lambda_t}
    e^{-\lambda}\hat\varepsilon\,d\lambda$, with singlestep DPM-Solver-1/2/3 steps
    (Algorithms 1-2) on steps uniform in $\lambda$ and exactly `nfe` evaluations of the
    noise predictor, split into steps by `dpm_solver_orders(nfe, order, schedule)`.

    **Arguments:**

    - `model`: a `ScoreModel` over a `VPSDE`.
    - `key`: PRNG key for the prior draws.
    - `num_samples`: how many samples to draw; ignored when `x_T` is given.
    - `nfe`: the exact number of network evaluations (positive int).
    - `order`: the solver's order, 1, 2 or 3.
    - `schedule`: `"fast"` (DPM-Solver-fast's mixed orders) or `"singlestep"`.
    - `eps`: the final diffusion time, in $(0, T)$.
    - `x_T`: optional prior draws `(n, d)`.
    - `dtype`: dtype of the prior draws (default JAX's default float).

    **Returns:** a `SamplerOutput` with `nfe` = `nfe`. VP SDEs only (`VPSDE`)."""
    owner = "dpm_solver_sample"
    model = _check_model(model, owner)
    if not isinstance(model.sde, VPSDE):
        raise ValueError(
            f"{owner}: DPM-Solver needs a VP SDE (VPSDE); got {type(model.sde).__name__}. "
            "Use probability_flow_sample for other SDEs."
        )
    eps = _check_eps(eps, model, owner)
    nfe = check_int(nfe, "nfe", owner)
    orders = dpm_solver_orders(nfe, order, schedule)
    x = _initial(model, key, num_samples, x_T, dtype, owner)
    sde = model.sde
    lams = jnp.linspace(sde.log_snr(sde.T), sde.log_snr(eps), len(orders) + 1, dtype=x.dtype)
    ts = sde.inverse_log_snr(lams)
    ts = ts.at[0].set(sde.T).at[-1].set(eps)
    noise = _batched(model.noise)
    i = 0
    for o, run in itertools.groupby(orders):  # a scan per run of equal orders (fast compiles)
        k = len(list(run))

        def body(x, st, o=o):
            return _dpm_step(noise, sde, x, st[0], st[1], o), None

        x, _ = jax.lax.scan(body, x, (ts[i : i + k], ts[i + 1 : i + k + 1]))
        i += k
    return SamplerOutput(x, jnp.asarray(sum(orders)))
