"""RegularizedSolver: a transparent solver wrapper that accumulates per-step penalties."""

from __future__ import annotations

import diffrax
import jax.numpy as jnp
import jax.tree_util as jtu

from ._base import AbstractStepHook, StepInfo

__all__ = ["RegularizedSolver"]


class RegularizedSolver(diffrax.AbstractWrappedSolver):
    """Wraps a diffrax solver; carries one accumulator per regularizer in the solver state.

    Every `step` calls the wrapped solver unchanged, then updates the accumulators from
    `(t0, t1, y0, y1, y_error, dense_info)`. diffrax keeps a new solver state only when the
    step is accepted, so only accepted steps contribute. The state `y` and the error
    estimate passed to the controller are the wrapped solver's, so the accepted/rejected
    step sequence and `ys` are exactly those of the unwrapped solver.

    Being an `AbstractWrappedSolver`, `isinstance` checks (adaptive? Itô? implicit?) are
    answered by the wrapped solver.
    """

    solver: diffrax.AbstractSolver
    regularizers: tuple[AbstractStepHook, ...]

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.solver.interpolation_cls

    @property
    def term_compatible_contr_kwargs(self):
        return self.solver.term_compatible_contr_kwargs

    @property
    def scan_kind(self):
        # `isinstance` checks are forwarded to the wrapped solver, so diffrax's DirectAdjoint
        # treats this wrapper as a Runge--Kutta solver and reads its `scan_kind`.
        return getattr(self.solver, "scan_kind", None)

    def order(self, terms):
        return self.solver.order(terms)

    def strong_order(self, terms):
        return self.solver.strong_order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def _dtype(self, y0):
        leaves = jtu.tree_leaves(y0)
        return jnp.result_type(*leaves) if leaves else jnp.result_type(float)

    def init(self, terms, t0, t1, y0, args):
        inner = self.solver.init(terms, t0, t1, y0, args)
        dtype = self._dtype(y0)
        return inner, tuple(r.init(dtype) for r in self.regularizers)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        inner_state, accs = solver_state
        y1, y_error, dense_info, inner_state, result = self.solver.step(
            terms, t0, t1, y0, args, inner_state, made_jump
        )
        info = StepInfo(terms, self.solver, t0, t1, y0, y1, y_error, dense_info, args)
        accs = tuple(r.update(a, info) for r, a in zip(self.regularizers, accs, strict=True))
        return y1, y_error, dense_info, (inner_state, accs), result

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)

    def finalize(self, solver_state):
        """Unweighted penalty of each regularizer from a final solver state."""
        _, accs = solver_state
        return tuple(r.finalize(a) for r, a in zip(self.regularizers, accs, strict=True))


def regularized_solver(solver, regularizers) -> RegularizedSolver:
    return RegularizedSolver(solver, tuple(regularizers))
