"""ErrorEstimate: the global local-error regularizer (Pal et al. 2021, "ERNODE")."""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx
from jaxtyping import Array, Float, PyTree

from ._base import Aggregate, Problem, StepInfo, Weight
from ._numerics import finite_or_zero
from ._step import AbstractStepRegularizer

__all__ = ["ErrorEstimate"]


def returns_error_estimate(solver) -> bool:
    """Whether `solver.step` returns a local error estimate: embedded (adaptive) methods,
    `HalfSolver`, and stochastic Runge--Kutta methods with an error tableau (`diffrax.ShARK`
    and `diffrax.SRA1` for additive noise, whose estimate sees the drift stages only;
    `diffrax.SPaRK` for general noise)."""
    if isinstance(solver, diffrax.AbstractAdaptiveSolver):
        return True
    return isinstance(solver, diffrax.AbstractSRK) and solver.tableau.b_error is not None


class ErrorEstimate(AbstractStepRegularizer):
    r"""Penalise the adaptive solver's own local error estimates.

    For every accepted step $j$ from $t_j$ to $t_j + h_j$ with embedded error estimate
    $e_j$ (diffrax's `y_error`), the normalised error is the step-size controller's own
    measure

    $$E_j = \operatorname{norm}\Big(\frac{e_j}{\mathrm{atol} + \mathrm{rtol}\cdot
    \max(|y_j|, |y_{j+1}|)}\Big)$$

    (`norm` is the controller's, by default the RMS norm), and the penalty is
    $R_E = \sum_j E_j |h_j|$ (`aggregate="sum"`, the paper's choice; `"mean"` and `"max"`
    are offered too). It costs no extra vector-field evaluations: the estimate is computed
    by the solver anyway. Rejected attempts contribute nothing.

    Gradients flow through the accepted steps with the step sizes treated as constants
    (diffrax's controller stops gradients through them), as in the paper.

    **The error scale.** By default the scale $\mathrm{atol} + \mathrm{rtol}\max(|y_j|,
    |y_{j+1}|)$ is treated as a constant (`differentiate_scale=False`). Pal's reference code
    (LocalRegNeuralDE.jl, `_calculate_residuals`) differentiates through it; then the
    gradient also pushes the state's magnitude *up*, since a larger state enlarges the
    tolerance and shrinks $E_j$ without making the dynamics any cheaper per unit of
    accuracy. With the scale held constant the penalty is positively homogeneous of degree 1
    in the error and gives no such incentive. Set `differentiate_scale=True` to reproduce
    the reference implementation.

    Works with every solver that returns an error estimate (`y_error`): adaptive ODE solvers
    (`Tsit5`, `Dopri5`, `Heun`, ...) and SDE solvers such as `Heun` / `SPaRK` /
    `HalfSolver(...)` under an adaptive controller. Solvers without one (e.g. `Euler`)
    raise a `ValueError` suggesting `diffrax.HalfSolver`.

    **Arguments:**

    - `weight`: a finite non-negative number or a schedule (callable of the training step).
    - `rtol`, `atol`, `norm`: the tolerances defining $E_j$. `None` (the default) takes them
      from the adaptive step-size controller; they are required with a constant step size.
    - `aggregate`: `"sum"` (default), `"mean"` or `"max"` over the accepted steps.
    - `differentiate_scale`: see above.
    - `batch_axis`: `None` (default) treats the state as one trajectory. When the state is
      a *batch of trajectories solved jointly* (every leaf has the batch along this axis,
      as in `NeuralODE(batch_mode="joint")`, which sets it automatically), $E_j$ is taken
      per trajectory (the norm over each trajectory's slice), aggregated over steps per
      trajectory, and averaged over the batch. With a step sequence shared by all
      trajectories (e.g. `ConstantStepSize`) this equals the batch mean of the per-sample
      penalties of separate solves. Under an adaptive controller a joint solve shares its
      steps, chosen from the whole batch's error, so the values differ from separate solves.
    - `batch_size`: the number of trajectories along `batch_axis`; needed only with
      `aggregate="max"` (the running maximum is kept per trajectory).

    **Reference:** Pal, Ma, Shah, Rackauckas, "Opening the Blackbox: Accelerating Neural
    Differential Equations by Regularizing Internal Solver Heuristics", ICML 2021.
    """

    weight: Weight = 1.0
    rtol: float | None = None
    atol: float | None = None
    norm: Callable[[PyTree], Float[Array, ""]] | None = eqx.field(default=None, static=True)
    aggregate: Aggregate = eqx.field(default="sum", static=True)
    differentiate_scale: bool = eqx.field(default=False, static=True)
    batch_axis: int | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)

    def bind(self, problem: Problem) -> "ErrorEstimate":
        solver, stepsize_controller = problem.solver, problem.stepsize_controller
        if not returns_error_estimate(solver):
            raise ValueError(
                f"ErrorEstimate needs a solver that returns an error estimate, but "
                f"{type(solver).__name__} does not. Use an embedded method (e.g. "
                "diffrax.Tsit5(), diffrax.Heun()) or wrap this one: "
                f"diffrax.HalfSolver(diffrax.{type(solver).__name__}())."
            )
        if (self.rtol is None or self.atol is None) and not isinstance(
            stepsize_controller, diffrax.AbstractAdaptiveStepSizeController
        ):
            raise ValueError(
                "ErrorEstimate takes its tolerances from an adaptive step-size controller, "
                f"but the controller is {type(stepsize_controller).__name__}. Pass them "
                "explicitly, e.g. ErrorEstimate(weight, rtol=1e-3, atol=1e-6). Note that "
                "with fixed steps the penalty cannot change the number of steps (it only "
                "smooths the dynamics); to cut the NFE, solve adaptively, e.g. "
                "solver=diffrax.Tsit5(), stepsize_controller=diffrax.PIDController(rtol=1e-3, "
                "atol=1e-6) (the default of NeuralCDE and the stable SDEs is fixed)."
            )
        rtol, atol, norm = self.rtol, self.atol, self.norm
        if isinstance(stepsize_controller, diffrax.AbstractAdaptiveStepSizeController):
            rtol = stepsize_controller.rtol if rtol is None else rtol
            atol = stepsize_controller.atol if atol is None else atol
            norm = stepsize_controller.norm if norm is None else norm
        norm = optx.rms_norm if norm is None else norm
        return ErrorEstimate(
            weight=self.weight,
            rtol=rtol,
            atol=atol,
            norm=norm,
            aggregate=self.aggregate,
            differentiate_scale=self.differentiate_scale,
            batch_axis=self.batch_axis,
            batch_size=self.batch_size,
        )

    def step_value(self, info: StepInfo) -> Float[Array, ""]:
        if info.y_error is None:
            raise ValueError(
                f"ErrorEstimate: {type(info.solver).__name__} returned no error estimate "
                "for this problem; use a solver with an embedded error estimate or "
                "diffrax.HalfSolver."
            )
        norm = optx.rms_norm if self.norm is None else self.norm
        err = normalised_error(
            info.y0, info.y1, info.y_error, self.rtol, self.atol, norm, self.differentiate_scale
        )
        return err * jnp.abs(info.t1 - info.t0)


def normalised_error(y0, y1, y_error, rtol, atol, norm, differentiate_scale: bool):
    """The controller's normalised error `norm(y_error / (atol + rtol max(|y0|, |y1|)))`.

    Non-finite entries (a failed step, which the controller rejects anyway) count as 0.
    """

    def _scaled(_y0, _y1, _e):
        scale = atol + rtol * jnp.maximum(jnp.abs(_y0), jnp.abs(_y1))
        if not differentiate_scale:
            scale = jax.lax.stop_gradient(scale)
        return _e / scale

    ratio = finite_or_zero(jtu.tree_map(_scaled, y0, y1, y_error))
    return norm(ratio)
