"""`GridBrownianPath`: every increment of a fixed step grid, drawn at once from a key.

diffrax's `VirtualBrownianTree` answers any query `W(t1) - W(t0)` by walking a binary tree
of Brownian bridges -- exact for adaptive solvers, but each query costs a tree descent,
which dominates a small neural SDE's train step (DESIGN.md §5b: 1.9x slower than torchsde
at batch 256, 50 Euler--Maruyama steps). With a constant step size, every query is one cell
of a known grid, so the whole path is `num_steps` independent Gaussian increments: draw them
all at once (one vectorised RNG call) and answer each query by indexing. That is what a
hand-written `lax.scan` Euler--Maruyama loop does.

Such a path is exact only for queries that are whole grid cells. Any other query (an
adaptive controller's step, a `dt0` or `t0`/`t1` that do not match the grid, a
`HalfSolver`'s half step) raises through `eqx.error_if` with the fix -- never a silently
wrong increment.
"""

from __future__ import annotations

import copy
import numbers

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from diffrax import BrownianIncrement, SpaceTimeLevyArea, SpaceTimeTimeLevyArea
from jaxtyping import Array, ArrayLike, PRNGKeyArray, PyTree

from ._brownian_draw import (
    MSG_CELL,
    MSG_POINT,
    MSG_RANGE,
    as_shape_tree,
    check_given,
    concrete,
    draw_noise,
)

__all__ = ["GridBrownianPath"]

_LEVY_TYPES = (BrownianIncrement, SpaceTimeLevyArea, SpaceTimeTimeLevyArea)


