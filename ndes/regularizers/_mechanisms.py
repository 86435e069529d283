"""How `ndes.diffeqsolve` groups the regularizers of a solve: by mechanism, never by
concrete class (see `_base.py` and `docs/architecture.md`)."""

from __future__ import annotations

from collections.abc import Sequence

import diffrax

from ._augment import AbstractIntegralRegularizer, Augmentation
from ._base import AbstractEndTime, AbstractRegularizer, Problem
from ._local import AbstractLocalRegularizer
from ._step import AbstractStepRegularizer

__all__ = ["Mechanisms", "Regularizer", "as_regularizers"]

Regularizer = AbstractRegularizer | AbstractEndTime


def as_regularizers(regularizers) -> tuple[Regularizer, ...]:
    if isinstance(regularizers, Regularizer):
        regularizers = (regularizers,)
    if not isinstance(regularizers, Sequence):
        raise TypeError(
            "ndes.diffeqsolve(regularizers=...) takes a tuple of ndes regularizers, e.g. "
            f"(ndes.ErrorEstimate(1e-2),); got {type(regularizers).__name__}."
        )
    for r in regularizers:
        if not isinstance(r, Regularizer):
            raise TypeError(
                "ndes.diffeqsolve(regularizers=...) takes ndes regularizers such as "
                f"ndes.ErrorEstimate or ndes.StiffnessEstimate; got {type(r).__name__}."
            )
    return tuple(regularizers)


class Mechanisms:
    """The regularizers of one solve, sorted by their mechanism (how they reach into it).

    - `step`: per-step hooks on the solver (`AbstractStepRegularizer`);
    - `local`: a sampler hook plus one extra step after the solve (`AbstractLocalRegularizer`);
    - `integral`: extra state integrated with `y` (`AbstractIntegralRegularizer`);
    - `end`: a changed end time (`AbstractEndTime`); no penalty.
    """

    def __init__(self, step, local, integral, end):
        self.step, self.local, self.integral, self.end = step, local, integral, end

    @classmethod
    def of(cls, regularizers) -> "Mechanisms":
        """Sorts `diffeqsolve`'s `regularizers=` (validated) by mechanism."""
        step, local, integral, end = [], [], [], []
        for r in as_regularizers(regularizers):
            if isinstance(r, AbstractStepRegularizer):
                step.append(r)
            elif isinstance(r, AbstractLocalRegularizer):
                local.append(r)
            elif isinstance(r, AbstractIntegralRegularizer):
                integral.append(r)
            elif isinstance(r, AbstractEndTime):
                end.append(r)
            else:
                raise TypeError(
                    f"{type(r).__name__} is an ndes.AbstractRegularizer but none of its "
                    "mechanisms: subclass ndes.AbstractStepRegularizer, "
                    "ndes.AbstractLocalRegularizer or ndes.AbstractIntegralRegularizer."
                )
        if len(end) > 1:
            names = " / ".join(sorted({e.name for e in end}))
            raise ValueError(
                f"ndes.diffeqsolve(regularizers=...) got more than one {names}; pass one "
                "end-time change."
            )
        return cls(tuple(step), tuple(local), tuple(integral), end[0] if end else None)

    def bind(self, problem: Problem) -> "Mechanisms":
        """Every regularizer's one check, and the mechanisms' own; returns the bound set."""
        if self.step or self.local or self.integral:
            if isinstance(problem.adjoint, diffrax.BacksolveAdjoint):
                raise ValueError(
                    "regularizers cannot be differentiated with adjoint="
                    "diffrax.BacksolveAdjoint() (it only back-propagates through ys). Use "
                    "diffrax.RecursiveCheckpointAdjoint() (the default) or "
                    "diffrax.DirectAdjoint()."
                )
            if isinstance(problem.solver, diffrax.AbstractImplicitSolver):
                raise ValueError(
                    "regularizers are supported with explicit solvers; "
                    f"{type(problem.solver).__name__} is implicit. Use e.g. diffrax.Tsit5() "
                    "or diffrax.Dopri5()."
                )
        step = tuple(r.bind(problem) for r in self.step)
        local = tuple(r.bind(problem) for r in self.local)
        integral = self.integral
        if integral:
            p = problem
            Augmentation.check(
                p.terms, p.solver, p.saveat, p.solver_state, p.controller_state, p.event, integral
            )
            integral = tuple(r.bind(problem) for r in integral)
        end = None if self.end is None else self.end.bind(problem)
        return Mechanisms(step, local, integral, end)

    @property
    def penalised(self) -> tuple[AbstractRegularizer, ...]:
        """The regularizers with a penalty term, in the order their values are computed."""
        return (*self.step, *self.local, *self.integral)
