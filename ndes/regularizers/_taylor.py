"""TaylorDerivative (Kelly et al. 2020, "TayNODE"): Taylor-mode derivatives by nested `jax.jvp`."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

from ._augment import AbstractIntegralRegularizer, sum_squares
from ._base import Problem, Weight

__all__ = ["TaylorDerivative", "time_derivatives"]

_ORDERS = (2, 3)


def time_derivatives(field, t, y: PyTree[Array], args, fy: PyTree[Array], order: int):
    r"""`[y'', ..., y^(order)]` of the solution through `(t, y)` of `dy/dt = field(t, y, args)`,
    given `fy = field(t, y, args)` (= y'); `order` is 2 or 3. Each has the structure of `y`.

    Taylor-mode forward differentiation along the flow: the recursion of Kelly et al.'s
    reference code (easy-neural-ode, `sol_recursive`: $y^{(k+1)} = \frac{d}{ds}
    y^{(k)}(t + s, y(t + s))$ on the state $x = (t, y)$ with $\dot t = 1$), written with
    `jax.jvp` instead of `jax.experimental.jet`. With $v = (1, y')$: $y'' = Df(x)\,v$ (one
    JVP) and $y''' = D[y''](x)\,v$, a JVP of $y''(x) = Df(x)\,(1, f(x))$ written with
    `jax.linearize`, so that $f(x)$ is evaluated once and is the linearisation's own primal
    (about 10% faster in the K=3 train step than a JVP of a JVP; its primal output is
    $y''$). The explicit time dependence is included. `jet` computes the same coefficients,
    but on a tanh MLP it made the train step 2.2x slower than this for K=2 (it instantiates
    zero series for the field's constant parameters and builds `tanh` from `exp` and a
    division; measured 2026-12-02, docs/benchmarks.md). The primal evaluations inside the JVPs
    repeat `fy`'s; XLA merges identical computations in the compiled step.
    """
    if order not in _ORDERS:
        raise ValueError(f"time_derivatives(order={order!r}) must be 2 or 3.")
    y_flat, unravel = ravel_pytree(y)
    dtype = y_flat.dtype
    t = jnp.asarray(t, dtype)
    one = jnp.ones((), dtype)

    def g(tt, yy):
        return ravel_pytree(field(tt, unravel(yy), args))[0].astype(dtype)

    v = (one, ravel_pytree(fy)[0].astype(dtype))
    if order == 2:
        return [unravel(jax.jvp(g, (t, y_flat), v)[1])]

    def second(tt, yy):  # y'' as a function of the state: Df(x) (1, f(x)), f evaluated once
        fx, lin = jax.linearize(g, tt, yy)
        return lin(one, fx)

    d2, d3 = jax.jvp(second, (t, y_flat), v)
    return [unravel(d2), unravel(d3)]


class TaylorDerivative(AbstractIntegralRegularizer):
    r"""Penalise $\int_{t_0}^{t_1}\lVert \mathrm{d}^K y/\mathrm{d}t^K\rVert_2^2\,dt$, $K\in\{2,3\}$.

    An adaptive solver of order $p$ takes large steps where the high time-derivatives of
    the solution are small; penalising the $K$-th derivative directly (Kelly et al.'s
    TayNODE) makes the learned dynamics easy to solve. The derivative along the solution is
    computed exactly by Taylor-mode forward differentiation of the vector field (nested
    `jax.jvp`, see `time_derivatives`), with the explicit time dependence included. The JVPs
    trace the field again (a vector-field counter ticks more than once per counted
    evaluation; XLA merges the repeated primal work); `stats["num_fevals"]` counts one, the
    solver's own. Cost per train step: about 2x an unregularized step for $K=2$, about 4x
    for $K=3$ (docs/benchmarks.md). The integral is extra state that takes no part in
    step-size control, so `ys` and the step sequence are those of the unregularized solve.
    Units: $|y|^2 / \text{time}^{2K-1}$, per trajectory.

    Needs `terms=diffrax.ODETerm(...)` whose vector field is differentiable in forward mode
    (`jax.jvp`, twice for $K=3$); with an adaptive controller, a `diffrax.PIDController`
    (optionally clipped).

    **Arguments:**

    - `weight`: a finite non-negative number or a schedule (callable of the training step).
    - `order`: $K$, 2 (default) or 3. Kelly et al. found $K$ = the solver's order to work
      best; higher orders cost more per evaluation.
    - `batch_axis`, `batch_size`: as in `ndes.KineticEnergy` (per-trajectory mean of a joint
      solve).

    **Reference:** Kelly, Bettencourt, Johnson, Duvenaud, "Learning Differential Equations
    that are Easy to Solve", NeurIPS 2020.
    """

    weight: Weight = 1.0
    order: int = eqx.field(default=2, static=True)
    batch_axis: int | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)
    needs_vjp: ClassVar[bool] = False

    def __check_init__(self):
        if self.order not in _ORDERS or isinstance(self.order, bool):
            raise ValueError(
                f"TaylorDerivative(order={self.order!r}) must be 2 or 3 (the order K of the "
                "time derivative d^K y/dt^K that is penalised)."
            )

    def bind(self, problem: Problem) -> "TaylorDerivative":
        return self

    def rate(self, t, y, args, field, fy, vjp_fn, field_rates) -> Float[Array, ""]:
        return sum_squares(time_derivatives(field, t, y, args, fy, self.order)[-1])
