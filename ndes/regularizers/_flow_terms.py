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

They ask the CNF's augmented field for these rates through its method
`cnf_rates(t, y, args) -> (kinetic, frobenius)` (batch sums), which repeats the field's own
linearisation with the same inputs; under `jax.jit` XLA merges the repeated computation with
the solver's (common-subexpression elimination), so the forward cost is that of plain FFJORD
(measured in docs/cnf.md). Any field offering `cnf_rates` works (`ndes.CNF`'s does; a
probability-flow ODE's can).
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
    if not callable(getattr(field, "cnf_rates", None)):
        raise ValueError(
            f"{name} reads the divergence computation of a CNF's (z, log p) solve: use it with "
            f"ndes.CNF.log_prob / sample_and_log_prob (a vector field with a `cnf_rates` "
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

    def bind(self, problem: Problem) -> "CNFKineticEnergy":
        _check_cnf_field(problem, "CNFKineticEnergy", "ndes.KineticEnergy")
        return self

    def rate(self, t, y, args, field, fy, vjp_fn) -> Float[Array, ""]:
        return field.cnf_rates(t, y, args)[0]


class CNFJacobianFrobenius(AbstractIntegralRegularizer):
    r"""RNODE's Jacobian term of a CNF, $\int_{t_0}^{t_1}\lVert\varepsilon^\top
    \partial f/\partial z\rVert^2\,dt$, from the probe and VJP of the Hutchinson divergence.

    $\mathbb{E}_\varepsilon\lVert\varepsilon^\top J\rVert^2 = \lVert J\rVert_F^2$: unbiased for
    the Frobenius norm, with the probe the CNF drew for this solve (no key of its own). With
    `divergence="exact"` it is $\lVert J\rVert_F^2$ exactly, from the same `d` JVPs. No extra
    evaluation of $f$ and no extra VJP in the forward solve (unlike `ndes.JacobianFrobenius`,
    which differentiates through the divergence); the backward pass pays for the gradient of
    the term. Units $1/\text{time}^2$ integrated over time, per sample. Finlay et al.'s code
    (`cfinlay/ffjord-rnode`) averages over the `d` entries; this is the sum.

    **Arguments:** `weight` (number or schedule); `batch_axis`, `batch_size` (set by the
    CNF in joint mode).

    **Reference:** Finlay et al., ICML 2020 (as `CNFKineticEnergy`); Grathwohl et al.,
    "FFJORD", ICLR 2019.
    """

    weight: Weight = 1.0
    batch_axis: int | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)
    needs_vjp: ClassVar[bool] = False

    def bind(self, problem: Problem) -> "CNFJacobianFrobenius":
        _check_cnf_field(problem, "CNFJacobianFrobenius", "ndes.JacobianFrobenius")
        return self

    def rate(self, t, y, args, field, fy, vjp_fn) -> Float[Array, ""]:
        return field.cnf_rates(t, y, args)[1]
