"""Exact vector-field evaluation counts for diffrax solves.

diffrax reports accepted and rejected steps but not how many times the vector field was
evaluated. The count depends on the solver:

- an explicit Runge--Kutta method with `s` stages evaluates all `s` per attempted step, unless
  it is FSAL ("first same as last"), in which case it evaluates `s - 1` and re-uses the last
  evaluation of the previous *accepted* step -- except on the very first step, after a
  rejected first attempt (the solver state is reverted) and after a jump, when it evaluates
  the first stage as well;
- `ReversibleHeun` evaluates once per attempt plus once when its state is initialised;
- `EulerHeun` evaluates the drift once and the diffusion twice per attempt;
- `HalfSolver(inner)` makes three steps of `inner` per attempt;
- an additive-noise stochastic Runge--Kutta method (`ShARK`, `SRA1`, ...) evaluates the drift
  once per stage it does not skip and the (constant-in-`y`) diffusion twice per attempt, at
  the step's two ends (in one `vmap`), plus once when its state is initialised (diffrax
  checks there that the diffusion does not depend on `y`);
- `PIDController` with `dt0=None` runs an initial-step heuristic that evaluates the vector field
  twice when it receives a plain `ODETerm` (diffrax 0.7 hands it a `WrapTerm`, so in practice
  it returns 0.01 without evaluating; we mirror diffrax's own check).

Rejected attempts must be counted too, but diffrax reverts the solver state on rejection, so
the count is carried in the state of a thin wrapper around the step-size controller, which
diffrax never reverts. The wrapper changes nothing else: same steps, same `ys`.

Counts are per trajectory, as if the trajectory were solved alone. Under `jax.vmap`, diffrax
evaluates a batched FSAL first stage for every trajectory if any one needs it; that extra
work is not attributed to the trajectories that did not need it.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax.numpy as jnp
from diffrax import AbstractAdaptiveStepSizeController, AbstractStepSizeController
from jaxtyping import Array, Bool, Int

__all__ = ["FevalCost", "feval_cost", "make_counting_controller", "CountState"]


class FevalCost(eqx.Module):
    """Per-term vector-field evaluations of one solver (a static description).

    Each field is a tuple with one entry per term (one entry for a single term; one per
    sub-term of a `diffrax.MultiTerm`, e.g. drift and diffusion of an SDE).

    - `per_attempt`: evaluations made by every attempted step, accepted or rejected.
    - `first_stage`: extra evaluations when an FSAL solver must (re-)evaluate its first stage.
    - `at_init`: evaluations made when the solver state is initialised.
    - `heuristic`: evaluations of the initial-step-size heuristic, per call of `solver.func`.
    """

    per_attempt: tuple[int, ...] = eqx.field(static=True)
    first_stage: tuple[int, ...] = eqx.field(static=True)
    at_init: tuple[int, ...] = eqx.field(static=True)
    heuristic: tuple[int, ...] = eqx.field(static=True)

    def scaled(self, attempt: int, first: int) -> "FevalCost":
        return FevalCost(
            per_attempt=tuple(attempt * c for c in self.per_attempt),
            first_stage=tuple(first * c for c in self.first_stage),
            at_init=self.at_init,
            heuristic=self.heuristic,
        )


def _num_terms(terms) -> int:
    if isinstance(terms, diffrax.MultiTerm):
        return len(terms.terms)
    return 1


def _uses_fsal(solver, terms, t0, t1, y0, args) -> bool:
    fsal = solver.tableau.fsal
    return bool(fsal) and not terms.is_vf_expensive(t0, t1, y0, args)


def feval_cost(solver, terms, t0, t1, y0, args) -> FevalCost | None:
    """The evaluation cost model of `solver` on `terms`, or `None` if not known exactly.

    Known exactly: explicit Runge--Kutta methods with a single Butcher tableau (Euler-like
    `Heun`, `Midpoint`, `Ralston`, `Bosh3`, `Tsit5`, `Dopri5`, `Dopri8`, ...), `Euler`,
    `EulerHeun`, `ReversibleHeun`, additive-noise stochastic Runge--Kutta methods (`ShARK`,
    `SRA1`), and `HalfSolver` around any of these.
    """
    n = _num_terms(terms)
    ones = (1,) * n
    zeros = (0,) * n
    if isinstance(solver, diffrax.HalfSolver):
        inner = feval_cost(solver.solver, terms, t0, t1, y0, args)
        if inner is None:
            return None
        # Two half steps and one full step; the first half step and the full step both start
        # from the stored state, so both re-evaluate the first stage when it is pending.
        return inner.scaled(3, 2)
    if isinstance(solver, diffrax.Euler):
        return FevalCost(ones, zeros, zeros, ones)
    if isinstance(solver, diffrax.EulerHeun):
        if n != 2:
            return None
        return FevalCost((1, 2), (0, 0), (0, 0), (1, 1))
    if isinstance(solver, diffrax.ReversibleHeun):
        return FevalCost(ones, zeros, ones, ones)
    if isinstance(solver, diffrax.AbstractSRK) and n == 2:
        tab = solver.tableau
        if not tab.is_additive_noise():
            # General-noise SRKs call the diffusion once per stage and Levy area; whether
            # XLA merges those calls is not ours to promise.
            return None
        skipped = 0 if tab.ignore_stage_f is None else int(sum(tab.ignore_stage_f))
        return FevalCost((len(tab.b_sol) - skipped, 2), (0, 0), (0, 1), (1, 1))
    if isinstance(solver, diffrax.AbstractERK) and isinstance(
        solver.tableau, diffrax.ButcherTableau
    ):
        s = solver.tableau.num_stages
        if _uses_fsal(solver, terms, t0, t1, y0, args):
            return FevalCost((s - 1,) * n, ones, zeros, ones)
        return FevalCost((s,) * n, zeros, zeros, ones)
    return None


def _runs_initial_step_heuristic(controller) -> bool:
    if isinstance(controller, diffrax.ClipStepSizeController):
        controller = controller.controller
    return isinstance(controller, diffrax.PIDController)


class CountState(eqx.Module):
    """Controller state of the counting wrapper: the wrapped state plus the counters."""

    inner: object
    num_fevals: Int[Array, " terms"]
    first_stage_pending: Bool[Array, ""]


class _AbstractCountingController(AbstractStepSizeController):
    controller: eqx.AbstractVar[AbstractStepSizeController]
    cost: eqx.AbstractVar[FevalCost]
    first_stage_pending0: eqx.AbstractVar[Bool[Array, ""]]

    def wrap(self, direction):
        return eqx.tree_at(lambda c: c.controller, self, self.controller.wrap(direction))

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, inner = self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)
        n = jnp.asarray(self.cost.at_init, dtype=jnp.int32)
        if (
            dt0 is None
            and _runs_initial_step_heuristic(self.controller)
            and isinstance(terms, diffrax.ODETerm)
        ):
            n = n + 2 * jnp.asarray(self.cost.heuristic, dtype=jnp.int32)
        return tnext, CountState(inner, n, jnp.asarray(self.first_stage_pending0))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        keep, tprev, tnext, made_jump, inner, result = self.controller.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, state.inner
        )
        attempt = jnp.asarray(self.cost.per_attempt, dtype=jnp.int32)
        first = jnp.asarray(self.cost.first_stage, dtype=jnp.int32)
        num_fevals = state.num_fevals + attempt + jnp.where(state.first_stage_pending, first, 0)
        # Accepted: the next step needs the first stage only after a jump. Rejected: the
        # solver state is reverted, so whatever was pending is still pending.
        pending = jnp.where(keep, made_jump, state.first_stage_pending)
        return keep, tprev, tnext, made_jump, CountState(inner, num_fevals, pending), result


class _CountingController(_AbstractCountingController):
    controller: AbstractStepSizeController
    cost: FevalCost
    first_stage_pending0: Bool[Array, ""]


class _AdaptiveCountingController(_AbstractCountingController, AbstractAdaptiveStepSizeController):
    controller: AbstractAdaptiveStepSizeController
    cost: FevalCost
    first_stage_pending0: Bool[Array, ""]

    # Implicit solvers and events read the tolerances of an adaptive controller.
    @property
    def rtol(self):  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.controller.rtol

    @property
    def atol(self):  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.controller.atol

    @property
    def norm(self):  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.controller.norm


def make_counting_controller(controller, cost: FevalCost, first_stage_pending0):
    """Wrap `controller` so that its state also counts vector-field evaluations."""
    pending = jnp.asarray(first_stage_pending0, dtype=bool)
    if isinstance(controller, AbstractAdaptiveStepSizeController):
        return _AdaptiveCountingController(controller, cost, pending)
    return _CountingController(controller, cost, pending)
