"""Helpers of `ndes.GridBrownianPath` (`_brownian.py`): input normalisation, the checks of
user-given increments, and the one jitted call that draws every increment of the grid."""

from __future__ import annotations

import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from diffrax import BrownianIncrement, SpaceTimeLevyArea, SpaceTimeTimeLevyArea
from jaxtyping import PyTree

MSG_RANGE = (
    "GridBrownianPath.evaluate: the query lies outside the path's interval [t0, t1]. "
    "Build the path over the solve's interval: GridBrownianPath(t0, t1, ...) with the same "
    "t0 and t1 as diffeqsolve."
)
MSG_CELL = (
    "GridBrownianPath.evaluate: the query is not exactly one cell of the path's grid "
    "t0 + k*(t1 - t0)/num_steps. It only supports fixed-step solves on that grid: use "
    "stepsize_controller=diffrax.ConstantStepSize() with dt0=(t1 - t0)/num_steps and the "
    "path's t0 and t1 (no adaptive controller, no HalfSolver), or use "
    "diffrax.VirtualBrownianTree for adaptive solves."
)
MSG_POINT = (
    "GridBrownianPath.evaluate(t): `t` is not a grid point t0 + k*(t1 - t0)/num_steps; W is "
    "only known at grid points. Query a grid time, or use diffrax.VirtualBrownianTree."
)
LEVY_NEED = {BrownianIncrement: 0, SpaceTimeLevyArea: 1, SpaceTimeTimeLevyArea: 2}


def concrete(x) -> float | None:
    """`x` as a Python float when it is a concrete scalar, else None (a tracer)."""
    if isinstance(x, numbers.Real):
        return float(x)
    if x is None:
        return None
    try:
        arr = np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None
    ok = arr.shape == () and np.issubdtype(arr.dtype, np.number)
    return float(arr) if ok else None


def is_sds(x) -> bool:
    return isinstance(x, jax.ShapeDtypeStruct)


def as_shape_tree(shape, dtype) -> PyTree[jax.ShapeDtypeStruct]:
    """A tuple of ints or a PyTree of `ShapeDtypeStruct` as a PyTree of real floating
    `ShapeDtypeStruct` (with `dtype` when given)."""
    if isinstance(shape, tuple) and all(isinstance(d, (int, np.integer)) for d in shape):
        dt = jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
        shape = jax.ShapeDtypeStruct(tuple(int(d) for d in shape), dt)
    leaves = jtu.tree_leaves(shape, is_leaf=is_sds)
    if not leaves or not all(is_sds(x) for x in leaves):
        raise TypeError(
            "GridBrownianPath(shape=...) must be a tuple of ints, e.g. (4,), or a PyTree of "
            f"jax.ShapeDtypeStruct; got {shape!r}."
        )
    if dtype is not None:
        shape = jtu.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), shape, is_leaf=is_sds)
    for s in jtu.tree_leaves(shape, is_leaf=is_sds):
        if not jnp.issubdtype(s.dtype, jnp.floating):
            raise ValueError(
                f"GridBrownianPath noise dtypes must be real floating point; got {s.dtype}."
            )
    return shape


def check_given(increments, levy, levy_area, num_steps):
    """User-given increments (leading axis `num_steps`) and Lévy areas shaped like them, as
    arrays; returns `(increments, levy, shape tree)`."""
    leaves, treedef = jtu.tree_flatten(increments)
    for x in leaves:
        if jnp.ndim(x) < 1 or jnp.shape(x)[0] != num_steps:
            raise ValueError(
                "GridBrownianPath(increments=...) leaves need a leading axis of length "
                f"num_steps={num_steps}; got shape {jnp.shape(x)}."
            )
    increments = jtu.tree_map(jnp.asarray, increments)
    shape = jtu.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), increments)
    need = LEVY_NEED[levy_area]
    if need == 0:
        if levy is not None:
            raise ValueError(
                "GridBrownianPath(levy=...) needs levy_area=diffrax.SpaceTimeLevyArea "
                "(H) or diffrax.SpaceTimeTimeLevyArea ((H, K))."
            )
        return increments, None, shape
    if levy is None:
        raise ValueError(
            f"GridBrownianPath(levy_area={levy_area.__name__}) with `increments` also "
            "needs `levy`: H, or (H, K) for SpaceTimeTimeLevyArea."
        )
    levy = jtu.tree_map(jnp.asarray, levy)
    parts = (levy,) if need == 1 else tuple(levy)
    for p in parts:
        if jtu.tree_structure(p) != treedef or any(
            jnp.shape(u) != jnp.shape(v) for u, v in zip(jtu.tree_leaves(p), leaves, strict=True)
        ):
            raise ValueError("GridBrownianPath(levy=...) must be shaped like `increments`.")
    return increments, levy, shape


@eqx.filter_jit
def draw_noise(key, h, num_steps, shape, levy_area):
    """All `num_steps` increments (and Lévy areas) of cells of size `h`, one jitted call.

    Jitted because the many small random ops would otherwise each compile on first use
    (about a second when building a path eagerly, more under `jax.vmap`). `W`, `H` and
    `K` use the sub-keys `fold_in(key, 0/1/2)`, so `W` does not depend on `levy_area`.
    Returns `(W, None)`, `(W, H)` or `(W, (H, K))`, leaves shaped `(num_steps, *leaf)`.
    """
    kw, kh, kk = jr.fold_in(key, 0), jr.fold_in(key, 1), jr.fold_in(key, 2)
    treedef = jtu.tree_structure(shape, is_leaf=is_sds)
    leaves = jtu.tree_leaves(shape, is_leaf=is_sds)

    def tree_normal(k, scale):
        keys = jr.split(k, len(leaves))
        out = [
            jr.normal(kl, (num_steps, *s.shape), s.dtype) * jnp.sqrt(h * scale).astype(s.dtype)
            for kl, s in zip(keys, leaves, strict=True)
        ]
        return jtu.tree_unflatten(treedef, out)

    w = tree_normal(kw, 1.0)
    if levy_area is SpaceTimeLevyArea:
        return w, tree_normal(kh, 1.0 / 12)
    if levy_area is SpaceTimeTimeLevyArea:
        return w, (tree_normal(kh, 1.0 / 12), tree_normal(kk, 1.0 / 720))
    return w, None
