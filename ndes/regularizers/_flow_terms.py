r"""RNODE's two terms for a continuous normalizing flow, read from the divergence computation
the flow makes anyway (Finlay et al. 2020).

A CNF integrates the augmented state $(z, \ell)$ with $\dot z = f(t, z)$ and
$\dot\ell = -\nabla\!\cdot f$. `ndes.KineticEnergy` and `ndes.JacobianFrobenius` applied to
that solve see the *augmented* field: the first adds $(\nabla\!\cdot f)^2$ to $\lVert f\rVert^2$,
the second draws its own probe and differentiates through the divergence (a second-order
pass). The two classes here penalise RNODE's quantities on $f$ alone:

- `CNFKineticEnergy`: $\int \lVert f(t, z)\rVert^2\,dt$;
- `CNFJacobianFrobenius`: $\int \lVert\varepsilon^\top \partial f/\partial z\rVert^2\,dt$ with the
  *same* probe $\varepsilon$ and the same VJP as the Hutchinson divergence (exactly
  $\lVert\partial f/\partial z\rVert_F^2$ with the exact divergence).

Both read the rates from the CNF's augmented field through its method
`with_rates(t, y, args) -> (fy, {"kinetic": ..., "frobenius": ...})` (batch sums): the state
augmentation (`_augment.py`) then evaluates the field *once*, through `with_rates`, and takes
$f$, the divergence and both rates from that single evaluation -- one evaluation of $f$ and one
VJP per stage, exactly what plain FFJORD computes (measured in docs/cnf.md). Any field offering
`with_rates` works (`ndes.CNF`'s does; a probability-flow ODE's can).
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
from jaxtyping import Array, Float

from ._augment import AbstractIntegralRegularizer
from ._base import Problem, Weight

__all__ = ["CNFKineticEnergy", "CNFJacobianFrobenius"]


def _check_cnf_field(problem: Problem, name: str, fallback: str) -> None:
    field = getattr(problem.terms, "vector_field", None)
    if not callable(getattr(field, "with_rates", None)):
        raise ValueError(
            f"{name} reads the divergence computation of a CNF's (z, log p) solve: use it with "
            f"ndes.CNF.log_prob / sample_and_log_prob (a vector field with a `with_rates` "
            f"method); got a field of type {type(field).__name__}. For other solves use "
            f"{fallback}."
        )


class CNFKineticEnergy(AbstractIntegralRegularizer):
    r"""RNODE's kinetic energy of a CNF, $\int_{t_0}^{t_1}\lVert f(t, z(t))\rVert_2^2\,dt$, on the
    flow's velocity $f$ only (not on the $\log p$ component of the augmented state).

    Reuses the solver's evaluation of $f$; one extra scalar of state, no part in step-size
    control. Units $|z|^2/\text{time}$, per sample (per-sample mean of a joint batch).

    **Arguments:** `weight` (number or schedule); `batch_axis`, `batch_size` (set by the
    CNF in joint mode).

    **Reference:** Finlay, Jacobsen, Nurbekyan, Oberman, "How to train your neural ODE: the
    world of Jacobian and kinetic regularization", ICML 2020.
    """

    weight: Weight = 1.0
    batch_axis: int | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)
    needs_vjp: ClassVar[bool] = False
    reads_field_rates: ClassVar[bool] = True

    def bind(self, problem: Problem) -> "CNFKineticEnergy":
        _check_cnf_field(problem, "CNFKineticEnergy", "ndes.KineticEnergy")
        return self

    def rate(self, t, y, args, field, fy, vjp_fn, field_rates) -> Float[Array, ""]:
        if field_rates is None:  # standalone use: re-evaluates the field
            return field.with_rates(t, y, args)[1]["kinetic"]
        return field_rates["kinetic"]


class CNFJacobianFrobenius(AbstractIntegralRegularizer):
    r"""RNODE's Jacobian term of a CNF, $\int_{t_0}^{t_1}\lVert\varepsilon^\top
    \partial f/\partial z\rVert^2\,dt$, from the probe and VJP of the Hutchinson divergence.

    $\mathbb{E}_\varepsilon\lVert\varepsilon^\top J\rVert^2 = \lVert J\rVert_F^2$: unbiased for
    the Frobenius norm, with the probe the CNF drew for this solve (no key of its own). With
    `divergence="exact"` it is $\lVert J\rVert_F^2$ exactly, from the same `d` JVPs. No extra
    evaluation of $f$ and no extra VJP (unlike `ndes.JacobianFrobenius`, which differentiates
    through the divergence); the backward pass differentiates the same VJP it differentiates
    for the divergence, with one more cotangent term. Units $1/\text{time}^2$ integrated over
    time, per sample. Finlay et al.'s code (`cfinlay/ffjord-rnode`) averages over the `d`
    entries; this is the sum.

    **Arguments:** `weight` (number or schedule); `batch_axis`, `batch_size` (set by the
    CNF in joint mode).

    **Reference:** Finlay et al., ICML 2020 (as `CNFKineticEnergy`); Grathwohl et al.,
    "FFJORD", ICLR 2019.
    """

    weight: Weight = 1.0
    batch_axis: int | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)
    needs_vjp: ClassVar[bool] = False
    reads_field_rates: ClassVar[bool] = True

    def bind(self, problem: Problem) -> "CNFJacobianFrobenius":
        _check_cnf_field(problem, "CNFJacobianFrobenius", "ndes.JacobianFrobenius")
        return self

    def rate(self, t, y, args, field, fy, vjp_fn, field_rates) -> Float[Array, ""]:
        if field_rates is None:  # standalone use: re-evaluates the field
            return field.with_rates(t, y, args)[1]["frobenius"]
        return field_rates["frobenius"]
