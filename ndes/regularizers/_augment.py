"""State augmentation shared by the integral regularizers (KineticEnergy, JacobianFrobenius,
TaylorDerivative).

An integral regularizer penalises $\\int_{t_0}^{t_1} r(t, y(t))\\,dt$. Following Finlay et al.
2020, the integral is computed by the solver itself: the state becomes `(y, (a_1, ..., a_m))`
with $\\dot a_i = \\sigma\\, r_i(t, y)$, $\\sigma = \\operatorname{sign}(t_1 - t_0)$ and
$a_i(t_0) = 0$, so every accepted step integrates the penalty with the solver's own quadrature.
The sign makes the penalty $\\int r\\,|dt|$: a backward solve ($t_1 < t_0$) gives the same
non-negative value as its forward mirror, instead of a negative "penalty" that minimisation
would *increase*. Three things keep this invisible to the user:

- **Step-size control.** The adaptive controller is given a norm that reads only the `y` part
  of the (scaled) error, so the accepted/rejected step sequence is that of the unaugmented
  solve and `y` is computed by exactly the same operations.
- **Saving.** Every user `SubSaveAt` gets its `fn` composed with the projection onto `y`, and one
  more `SubSaveAt(t1=True)` saves the accumulators; dense output is wrapped so that
  `evaluate` / `derivative` return `y` only.
- **Per-step hooks** (e.g. `ErrorEstimate`, the local samplers) see a `StepInfo` projected onto
  `y`, so they compute the same values as without augmentation.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float, PyTree

from ._base import AbstractRegularizer, AbstractStepHook, StepInfo

__all__ = ["AbstractIntegralRegularizer", "Augmentation"]


def sum_squares(tree: PyTree[Array]) -> Float[Array, ""]:
    return sum((jnp.sum(jnp.square(x)) for x in jtu.tree_leaves(tree)), jnp.zeros(()))


class AbstractIntegralRegularizer(AbstractRegularizer):
    """A penalty $\\int_{t_0}^{t_1} r(t, y(t))\\,dt$ integrated as extra state.

    A subclass gives the integrand `rate` ($r \\ge 0$) and declares `needs_vjp` (a class
    variable: whether `rate` needs the vector-Jacobian product of the vector field). The
    integral is over $|dt|$: a backward solve ($t_1 < t_0$) gives the same non-negative value
    as its forward mirror. When the state is a batch of trajectories solved jointly
    (`batch_axis` set), `rate` must be the batch *sum*; it is divided by the batch size
    here, so that the penalty is the per-trajectory mean. (Unlike a step value, `rate` is not
    vmapped per trajectory: the vector field and its VJP are evaluated on the whole batch.)

    **Fields a subclass declares:** `weight`, `batch_axis`, `batch_size` as in
    `AbstractRegularizer` (`batch_size`, when given, is checked against the state's batch
    axis; otherwise the divisor is read off the state).
    """

    needs_vjp: eqx.AbstractClassVar[bool]
    #: Whether `rate` reads the rates a field offers through `with_rates(t, y,
    #: args) -> (fy, rates)` (see `CNFKineticEnergy`): the field is then evaluated once,
    #: through `with_rates`, and its rates come from that same evaluation.
    reads_field_rates: ClassVar[bool] = False

    @abc.abstractmethod
    def rate(
        self,
        t: Any,
        y: PyTree[Array],
        args: PyTree,
        field: Callable,
        fy: PyTree[Array],
        vjp_fn: Callable | None,
        field_rates: dict[str, Array] | None,
    ) -> Float[Array, ""]:
        """The integrand $r(t, y)$ given `fy = field(t, y, args)`; if `needs_vjp`, the
        function `vjp_fn(cotangent) -> cotangent @ d field / d y`; and `field_rates`, the
        rates the field returned beside `fy` from `with_rates` (`None` unless some
        regularizer of the solve has `reads_field_rates`)."""


class _AugmentedField(eqx.Module):
    """The vector field of the augmented state `(y, rates)`: evaluates `field` once."""

    field: Callable
    regularizers: tuple[AbstractIntegralRegularizer, ...]
    direction: Array  # sign(t1 - t0): the accumulators integrate r |dt|, never r dt
    scales: tuple[float, ...] = eqx.field(static=True)

    def __call__(self, t, state, args):
        y, _ = state
        if any(r.reads_field_rates for r in self.regularizers):
            # One evaluation gives fy and the field's own rates (a CNF's kinetic energy and
            # Jacobian term from the divergence's probe and VJP): nothing is recomputed.
            fn = lambda _y: self.field.with_rates(t, _y, args)  # noqa: E731
        else:
            fn = lambda _y: (self.field(t, _y, args), None)  # noqa: E731
        if any(r.needs_vjp for r in self.regularizers):
            fy, vjp_fn, field_rates = jax.vjp(fn, y, has_aux=True)
        else:
            (fy, field_rates), vjp_fn = fn(y), None
        dtype = _dtype(y)
        direction = self.direction.astype(dtype)
        rates = tuple(
            (direction * r.rate(t, y, args, self.field, fy, vjp_fn, field_rates) / s).astype(dtype)
            for r, s in zip(self.regularizers, self.scales, strict=True)
        )
        return fy, rates


class _ProjectNorm(eqx.Module):
    """The controller's norm applied to the `y` part of an augmented error only."""

    norm: Callable

    def __call__(self, tree):
        return self.norm(tree[0])


