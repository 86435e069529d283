"""The step mechanism: a value per accepted solver step, accumulated in the solver state."""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float

from ._base import AbstractRegularizer, AbstractStepHook, Aggregate, StepInfo, check_aggregate

__all__ = ["AbstractStepRegularizer"]


class AbstractStepRegularizer(AbstractRegularizer, AbstractStepHook):
    """A regularizer accumulated over the accepted steps of the solve itself.

    A subclass gives `step_value(info)`: the (non-negative, finite) value of one step of
    **one** trajectory, from what the solver computed anyway (`StepInfo`: the step's ends,
    states, error estimate and dense output). Everything else is done here, once:

    - `RegularizedSolver` calls `update` after every attempted step and stores the result in
      the solver state; diffrax keeps the new solver state only when the step is accepted,
      so rejected attempts contribute nothing. No extra vector-field evaluations are made.
    - The per-step values are combined by `aggregate` (`"sum"`, `"mean"` or `"max"` over the
      accepted steps).
    - With `batch_axis` set (a joint batch solve), `step_value` is `jax.vmap`-ed over the
      trajectories: every state leaf and every `dense_info` entry is split along the batch
      axis (shifted by any leading axes a dense entry has beyond the state's, e.g. the stage
      axis of `dense_info["k"]`). Values are aggregated per trajectory and averaged over the
      batch (`batch_size` is needed for `"max"`, which keeps a running maximum per
      trajectory; for `"sum"`/`"mean"` the batch mean commutes with the step sum).

    The same `step_value` also serves the local mechanism (`AbstractLocalRegularizer`), on
    one extra step from a sampled time.

    **Fields a subclass declares:** `weight`, `batch_axis`, `batch_size` as in
    `AbstractRegularizer` (here `batch_size` is required with `batch_axis` when
    `aggregate="max"`); `aggregate` (static): `"sum"`, `"mean"` or `"max"` of the per-step
    values over the accepted steps (`ndes.ErrorEstimate` and `ndes.StiffnessEstimate`
    default to `"sum"`, as Pal et al. 2021).
    """

    aggregate: eqx.AbstractVar[Aggregate]

    def __check_init__(self):
        check_aggregate(self.aggregate, self.name)
        if self.batch_axis is not None and self.aggregate == "max" and self.batch_size is None:
            raise ValueError(
                f"{self.name}(aggregate='max', batch_axis={self.batch_axis}) needs batch_size= "
                "(the number of trajectories): the running maximum is kept per trajectory. "
                "The models (NeuralODE/NeuralCDE in joint mode) set it automatically."
            )

    @abc.abstractmethod
    def step_value(self, info: StepInfo) -> Float[Array, ""]:
        """The (non-negative, finite) contribution of one step of one trajectory."""

    def trajectory_values(self, info: StepInfo) -> Float[Array, "*batch"]:
        """`step_value` of every trajectory: a scalar, or shape `(batch,)` with `batch_axis`."""
        if self.batch_axis is None:
            return self.step_value(info)
        self.check_batched_state(info.y0)
        ax = self.batch_axis

        def one(y0, y1, y_error, dense_info):
            return self.step_value(
                StepInfo(
                    info.terms,
                    info.solver,
                    info.t0,
                    info.t1,
                    y0,
                    y1,
                    y_error,
                    dense_info,
                    info.args,
                )
            )

        dense_axes = {k: self._dense_axes(k, v, info.y0) for k, v in info.dense_info.items()}
        return jax.vmap(one, in_axes=(ax, ax, ax, dense_axes))(
            info.y0, info.y1, info.y_error, info.dense_info
        )

    def _dense_axes(self, name, entry, y0):
        try:
            return jtu.tree_map(lambda d, y: self.batch_axis + jnp.ndim(d) - jnp.ndim(y), entry, y0)
        except ValueError:
            raise ValueError(
                f"{self.name}(batch_axis={self.batch_axis}): the solver's dense_info[{name!r}] "
                "is not shaped like the state, so it cannot be split per trajectory; use "
                "batch_axis=None (solve each trajectory separately, e.g. under jax.vmap)."
            ) from None

    def init(self, dtype) -> tuple[Array, Array]:
        """Accumulator: (aggregate so far, per trajectory when `batch_size` is known; number
        of accepted steps)."""
        shape = () if self.batch_size is None else (self.batch_size,)
        return jnp.zeros(shape, dtype), jnp.zeros((), dtype)

    def update(self, acc, info: StepInfo):
        value, count = acc
        v = self.trajectory_values(info).astype(value.dtype)  # () or (batch,)
        if jnp.ndim(v) == 1 and jnp.ndim(value) == 0:
            # Batch size unknown (sum/mean only): the batch mean commutes with the step sum.
            v = jnp.mean(v)
        if self.aggregate == "max":
            value = jnp.maximum(value, v)
        else:
            value = value + v
        return value, count + 1

    def finalize(self, acc) -> Float[Array, ""]:
        value, count = acc
        if self.aggregate == "mean":
            value = value / jnp.maximum(count, 1)
        return jnp.mean(value) if jnp.ndim(value) else value