class GridBrownianPath(diffrax.AbstractBrownianPath):
    r"""A Brownian path known on a fixed grid, with every increment drawn at once.

    The grid is $t_k = t_0 + k\,(t_1 - t_0)/N$, $k = 0, \dots, N$ -- the same times that
    `diffrax.diffeqsolve(..., t0, t1, dt0=(t1 - t0)/N,
    stepsize_controller=diffrax.ConstantStepSize())` steps through. The increments
    $W(t_{k+1}) - W(t_k) \sim \mathcal{N}(0, (t_1 - t_0)/N)$ are independent, so this is
    an exact Brownian motion observed at the grid points. Use it as the control of a
    `diffrax.ControlTerm` in any diffrax code:

    ```python
    import diffrax, jax, jax.numpy as jnp, lineax as lx, ndes

    t0, t1, N = 0.0, 1.0, 50
    bm = ndes.GridBrownianPath(t0, t1, shape=(2,), key=jax.random.key(0), num_steps=N)
    drift = lambda t, y, args: -y
    diffusion = lambda t, y, args: lx.DiagonalLinearOperator(0.5 * y)  # diagonal noise
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
    sol = diffrax.diffeqsolve(terms, diffrax.Euler(), t0, t1, (t1 - t0) / N, jnp.ones(2))
    ```

    **Queries.** `evaluate(s, e)` must be exactly one grid cell (up to floating-point
    rounding of diffrax's step times: a tolerance of `tol` cells, at least 16 ulp of the
    largest time) or empty (`s == e`, which gives 0; `jax.vmap` of a solve runs such steps
    on finished lanes). Anything else -- a step from an adaptive controller, a `dt0` or
    `t0`/`t1` that do not match the grid, a `HalfSolver`'s half steps, a query outside
    `[t0, t1]` -- raises an `EqxRuntimeError` naming the fix. `evaluate(t)` gives $W(t)$ at
    a grid point (the cumulative sum of the increments). Backward-in-time solves
    (`t1 < t0` in `diffeqsolve`) work: diffrax queries the path with ordered times.

    **Checked once, not per step.** `path.for_solve(t0, t1, dt0, stepsize_controller,
    solver)` checks statically, when a solve is built, what makes every query a grid
    cell (raising the same messages), and returns a copy without the per-query check,
    which then only indexes; `ndes`'s SDE models do this for every fixed-step solve.

    **Lévy area.** `levy_area=diffrax.SpaceTimeLevyArea` also draws the space-time Lévy
    area $H_k \sim \mathcal{N}(0, h/12)$ of every cell (independent of the increment), as
    the stochastic Runge--Kutta solvers (`diffrax.ShARK`, `SRA1`, `SEA`, `GeneralShARK`,
    `SlowRK`) need; `diffrax.SpaceTimeTimeLevyArea` also draws $K_k \sim
    \mathcal{N}(0, h/720)$. A solver that needs more Lévy area than the path has raises
    diffrax's own error. The increments $W$ do not depend on `levy_area` (same key, same
    $W$).

    **Gradients.** The increments are constants (`lax.stop_gradient`): reverse- and
    forward-mode differentiation through a solve w.r.t. parameters and `y0` work as with
    any control; no gradient flows into the noise.

    **Determinism.** Same key, same `shape`, `num_steps` and dtype: same path.

    **Arguments:**

    - `t0`, `t1`: the interval, `t0 < t1` (scalars, may be traced when `num_steps` is
      given).
    - `shape`: the noise shape -- a tuple of ints (e.g. `(m,)` for `m` Brownian
      motions, `(B, m)` for a joint batch) or a PyTree of `jax.ShapeDtypeStruct`.
    - `key`: PRNG key; alternatively pass `increments`.
    - `num_steps`: number of grid cells `N` (static int). Give this or `dt`.
    - `dt`: the cell size; `t0`, `t1` must then be concrete and `(t1 - t0)/dt` an integer.
    - `levy_area`: `diffrax.BrownianIncrement` (default), `diffrax.SpaceTimeLevyArea` or
      `diffrax.SpaceTimeTimeLevyArea`.
    - `dtype`: floating dtype of the noise when `shape` is a tuple of ints (default: JAX's
      default float, i.e. float64 under `jax_enable_x64`). Use the dtype of the solve.
    - `increments`: instead of `key`, the increments themselves: a PyTree matching
      `shape` whose leaves have a leading axis of length `N` (cell `k` at index `k`).
    - `levy`: with `increments`, the Lévy areas: `H` (SpaceTimeLevyArea) or `(H, K)`
      (SpaceTimeTimeLevyArea), each shaped like `increments`.
    - `tol`: the accepted misalignment of a query, in cells (default `1e-3`); a floor of
      16 ulp of the largest time is always added.
    """

    t0: Array
    t1: Array
    increments: PyTree[Array]
    levy: PyTree[Array] | None
    num_steps: int = eqx.field(static=True)
    shape: PyTree[jax.ShapeDtypeStruct] = eqx.field(static=True)
    levy_area: type[BrownianIncrement | SpaceTimeLevyArea | SpaceTimeTimeLevyArea] = eqx.field(
        static=True
    )
    tol: float = eqx.field(static=True)
    check: bool = eqx.field(static=True)

    def __init__(
        self,
        t0: ArrayLike,
        t1: ArrayLike,
        shape: tuple[int, ...] | PyTree[jax.ShapeDtypeStruct],
        key: PRNGKeyArray | None = None,
        *,
        num_steps: int | None = None,
        dt: float | None = None,
        levy_area: type = BrownianIncrement,
        dtype=None,
        increments: PyTree[ArrayLike] | None = None,
        levy: PyTree[ArrayLike] | None = None,
        tol: float = 1e-3,
    ):
        if levy_area not in _LEVY_TYPES:
            raise ValueError(
                f"GridBrownianPath(levy_area={levy_area!r}) must be one of "
                "diffrax.BrownianIncrement, diffrax.SpaceTimeLevyArea, "
                "diffrax.SpaceTimeTimeLevyArea."
            )
        if not (isinstance(tol, numbers.Real) and 0 < tol < 0.5):
            raise ValueError(
                f"GridBrownianPath(tol={tol!r}) is a fraction of a cell and must lie in "
                "(0, 0.5); the default 1e-3 suits any grid."
            )
        a, b = concrete(t0), concrete(t1)
        if (num_steps is None) == (dt is None):
            raise ValueError(
                "GridBrownianPath: pass exactly one of num_steps=N (the number of grid cells) "
                "or dt=(t1 - t0)/N."
            )
        if dt is not None:
            if a is None or b is None:
                raise ValueError(
                    "GridBrownianPath(dt=...) needs concrete t0 and t1 to count the cells; "
                    "with traced times pass num_steps=N instead."
                )
            dtf = float(dt)
            n = round((b - a) / dtf) if dtf != 0 else 0
            if n < 1 or abs(n * dtf - (b - a)) > 1e-6 * abs(b - a):
                raise ValueError(
                    f"GridBrownianPath(dt={dtf}) must divide t1 - t0 = {b - a} into a whole "
                    "number of cells; pass num_steps=N and dt0=(t1 - t0)/N to diffeqsolve."
                )
            num_steps = n
        if not isinstance(num_steps, (int, np.integer)) or isinstance(num_steps, bool):
            raise TypeError(
                f"GridBrownianPath(num_steps={num_steps!r}) must be a Python int (it sets "
                "array shapes)."
            )
        if num_steps < 1:
            raise ValueError(f"GridBrownianPath(num_steps={num_steps}) must be >= 1.")
        if a is not None and b is not None and not a < b:
            raise ValueError(
                f"GridBrownianPath needs t0 < t1; got t0={a}, t1={b}. For a backward solve "
                "build the path over the forward interval (min, max)."
            )
        self.num_steps = int(num_steps)
        self.levy_area = levy_area
        self.tol = float(tol)
        self.check = True
        if increments is not None:
            if key is not None:
                raise ValueError("GridBrownianPath: pass `key` or `increments`, not both.")
            self.increments, self.levy, self.shape = check_given(
                increments, levy, levy_area, self.num_steps
            )
        else:
            if key is None:
                raise ValueError(
                    "GridBrownianPath needs `key` (e.g. jax.random.key(0)) or `increments`."
                )
            self.shape = as_shape_tree(shape, dtype)
            h = (jnp.asarray(t1) - jnp.asarray(t0)) / self.num_steps
            self.increments, self.levy = draw_noise(key, h, self.num_steps, self.shape, levy_area)
        tdtype = jnp.result_type(t0, t1)
        if not jnp.issubdtype(tdtype, jnp.floating):
            tdtype = jnp.zeros(()).dtype
        self.t0 = jnp.asarray(t0, tdtype)
        self.t1 = jnp.asarray(t1, tdtype)
        if a is not None and b is not None:
            eps = float(jnp.finfo(tdtype).eps)
            h = (b - a) / self.num_steps
            if 16 * eps * max(abs(a), abs(b)) > 0.25 * h:
                raise ValueError(
                    f"GridBrownianPath: cells of size {h:.3g} are too fine for {tdtype} times "
                    f"up to {max(abs(a), abs(b)):.3g} (rounding would misplace steps); use "
                    "fewer steps, shift t0 towards 0, or float64 times."
                )

    @property
    def dt(self) -> Array:
        """The cell size `(t1 - t0) / num_steps`."""
        return (self.t1 - self.t0) / self.num_steps

    @property
    def grid(self) -> Array:
        """The grid times, shape `(num_steps + 1,)`, computed as diffrax's
        `ConstantStepSize` computes its step times."""
        k = jnp.arange(self.num_steps + 1, dtype=self.t0.dtype)
        return self.t0 + (self.t1 - self.t0) * (k / self.num_steps)

    def _locate(self, s, qdtype):
        """Nearest grid index to `s` (unclipped), the grid origin and span in the working
        dtype, and the time tolerance (`tol` cells, at least 16 ulp of the largest time in
        the coarser of the query's and the path's dtypes)."""
        dtype = s.dtype
        t0 = self.t0.astype(dtype)
        span = (self.t1 - self.t0).astype(dtype)
        n = self.num_steps
        k = jnp.round((s - t0) * (n / span))
        eps = max(float(jnp.finfo(qdtype).eps), float(jnp.finfo(self.t0.dtype).eps))
        tmax = jnp.maximum(jnp.maximum(jnp.abs(t0), jnp.abs(self.t1.astype(dtype))), span / n)
        tol = jnp.maximum(self.tol * span / n, 16 * eps * tmax)
        return k, t0, span, tol

    def _grid_time(self, k, t0, span):
        # Exactly diffrax's ConstantStepSize formula: t0 + (t1 - t0) * (k / n).
        return t0 + span * (k / self.num_steps)

    def _checked_index(self, s, e, qdtype, empty):
        """The cell index of the query `[s, e]`, raising (traced) unless it is one grid
        cell, or empty, inside `[t0, t1]`."""
        k, g0, span, tol = self._locate(s, qdtype)
        n = self.num_steps
        out_of_range = (k < 0) | (k > n - 1)
        kc = jnp.clip(k, 0, n - 1)
        aligned = (jnp.abs(s - self._grid_time(kc, g0, span)) <= tol) & (
            jnp.abs(e - self._grid_time(kc + 1, g0, span)) <= tol
        )
        range_bad = (s < g0 - tol) | (e > g0 + span + tol)
        bad = ~empty & (range_bad | out_of_range | ~aligned)
        index = jnp.where(range_bad | (out_of_range & ~empty), 0, 1)
        ki = kc.astype(jnp.int32)
        return eqx.branched_error_if(ki, bad, index, (MSG_RANGE, MSG_CELL))

    def for_solve(
        self,
        t0: ArrayLike,
        t1: ArrayLike,
        dt0: ArrayLike | None,
        stepsize_controller: diffrax.AbstractStepSizeController,
        solver: diffrax.AbstractSolver,
        *,
        num_steps: int | None = None,
    ) -> GridBrownianPath:
        """Check once, when a solve is built, that every query it makes is a grid cell.

        For `diffrax.diffeqsolve(terms, solver, t0, t1, dt0, ...,
        stepsize_controller=stepsize_controller)` with this path in `terms`. Raises
        `ValueError` (with the fix) for what is statically wrong: an adaptive controller,
        a `HalfSolver`, concrete `t0`/`t1`/`dt0` off the grid. Returns a copy without the
        per-query traced checks when everything is verified: the controller is exactly
        `diffrax.ConstantStepSize`, `t0`/`t1` are the path's own (equal, or the very same
        traced arrays), and `dt0` is `(t1 - t0)/num_steps` (equal when concrete; a traced
        `dt0` is trusted when the caller passes `num_steps` equal to the path's, i.e.
        vouches that `dt0 = (t1 - t0)/num_steps`). Otherwise returns the path unchanged
        (checked per query). Solve with `max_steps=num_steps`, so that diffrax itself
        raises if rounding ever made the controller take more steps than the grid has.
        """
        if isinstance(stepsize_controller, diffrax.AbstractAdaptiveStepSizeController) or (
            isinstance(solver, diffrax.HalfSolver)
        ):
            raise ValueError(MSG_CELL)
        a, b, d = concrete(self.t0), concrete(self.t1), concrete(dt0)
        tol = None if a is None or b is None else self.tol * (b - a) / self.num_steps
        c0, c1 = concrete(t0), concrete(t1)
        if None not in (c0, c1, tol):
            lo, hi = min(c0, c1), max(c0, c1)  # a backward solve runs over the same grid
            if abs(lo - a) > tol or abs(hi - b) > tol:
                raise ValueError(MSG_RANGE)
            same = True
        else:
            same = {id(t0), id(t1)} == {id(self.t0), id(self.t1)}
        if d is not None and tol is not None:
            if abs(abs(d) - (b - a) / self.num_steps) > tol:
                raise ValueError(MSG_CELL)
            dt_ok = True
        else:
            dt_ok = dt0 is not None and num_steps == self.num_steps
        if type(stepsize_controller) is not diffrax.ConstantStepSize or not (same and dt_ok):
            return self
        out = copy.copy(self)
        object.__setattr__(out, "check", False)
        return out

    def evaluate(
        self,
        t0: ArrayLike,
        t1: ArrayLike | None = None,
        left: bool = True,
        use_levy: bool = False,
    ):
        """`W(t1) - W(t0)` for one grid cell `[t0, t1]` (or `W(t0)` at a grid point when
        `t1` is None); see the class docstring. With `use_levy=True` returns a
        `levy_area` instance (`dt`, `W`, and `H`/`K` as drawn)."""
        del left
        if t1 is None:
            if use_levy:
                raise ValueError(
                    "GridBrownianPath.evaluate(t0, use_levy=True) needs an interval: pass t1."
                )
            return self._point(t0)
        s = jax.lax.stop_gradient(jnp.asarray(t0))
        e = jax.lax.stop_gradient(jnp.asarray(t1))
        with jax.numpy_dtype_promotion("standard"):
            qdtype = jnp.result_type(s, e)
            dtype = jnp.result_type(qdtype, self.t0)
        if not jnp.issubdtype(qdtype, jnp.floating):
            qdtype = dtype
        s, e = s.astype(dtype), e.astype(dtype)
        n = self.num_steps
        empty = e == s
        if self.check:
            ki = self._checked_index(s, e, qdtype, empty)
        else:
            # A solve verified by `for_solve`: every query is a grid cell by construction.
            g0 = self.t0.astype(dtype)
            k = jnp.round((s - g0) * (n / (self.t1.astype(dtype) - g0)))
            ki = jnp.clip(k, 0, n - 1).astype(jnp.int32)

        def take(x):
            x = jax.lax.stop_gradient(x)
            v = jax.lax.dynamic_index_in_dim(x, ki, axis=0, keepdims=False)
            return jnp.where(empty, jnp.zeros_like(v), v)

        w = jtu.tree_map(take, self.increments)
        if not use_levy:
            return w
        dt = (e - s).astype(s.dtype)
        dts = jtu.tree_map(lambda _: dt, w)
        if self.levy_area is BrownianIncrement:
            return BrownianIncrement(dt=dts, W=w)
        if self.levy_area is SpaceTimeLevyArea:
            return SpaceTimeLevyArea(dt=dts, W=w, H=jtu.tree_map(take, self.levy))
        hh, kk = self.levy
        return SpaceTimeTimeLevyArea(
            dt=dts, W=w, H=jtu.tree_map(take, hh), K=jtu.tree_map(take, kk)
        )

    def _point(self, t):
        t = jax.lax.stop_gradient(jnp.asarray(t))
        qdtype = t.dtype if jnp.issubdtype(t.dtype, jnp.floating) else self.t0.dtype
        t = t.astype(jnp.result_type(qdtype, self.t0))
        k, g0, span, tol = self._locate(t, qdtype)
        n = self.num_steps
        kc = jnp.clip(k, 0, n)
        bad = (k < 0) | (k > n) | (jnp.abs(t - self._grid_time(kc, g0, span)) > tol)
        kc = eqx.error_if(kc, bad, MSG_POINT)
        mask_len = kc.astype(jnp.int32)

        def cum(x):
            x = jax.lax.stop_gradient(x)
            m = (jnp.arange(n) < mask_len).reshape((n,) + (1,) * (x.ndim - 1))
            return jnp.sum(jnp.where(m, x, 0), axis=0)

        return jtu.tree_map(cum, self.increments)
