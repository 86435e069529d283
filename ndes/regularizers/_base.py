"""Base classes of the regularization layer.

A regularizer contributes one differentiable scalar to `Solution.penalty` and reports its
unweighted value in `Solution.penalty_terms`. This module defines the shared parts: the
weight (a float or an optax schedule of the training step) and the per-step protocol used
by the global solver-heuristic regularizers.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
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

    Every regularizer has a `weight`: either a number or a schedule (any callable of the
    training step, such as an `optax` schedule), resolved by `resolve_weight`.
    """

    weight: eqx.AbstractVar[Weight]

    @property
    def name(self) -> str:
        return type(self).__name__

    def resolve_weight(self, train_step: ArrayLike | None) -> Float[Array, ""]:
        """The weight at `train_step` (required when the weight is a schedule)."""
        if callable(self.weight):
            if train_step is None:
                raise ValueError(
                    f"{self.name}.weight is a schedule, so ndes.diffeqsolve needs "
                    "`train_step=` (the optimiser step count) to evaluate it."
                )
            return jnp.asarray(self.weight(train_step))
        return jnp.asarray(self.weight)

    def check_weight(self) -> None:
        if not callable(self.weight):
            try:
                w = float(self.weight)
            except TypeError:
                return  # a traced weight: accepted as is
            if not w >= 0:
                raise ValueError(
                    f"{self.name}(weight={self.weight!r}) must be a non-negative number or "
                    "a schedule (a callable of the training step)."
                )


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