class _ProjectFn(eqx.Module):
    """A `SubSaveAt.fn` applied to the `y` part of the augmented state."""

    fn: Callable

    def __call__(self, t, y, args):
        return self.fn(t, y[0], args)


class _AccumulatorFn(eqx.Module):
    def __call__(self, t, y, args):
        return y[1]


class ProjectedPath(diffrax.AbstractPath):
    """Dense output of an augmented solve, reporting only the original state."""

    path: diffrax.AbstractPath

    @property
    def t0(self):
        return self.path.t0

    @property
    def t1(self):
        return self.path.t1

    def evaluate(self, t0, t1=None, left: bool = True):
        return self.path.evaluate(t0, t1, left)[0]

    def derivative(self, t, left: bool = True):
        return self.path.derivative(t, left)[0]


class ProjectedHook(AbstractStepHook):
    """Runs a per-step hook on the `y` part of an augmented solve."""

    hook: AbstractStepHook

    def init(self, dtype):
        return self.hook.init(dtype)

    def update(self, acc, info: StepInfo):
        def first(x):
            return None if x is None else x[0]

        info = StepInfo(
            info.terms,
            info.solver,
            info.t0,
            info.t1,
            info.y0[0],
            info.y1[0],
            first(info.y_error),
            {k: first(v) for k, v in info.dense_info.items()},
            info.args,
        )
        return self.hook.update(acc, info)

    def finalize(self, acc):
        return self.hook.finalize(acc)


def _dtype(y):
    leaves = jtu.tree_leaves(y)
    dtype = jnp.result_type(*leaves) if leaves else jnp.result_type(float)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    return dtype


def _is_subsaveat(x) -> bool:
    return isinstance(x, diffrax.SubSaveAt)


def _project_controller(controller):
    """Give the adaptive controller a norm over the `y` part only."""
    if isinstance(controller, diffrax.ClipStepSizeController):
        return eqx.tree_at(
            lambda c: c.controller, controller, _project_controller(controller.controller)
        )
    if isinstance(controller, diffrax.PIDController):
        return eqx.tree_at(lambda c: c.norm, controller, _ProjectNorm(controller.norm))
    if isinstance(controller, diffrax.AbstractAdaptiveStepSizeController):
        raise ValueError(
            "KineticEnergy / JacobianFrobenius / TaylorDerivative integrate their penalty as "
            "extra state, which must not take part in step-size control; ndes knows how to "
            "exclude it for diffrax.PIDController (optionally inside "
            f"diffrax.ClipStepSizeController), not for {type(controller).__name__}. Use one "
            "of those or a non-adaptive controller."
        )
    return controller


class Augmentation(eqx.Module):
    """The augmented problem for a tuple of integral regularizers, and how to undo it."""

    regularizers: tuple[AbstractIntegralRegularizer, ...]

    @staticmethod
    def check(terms, solver, saveat, solver_state, controller_state, event, regularizers):
        names = ", ".join(type(r).__name__ for r in regularizers)
        if not isinstance(terms, diffrax.ODETerm):
            raise ValueError(
                f"{names} integrate the penalty as extra state of an ODE and need "
                f"terms=diffrax.ODETerm(...); got {type(terms).__name__}. For SDEs/CDEs use "
                "ndes.ErrorEstimate or the local regularizers."
            )
        if saveat.solver_state:
            raise ValueError(
                f"SaveAt(solver_state=True) is not supported with {names}: the solver state "
                "would be that of the augmented state. Drop solver_state=True."
            )
        if solver_state is not None or controller_state is not None:
            raise ValueError(
                f"solver_state= / controller_state= (continuing a solve) are not supported with "
                f"{names}: they belong to the unaugmented state. Start the solve afresh."
            )
        if event is not None:
            raise ValueError(
                f"event= is not supported with {names} (the event function would see the "
                "augmented state). Solve without them, or use ndes.ErrorEstimate."
            )

    def problem(self, terms, y0, controller, saveat, t0, t1):
        """`(terms, y0, controller, saveat)` of the augmented solve on `[t0, t1]` (either
        direction: the accumulators integrate the rates against `|dt|`)."""
        y0 = jtu.tree_map(jnp.asarray, y0)
        dtype = _dtype(y0)
        scales = tuple(float(r.batch_count(y0)) for r in self.regularizers)
        direction = jnp.where(jnp.asarray(t0) <= jnp.asarray(t1), 1, -1)
        field = _AugmentedField(terms.vector_field, self.regularizers, direction, scales)
        acc0 = tuple(jnp.zeros((), dtype) for _ in self.regularizers)
        subs = jtu.tree_map(
            lambda s: eqx.tree_at(lambda x: x.fn, s, _ProjectFn(s.fn)),
            saveat.subs,
            is_leaf=_is_subsaveat,
        )
        run_saveat = diffrax.SaveAt(
            subs=(subs, diffrax.SubSaveAt(t1=True, fn=_AccumulatorFn())),
            dense=saveat.dense,
            solver_state=saveat.solver_state,
            controller_state=saveat.controller_state,
            made_jump=saveat.made_jump,
        )
        return (
            diffrax.ODETerm(field),
            (y0, acc0),
            _project_controller(controller),
            run_saveat,
        )

    @staticmethod
    def split(sol):
        """`(ts, ys, interpolation, values)` of the user's problem from the augmented solve."""
        ts, _ = sol.ts
        ys, accs = sol.ys
        values = tuple(a[-1] for a in accs)
        interpolation = None if sol.interpolation is None else ProjectedPath(sol.interpolation)
        return ts, ys, interpolation, values
