"""StiffnessEstimate: the global stiffness regularizer (Pal et al. 2021, "SRNODE")."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Float

from ._base import Aggregate, Problem, StepInfo, Weight
from ._numerics import safe_div, safe_two_norm
from ._step import AbstractStepRegularizer

__all__ = ["StiffnessEstimate", "supports_stiffness_estimate"]

_SUPPORTED = "diffrax.Tsit5, diffrax.Dopri5, diffrax.Dopri8"


def supports_stiffness_estimate(solver) -> bool:
    """Whether `solver`'s tableau yields Shampine's stiffness estimate for free.

    That needs an explicit FSAL Runge--Kutta method whose last two stages are both taken
    at `t + h` (so that their difference isolates the Jacobian): Tsit5, Dopri5 and Dopri8.
    """
    if not isinstance(solver, diffrax.AbstractERK):
        return False
    tab = solver.tableau
    if not isinstance(tab, diffrax.ButcherTableau) or not (tab.fsal and tab.ssal):
        return False
    # tab.c holds the nodes of stages 1..s-1 (stage 0 is at t0).
    return len(tab.c) >= 2 and float(tab.c[-1]) == 1.0 and float(tab.c[-2]) == 1.0


class StiffnessEstimate(AbstractStepRegularizer):
    r"""Penalise Shampine's estimate of the dominant eigenvalue of the Jacobian.

    For an FSAL Runge--Kutta step from $t$ to $t + h$ whose last two stages are both taken at
    $t + h$ -- stage $s-1$ at the point $g = y_t + \sum_i a_{s-1,i} k_i$ and stage $s$ at
    $y_{t+h}$ -- the quotient

    $$\hat\lambda = \frac{\lVert f(t+h, y_{t+h}) - f(t+h, g)\rVert}{\lVert y_{t+h} - g\rVert}$$

    estimates the dominant $|\text{eigenvalue}|$ of $\partial f/\partial y$ along the step,
    at no extra cost (Shampine 1977; used by OrdinaryDiffEq.jl's stiffness detection).
    diffrax stores $k_i = h f_i$, so $\hat\lambda |h| = \lVert k_s - k_{s-1}\rVert /
    \lVert y_{t+h} - g\rVert$. The per-step value is $\hat\lambda_j |h_j|$
    (dimensionless; the quantity Pal's reference code saves, `integrator.eigen_est *
    integrator.dt`). When $y_{t+h} = g$ (no information, e.g. a zero-length step) it is 0.

    The penalty is, by default (`aggregate="sum"`), the paper's *total stiffness*

    $$R_S = \sum_j \hat\lambda_j |h_j| \approx \int_{t_0}^{t_1} \lambda(t)\,dt,$$

    which grows linearly with the stiffness. `"max"` (the largest per-step value) and
    `"mean"` are offered too, but do not grow with it: an explicit solver's accepted steps
    keep $\hat\lambda |h|$ of the order of its stability bound (Tsit5's real stability
    interval is about 3.5 long), so the maximum saturates however stiff the problem is.
    Gradients flow through the accepted steps with step sizes held constant.

    Supported solvers: Tsit5, Dopri5, Dopri8; others raise `ValueError`.

    **Arguments:**

    - `weight`: a finite non-negative number or a schedule (callable of the training step).
    - `aggregate`: `"sum"` (default, the total stiffness $R_S$), `"mean"` or `"max"` over
      the accepted steps.
    - `batch_axis`, `batch_size`: for a batch of trajectories solved jointly as one state
      (every leaf has the batch along `batch_axis`), estimate $\hat\lambda$ per trajectory
      from its own slice, aggregate over steps per trajectory, and average over the batch
      (`batch_size` is required with `aggregate="max"`). `NeuralODE(batch_mode="joint")`
      sets both automatically. With a shared step sequence (e.g. `ConstantStepSize`) this
      equals the batch mean of separate per-sample solves; under an adaptive controller the
      joint solve's steps are driven by the whole batch, so values differ.

    **Reference:** Pal, Ma, Shah, Rackauckas, "Opening the Blackbox: Accelerating Neural
    Differential Equations by Regularizing Internal Solver Heuristics", ICML 2021 (and
    the corresponding chapter of Pal's thesis, which calls $R_S$ the total stiffness);
    Shampine, "Stiffness and nonstiff differential equation solvers, II", 1977.
    """

    weight: Weight = 1.0
    aggregate: Aggregate = eqx.field(default="sum", static=True)
    batch_axis: int | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)

    def bind(self, problem: Problem) -> "StiffnessEstimate":
        solver = problem.solver
        if not supports_stiffness_estimate(solver):
            raise ValueError(
                f"StiffnessEstimate cannot be computed from {type(solver).__name__}: it "
                "needs an explicit FSAL Runge-Kutta solver whose last two stages are both "
                f"at t+h. Use one of {_SUPPORTED}."
            )
        return self

    def step_value(self, info: StepInfo) -> Float[Array, ""]:
        return stiffness_times_step(info.solver, info.y0, info.y1, info.dense_info["k"])


def stiffness_times_step(solver, y0, y1, ks) -> Float[Array, ""]:
    """`lambda_hat * |h|` of one step from its stage increments `ks` (axis 0: stages)."""
    tab = solver.tableau
    a_pen = np.asarray(tab.a_lower[-2])  # coefficients of stage s-1 on stages 0..s-3

    def _g(_y0, _k):
        coeffs = jnp.asarray(a_pen, dtype=_k.dtype)
        return _y0 + jnp.tensordot(coeffs, _k[: len(a_pen)], axes=1)

    g = jtu.tree_map(_g, y0, ks)
    num = safe_two_norm(jtu.tree_map(lambda k: k[-1] - k[-2], ks))
    den = safe_two_norm(jtu.tree_map(lambda a, b: a - b, y1, g))
    return safe_div(num, den)
