"""Gradient-safe elementary operations used by the regularizers.

Under `jax.vmap`, trajectories that have already finished keep taking masked zero-length
steps whose error estimate is exactly 0; the result is discarded by a `select`, but the
backward pass still multiplies the derivative of the discarded branch by zero, and
`0 * inf = nan`. Every norm and quotient a regularizer takes therefore goes through the
"double where" idiom below, so that the discarded branch has a finite derivative.
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float, PyTree

__all__ = ["finite_or_zero", "safe_div", "safe_two_norm"]


def finite_or_zero(tree: PyTree[Array]) -> PyTree[Array]:
    """Replace non-finite entries by 0, with a zero (not NaN) derivative there."""

    def _leaf(x):
        ok = jnp.isfinite(x)
        return jnp.where(ok, jnp.where(ok, x, 0), 0)

    return jtu.tree_map(_leaf, tree)


def safe_div(num: Float[Array, ""], den: Float[Array, ""]) -> Float[Array, ""]:
    """`num / den`, defined as 0 where `den == 0` (with a finite derivative)."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


def safe_two_norm(tree: PyTree[Array]) -> Float[Array, ""]:
    """Euclidean norm over all leaves; derivative 0 (not NaN) at 0."""
    sq = sum(jnp.sum(jnp.square(x)) for x in jtu.tree_leaves(tree))
    ok = sq > 0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, sq, 1)), 0)
