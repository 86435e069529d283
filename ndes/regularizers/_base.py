"""Base classes of the regularization layer.

A regularizer contributes one differentiable scalar to `Solution.penalty` and reports its
unweighted value in `Solution.penalty_terms`. This module defines the shared parts: the
weight (a float or an optax schedule of the training step) and the per-step protocol used
by the global solver-heuristic regularizers.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree, Real

__all__ = [
    "AbstractRegularizer",
    "AbstractStepHook",
    "AbstractStepRegularizer",
    "StepInfo",
    "Aggregate",
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


class AbstractRegularizer(eqx.Module):
    """A penalty that makes a learned differential equation cheaper to solve.

    Every regularizer has a `weight`: either a finite non-negative number or a schedule (any
    callable of the training step, such as an `optax` schedule), resolved by
    `resolve_weight`. Anything else (a negative, infinite or NaN number, a string, an array
    of more than one element) raises `ValueError` at construction; a schedule's value is
    checked when the solve runs (`eqx.error_if`: negative or non-finite raises).
    """

    weight: eqx.AbstractVar[Weight]

    @property
    def name(self) -> str:
        return type(self).__name__

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


class StepInfo(eqx.Module):
    """What one attempted solver step exposes to a per-step regularizer.

    All arrays are those of the solver's own step (diffrax's normalised time direction:
    `t1 >= t0`). `dense_info` is the solver's dense output (for Runge--Kutta methods
    `dense_info["k"]` holds the stage increments `h * f_i`, stacked along axis 0).
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


class AbstractStepHook(eqx.Module):
    """Anything `RegularizedSolver` calls after every attempted step.

    `init(dtype)` makes an accumulator (a PyTree of arrays), `update(acc, info)` returns the
    next one from a `StepInfo`, `finalize(acc)` reads the result off the final accumulator.
    The accumulator lives in the solver state, so diffrax keeps an update only when the step
    is accepted. Per-step regularizers are hooks; so is the sampler of the local
    regularizers, which records the state at the sampled time.
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


class AbstractStepRegularizer(AbstractRegularizer, AbstractStepHook):
    """A regularizer accumulated over the accepted steps of the solve itself.

    `RegularizedSolver` calls `update` after every attempted step and stores the result in
    the solver state; diffrax keeps the new solver state only when the step is accepted, so
    rejected attempts contribute nothing. No extra vector-field evaluations are made.
    """

    aggregate: eqx.AbstractVar[Aggregate]

    @abc.abstractmethod
    def check(self, solver, terms, stepsize_controller) -> None:
        """Raise `ValueError` if this regularizer cannot be computed with `solver`."""

    @abc.abstractmethod
    def bind(self, stepsize_controller) -> "AbstractStepRegularizer":
        """Return a copy with anything taken from the controller (e.g. tolerances) filled in."""

    @abc.abstractmethod
    def step_value(self, info: StepInfo) -> Float[Array, ""]:
        """The (non-negative, finite) contribution of one step."""

    def init(self, dtype) -> tuple[Float[Array, ""], Float[Array, ""]]:
        """Accumulator: (aggregate so far, number of accepted steps)."""
        return jnp.zeros((), dtype), jnp.zeros((), dtype)

    def update(self, acc, info: StepInfo):
        value, count = acc
        v = self.step_value(info).astype(value.dtype)
        if self.aggregate == "max":
            value = jnp.maximum(value, v)
        else:
            value = value + v
        return value, count + 1

    def finalize(self, acc) -> Float[Array, ""]:
        value, count = acc
        if self.aggregate == "mean":
            return value / jnp.maximum(count, 1)
        return value
