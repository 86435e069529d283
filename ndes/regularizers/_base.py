"""The one regularizer interface.

Every penalty in ndes is an `AbstractRegularizer`. It has a `weight` (a float or a schedule of
the training step), a name, and an optional per-trajectory batch axis; `bind(problem)` is the
one check (it raises `ValueError` naming the fix when the regularizer cannot be used in this
solve, and returns the regularizer ready for it). How a regularizer reaches into the solve is
its *mechanism*, one abstract subclass each (see `docs/architecture.md`):

- `AbstractStepRegularizer` (`_step.py`): a value per accepted solver step, read off the
  solver's own step (`ErrorEstimate`, `StiffnessEstimate`);
- `AbstractLocalRegularizer` (`_local.py`): one step estimate taken on one extra step from a
  sampled time (`LocalErrorEstimate`, `LocalStiffnessEstimate`);
- `AbstractIntegralRegularizer` (`_augment.py`): an integral over the trajectory, integrated
  as extra state (`KineticEnergy`, `JacobianFrobenius`, `TaylorDerivative`).

`AbstractEndTime` is not a penalty: it changes the end time of the solve (`RandomEndTime`).

Classes follow equinox's abstract-or-final pattern: abstract classes declare `AbstractVar`s
and abstract methods, and their concrete methods are never overridden.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree, Real

from .._checks import check_int

__all__ = [
    "AbstractRegularizer",
    "AbstractEndTime",
    "AbstractStepHook",
    "Problem",
    "StepInfo",
    "Aggregate",
    "Weight",
]

Aggregate = Literal["sum", "mean", "max"]
_AGGREGATES = ("sum", "mean", "max")

Weight = float | Callable[[Any], Any]


def check_aggregate(aggregate: str, owner: str) -> None:
    if aggregate not in _AGGREGATES:
        raise ValueError(
            f"{owner}(aggregate={aggregate!r}) is not one of {_AGGREGATES}: choose how the "
            "per-step values combine over the accepted steps."
        )


class Problem(eqx.Module):
    """The solve a regularizer is bound to: the arguments of `ndes.diffeqsolve`.

    `bind(problem)` reads what it needs from here (e.g. `ErrorEstimate` takes its tolerances
    from `stepsize_controller`, `JacobianFrobenius` draws its probe shaped like `y0`).

    **Fields** (each exactly as the user passed it to `ndes.diffeqsolve`, before ndes wraps
    anything; see that function and `diffrax.diffeqsolve` for their meaning):

    - `terms`: the PyTree of `diffrax.AbstractTerm`s (the unaugmented vector field).
    - `solver`: the `diffrax.AbstractSolver` (unwrapped).
    - `t0`, `t1`: start and end time as passed (`t1` is the requested end, not the one a
      `RandomEndTime` samples); `t1 < t0` for a backward solve.
    - `y0`: the initial state PyTree (its leaves' shapes, dtype and batch axis are what
      the checks read).
    - `args`: the extra arguments of the vector field.
    - `saveat`: the `diffrax.SaveAt`.
    - `stepsize_controller`: the `diffrax.AbstractStepSizeController` (`ErrorEstimate` reads
      its default tolerances from an adaptive one such as `diffrax.PIDController`).
    - `adjoint`: the `diffrax.AbstractAdjoint` (penalties refuse
      `diffrax.BacksolveAdjoint`, which cannot differentiate them).
    - `event`: the `diffrax.Event` or `None` (default).
    - `solver_state`, `controller_state`: the states to continue from, or `None` (default).
    """

    terms: PyTree
    solver: Any
    t0: Any
    t1: Any
    y0: PyTree
    args: PyTree
    saveat: Any
    stepsize_controller: Any
    adjoint: Any
    event: Any = None
    solver_state: Any = None
    controller_state: Any = None


class StepInfo(eqx.Module):
    """What one attempted solver step exposes to a per-step regularizer.

    All arrays are those of the solver's own step (diffrax's normalised time direction:
    `t1 >= t0`). `dense_info` is the solver's dense output (for Runge--Kutta methods
    `dense_info["k"]` holds the stage increments `h * f_i`, stacked along axis 0).

    **Fields** (the arguments and outputs of one call of `solver.step`):

    - `terms`: the terms the solver steps (diffrax's, which for a backward solve are
      wrapped to run forward in the normalised time).
    - `solver`: the user's solver (without ndes's wrapper).
    - `t0`, `t1`: scalar start and end of the attempted step, `t1 >= t0`; the step size is
      `t1 - t0` (in the units of `t`).
    - `y0`, `y1`: the state at the start of the step and the solver's proposal at its end,
      PyTrees shaped like the user's `y0` (in an augmented solve, the user's part only).
    - `y_error`: the solver's embedded local error estimate, shaped like `y0`, or `None`
      for a solver without one.
    - `dense_info`: dict of the solver's dense-output arrays (see above).
    - `args`: the extra arguments of the vector field.
    """

    terms: PyTree
    solver: Any
    t0: Real[Array, ""]
    t1: Real[Array, ""]
    y0: PyTree[Array]
    y1: PyTree[Array]
    y_error: PyTree[Array] | None
    dense_info: dict[str, PyTree[Array]]
    args: PyTree


class AbstractRegularizer(eqx.Module):
    """A penalty that makes a learned differential equation cheaper to solve.

    **Fields every regularizer declares:**

    - `weight`: a finite non-negative number or a schedule (any callable of the training
      step, such as an `optax` schedule), resolved by `resolve_weight`. Anything else (a
      negative, infinite or NaN number, a string, an array of more than one element) raises
      `ValueError` at construction; a schedule's value is checked when the solve runs
      (`eqx.error_if`: negative or non-finite raises).
    - `batch_axis`, `batch_size` (static; both `None` by default in the concrete classes):
      `batch_axis=None` treats the state as one trajectory. When the state is a batch of
      trajectories solved jointly as one state, `batch_axis` (a non-negative int) is the
      axis of every state leaf that indexes the trajectories, and the value is the mean
      over trajectories of the per-trajectory value. `batch_size` (an int >= 1, only with
      `batch_axis`) is the number of trajectories along it, checked against the state;
      `None` reads it off the state (a per-step `aggregate="max"` needs it given).
      `per_trajectory(batch_size)` sets them (the models call it).

    **Method every regularizer implements:** `bind(problem) -> regularizer`, the one check.

    A concrete regularizer subclasses one of the mechanisms (`AbstractStepRegularizer`,
    `AbstractLocalRegularizer`, `AbstractIntegralRegularizer`), not this class directly.
    """

    weight: eqx.AbstractVar[Weight]
    batch_axis: eqx.AbstractVar[int | None]
    batch_size: eqx.AbstractVar[int | None]

    def __check_init__(self):
        self.check_weight()
        self._check_batch_fields()

    @abc.abstractmethod
    def bind(self, problem: Problem) -> "AbstractRegularizer":
        """Raise `ValueError` (naming the fix) if this regularizer cannot be used in
        `problem`; otherwise return it ready for the solve (tolerances taken from the
        controller, random probes drawn, ...; often `self`)."""

    @property
    def name(self) -> str:
        """The key of this regularizer's value in `Solution.penalty_terms`."""
        return type(self).__name__

    def per_trajectory(self, batch_size: int | None) -> "AbstractRegularizer":
        """A copy that computes the per-trajectory mean over a joint batch of `batch_size`
        trajectories along axis 0 (`batch_size=None`: a single trajectory)."""
        if batch_size is None:
            if self.batch_axis is None:
                return self
            return dataclasses.replace(self, batch_axis=None, batch_size=None)
        return dataclasses.replace(self, batch_axis=0, batch_size=batch_size)

    def resolve_weight(self, train_step: ArrayLike | None) -> Float[Array, ""]:
        """The weight at `train_step` (required when the weight is a schedule).

        A schedule's value, and a weight that was traced when the regularizer was built, are
        checked at run time (`eqx.error_if`): a negative or non-finite weight raises an
        error instead of silently giving a negative, infinite or NaN penalty.
        """
        if callable(self.weight):
            if train_step is None:
                raise ValueError(
                    f"{self.name}.weight is a schedule, so ndes.diffeqsolve needs "
                    "`train_step=` (the optimiser step count) to evaluate it."
                )
            w = jnp.asarray(self.weight(train_step))
            return _checked_weight(
                w,
                f"{self.name}.weight (a schedule)'s value",
                f"{self.name}.weight (a schedule) returned a negative or non-finite (NaN/inf) "
                "value at this train_step; the schedule must return finite values >= 0.",
            )
        w = jnp.asarray(self.weight)
        if isinstance(self.weight, jax.core.Tracer):
            return _checked_weight(
                w, f"{self.name}.weight", f"{self.name}.weight is negative or non-finite (NaN/inf)."
            )
        return w

    def check_weight(self) -> None:
        """Raise `ValueError` unless the weight is a finite non-negative real number, a
        schedule (a callable of the training step), or traced (checked when resolved)."""
        w = self.weight
        if callable(w) or isinstance(w, jax.core.Tracer):
            return
        if _is_real_scalar(w):
            value = float(w)
            if math.isfinite(value) and value >= 0:
                return
        raise ValueError(
            f"{self.name}(weight={w!r}) must be a finite non-negative number (e.g. 1e-2) or "
            "a schedule (a callable of the training step, e.g. optax.constant_schedule(1e-2))."
        )

    def _check_batch_fields(self) -> None:
        owner, ax, size = self.name, self.batch_axis, self.batch_size
        if ax is not None and (not isinstance(ax, int) or isinstance(ax, bool) or ax < 0):
            raise ValueError(
                f"{owner}(batch_axis={ax!r}) must be None or a non-negative int: the axis of "
                "every state leaf that indexes the trajectories of a joint solve (count from "
                "the front of each state leaf)."
            )
        if size is not None and ax is None:
            raise ValueError(
                f"{owner}(batch_size={size}) is only meaningful with batch_axis=...; "
                "pass batch_axis=0 for a (batch, ...) joint state or drop batch_size."
            )
        if size is not None:
            check_int(size, "batch_size", owner, hint=" (the number of trajectories)")

    def check_batched_state(self, y: PyTree[Array]) -> None:
        """Static check that every leaf of `y` has the batch along `batch_axis`."""
        for leaf in jtu.tree_leaves(y):
            if jnp.ndim(leaf) <= self.batch_axis:
                raise ValueError(
                    f"{self.name}(batch_axis={self.batch_axis}) got a state leaf of shape "
                    f"{jnp.shape(leaf)} with no such axis; use batch_axis=None for a single "
                    "trajectory."
                )
            if self.batch_size is not None and jnp.shape(leaf)[self.batch_axis] != self.batch_size:
                raise ValueError(
                    f"{self.name}(batch_size={self.batch_size}) does not match the state leaf "
                    f"of shape {jnp.shape(leaf)} along batch_axis={self.batch_axis}."
                )

    def batch_count(self, y: PyTree[Array]) -> int:
        """Number of trajectories in `y` along `batch_axis` (1 without a batch axis)."""
        if self.batch_axis is None:
            return 1
        self.check_batched_state(y)
        sizes = {jnp.shape(leaf)[self.batch_axis] for leaf in jtu.tree_leaves(y)}
        if len(sizes) != 1:
            raise ValueError(
                f"{self.name}(batch_axis={self.batch_axis}): state leaves disagree on the "
                f"batch size ({sorted(sizes)})."
            )
        return sizes.pop()


