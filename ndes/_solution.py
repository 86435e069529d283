"""Solution: diffrax's solution plus the regularization penalty and exact cost counters."""

from __future__ import annotations

import diffrax
from jaxtyping import Array, Float

__all__ = ["Solution"]


class Solution(diffrax.Solution):
    """The solution returned by `ndes.diffeqsolve`.

    A `diffrax.Solution` (so `ts`, `ys`, `stats`, `result`, `evaluate`, `derivative`,
    `solver_state`, `controller_state`, `made_jump` and `event_mask` mean exactly what they
    mean in diffrax, and `isinstance(sol, diffrax.Solution)` holds), with

    - `t0`, `t1`: scalars, the start and end of the region of integration (as diffrax
      reports them: the requested end even when an `event` stopped the solve earlier).
      With `ndes.RandomEndTime`, `t1` is the sampled end time the solve actually ran to.
    - `interpolation`: the dense output (a `diffrax.AbstractPath` over `[t0, t1]`, read
      through `evaluate` / `derivative`) when `saveat=diffrax.SaveAt(dense=True)`, else
      `None`. With integral regularizers (`KineticEnergy`, `JacobianFrobenius`,
      `TaylorDerivative`) it is a wrapper of diffrax's path that returns the user's state
      only, without the penalty accumulators.

    plus:

    - `penalty`: scalar, the weighted sum of every regularizer's value; differentiable.
      Zero when no regularizers were given; NaN (as is every `penalty_terms` value) when the
      solve failed (`result` an error under `throw=False`, or a NaN in `ys`).
    - `penalty_terms`: dict from regularizer name to its *unweighted* value (names are made
      unique with a suffix `_1`, `_2`, ... when a regularizer type appears twice).
    - `stats["num_fevals"]`: exact number of vector-field evaluations (all attempted steps,
      accepted and rejected, FSAL re-evaluations, the initial-step heuristic, and any extra
      steps taken by regularizers); for a `diffrax.MultiTerm` (e.g. an SDE's drift and
      diffusion) also `stats["num_fevals_per_term"]`. Present for the solvers listed in
      `ndes.supports_feval_count`.
    """

    penalty: Float[Array, ""]
    penalty_terms: dict[str, Float[Array, ""]]
