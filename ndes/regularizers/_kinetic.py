"""KineticEnergy and JacobianFrobenius (Finlay et al. 2020, "RNODE"), integrated as extra state."""

from __future__ import annotations

from typing import ClassVar, Literal

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._augment import AbstractIntegralRegularizer, sum_squares
from ._base import Problem, Weight

__all__ = ["KineticEnergy", "JacobianFrobenius", "hutchinson_probe"]

Probe = Literal["gaussian", "rademacher"]
_PROBES = ("gaussian", "rademacher")


class KineticEnergy(AbstractIntegralRegularizer):
    r"""Penalise the kinetic energy of the flow, $\int_{t_0}^{t_1}\lVert f(t, y(t))\rVert_2^2\,dt$.

    Straight, slow trajectories are cheap to integrate; this is the first half of Finlay et
    al.'s RNODE regularizer (an optimal-transport argument). The integral is computed by the
    solver itself as one extra scalar of state (`d a/dt = ||f||^2`), reusing the vector-field
    evaluation that the solve makes anyway: no extra evaluations, one extra scalar per stage.
    The extra state takes no part in step-size control, so `ys` and the step sequence are
    those of the unregularized solve. Units: $|y|^2 / \text{time}$ (the squared norm of the
    velocity, integrated over time), per trajectory. The integral is over $|dt|$, so a
    backward solve ($t_1 < t_0$) gives the same non-negative value as its forward mirror
    (as for `JacobianFrobenius` and `TaylorDerivative`).

    Needs `terms=diffrax.ODETerm(...)`; with an adaptive controller, a `diffrax.PIDController`
    (optionally inside `diffrax.ClipStepSizeController`).

    **Arguments:**

    - `weight`: a finite non-negative number or a schedule (callable of the training step).
    - `batch_axis`, `batch_size`: for a batch of trajectories solved jointly as one state,
      the axis of every leaf that indexes the trajectories; the penalty is then the mean over
      trajectories (`batch_size` is accepted for symmetry with `ndes.ErrorEstimate` and
      checked against the state). `NeuralODE(batch_mode="joint")` sets both.

    **Reference:** Finlay, Jacobsen, Nurbekyan, Oberman, "How to train your neural ODE: the
    world of Jacobian and kinetic regularization", ICML 2020.
    """

    weight: Weight = 1.0
    batch_axis: int | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)
    needs_vjp: ClassVar[bool] = False

    def bind(self, problem: Problem) -> "KineticEnergy":
        return self

    def rate(self, t, y, args, field, fy, vjp_fn, field_rates) -> Float[Array, ""]:
        return sum_squares(fy)


def hutchinson_probe(key: PRNGKeyArray, like: PyTree[Array], kind: Probe) -> PyTree[Array]:
    """A probe `eps` with `E[eps eps^T] = I`, shaped like `like`: standard normal or
    Rademacher (+-1 with equal probability) entries."""
    leaves, treedef = jtu.tree_flatten(like)
    keys = jr.split(key, max(len(leaves), 1))
    out = []
    for k, leaf in zip(keys, leaves, strict=False):
        leaf = jnp.asarray(leaf)
        if kind == "gaussian":
            out.append(jr.normal(k, leaf.shape, leaf.dtype))
        else:
            out.append(jr.rademacher(k, leaf.shape, leaf.dtype))
    return jtu.tree_unflatten(treedef, out)


class JacobianFrobenius(AbstractIntegralRegularizer):
    r"""Penalise $\int_{t_0}^{t_1}\lVert \partial f/\partial y\,(t, y(t))\rVert_F^2\,dt$.

    A small Jacobian means a smooth, non-stiff flow (the second half of Finlay et al.'s
    RNODE). The Frobenius norm is estimated without forming the Jacobian by Hutchinson's
    trick, $\lVert J\rVert_F^2 = \mathbb{E}_\varepsilon\lVert\varepsilon^\top J\rVert^2$ for any
    probe with $\mathbb{E}[\varepsilon\varepsilon^\top] = I$: one probe is drawn per solve
    (from `key`) and held fixed along the trajectory, and $\varepsilon^\top J$ is one
    vector-Jacobian product (`jax.vjp`) sharing its forward pass with the solver's own
    evaluation of $f$. The estimate is unbiased over probes. Cost: one VJP (about one extra
    evaluation's worth of work, not counted in `stats["num_fevals"]`) per stage, plus one
    scalar of state. Integrated as extra state that takes no part in step-size control, so
    `ys` and the step sequence are those of the unregularized solve. Units: $1/\text{time}^2$
    integrated over time, per trajectory.

    Needs `terms=diffrax.ODETerm(...)`; with an adaptive controller, a `diffrax.PIDController`
    (optionally inside `diffrax.ClipStepSizeController`).

    **Arguments:**

    - `weight`: a finite non-negative number or a schedule (callable of the training step).
    - `key`: a PRNG key (`jax.random.key(...)`) for the probe; pass a fresh one per training
      step (and, to give every trajectory its own probe under `jax.vmap`, one per trajectory).
    - `probe`: `"gaussian"` (default) or `"rademacher"` (lower variance).
    - `batch_axis`, `batch_size`: as in `ndes.KineticEnergy` (per-trajectory mean of a joint
      solve; the probe has independent entries for every trajectory).
    - `eps`: not an argument to set: leave it `None` (the default). `bind` (called by
      `ndes.diffeqsolve`) overwrites it with the probe $\varepsilon$ drawn from `key` -- a
      PyTree shaped like `y0`, with `y0`'s dtypes and i.i.d. standard normal or $\pm 1$
      entries -- held fixed for that solve.

    **Reference:** Finlay, Jacobsen, Nurbekyan, Oberman, "How to train your neural ODE: the
    world of Jacobian and kinetic regularization", ICML 2020; Hutchinson, "A stochastic
    estimator of the trace of the influence matrix", 1989.
    """

    weight: Weight = 1.0
    key: PRNGKeyArray | None = None
    probe: Probe = eqx.field(default="gaussian", static=True)
    batch_axis: int | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)
    eps: PyTree[Array] | None = None  # the probe, drawn by `bind`
    needs_vjp: ClassVar[bool] = True

    def __check_init__(self):
        if self.probe not in _PROBES:
            raise ValueError(f"JacobianFrobenius(probe={self.probe!r}) must be one of {_PROBES}.")
        if self.key is None:
            raise ValueError(
                "JacobianFrobenius needs key= (a PRNG key for the Hutchinson probe), e.g. "
                "JacobianFrobenius(weight, key=jax.random.key(step)); pass a fresh key per "
                "training step."
            )

    def bind(self, problem: Problem) -> "JacobianFrobenius":
        """Draws the probe, shaped like `problem.y0`, once per solve."""
        eps = hutchinson_probe(self.key, problem.y0, self.probe)
        return eqx.tree_at(lambda r: r.eps, self, eps, is_leaf=lambda x: x is None)

    def rate(self, t, y, args, field, fy, vjp_fn, field_rates) -> Float[Array, ""]:
        (eps_j,) = vjp_fn(jtu.tree_map(lambda e, f: e.astype(f.dtype), self.eps, fy))
        return sum_squares(eps_j)