class AbstractEndTime(eqx.Module):
    """Changes the end time of the solve and adds no penalty (e.g. `RandomEndTime`).

    Passed in `regularizers=` like a penalty, but outside the penalty hierarchy: it has no
    weight and no entry in `Solution.penalty_terms`. At most one per solve.
    """

    @abc.abstractmethod
    def bind(self, problem: Problem) -> "AbstractEndTime":
        """Raise `ValueError` (naming the fix) if the end time cannot be changed in
        `problem`; otherwise return `self` ready for the solve."""

    @abc.abstractmethod
    def end_time(self, t0: ArrayLike, t1: ArrayLike) -> Float[Array, ""]:
        """The end time to solve to instead of `t1`."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def per_trajectory(self, batch_size: int | None) -> "AbstractEndTime":
        """`self`: a joint batch shares one end time, as it shares its steps."""
        return self


class AbstractStepHook(eqx.Module):
    """Anything `RegularizedSolver` calls after every attempted step.

    `init(dtype)` makes an accumulator (a PyTree of arrays), `update(acc, info)` returns the
    next one from a `StepInfo`, `finalize(acc)` reads the result off the final accumulator.
    The accumulator lives in the solver state, so diffrax keeps an update only when the step
    is accepted. Step regularizers are hooks; so is the sampler of the local regularizers,
    which records the state at the sampled time.
    """

    @abc.abstractmethod
    def init(self, dtype) -> PyTree[Array]:
        """The accumulator before the first step."""

    @abc.abstractmethod
    def update(self, acc: PyTree[Array], info: StepInfo) -> PyTree[Array]:
        """The accumulator after one attempted step (kept only if the step is accepted)."""

    @abc.abstractmethod
    def finalize(self, acc: PyTree[Array]) -> PyTree[Array]:
        """The result, from the final accumulator."""


def _is_real_scalar(w) -> bool:
    """A real number or a 0-d real (bool excluded) NumPy / JAX array."""
    if isinstance(w, bool | np.bool_):
        return False
    if isinstance(w, numbers.Real):
        return True
    if isinstance(w, np.ndarray | jax.Array) and np.shape(w) == ():
        dtype = np.dtype(w.dtype)
        return np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    return False


def _checked_weight(w: Array, owner: str, message: str) -> Array:
    """`w`, checked to be a scalar (statically) and finite and non-negative (at run time)."""
    if jnp.ndim(w) != 0:
        raise ValueError(f"{owner} must be a scalar; got shape {jnp.shape(w)}.")
    return eqx.error_if(w, ~(jnp.isfinite(w) & (w >= 0)), message)
