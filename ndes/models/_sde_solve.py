"""The SDE engine shared by `NeuralSDE`, the stable SDEs and `LatentSDE`: the Brownian
motion chosen for the step-size controller, and `solve_sde` (the static checks of an SDE
model's settings are in `_sde_checks.py`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from .._brownian import GridBrownianPath
from ..regularizers import AbstractLocalRegularizer
from ._common import JointField, ModelOutput, SolverSettings, as_regularizers, solve_batch

__all__ = ["SDESettings", "default_tree_tol", "solve_sde"]

BrownianKind = Literal["auto", "grid", "tree"]


# Measured by `benchmarks/sde_speed.py --tol-sweep` (see docs/sde.md): the cost of a
# VirtualBrownianTree query grows linearly in log2((t1 - t0) / tol) -- each halving of
# `tol` adds one bisection level to every query. A finer tree than the smallest step the
# controller takes buys nothing, so the default is a fraction of the step scale the
# requested accuracy implies (rtol times the interval, as a strong order-1 adaptive solver
# with local error ~ h^1.5 takes steps no smaller than ~rtol^(2/3) (t1 - t0) >> rtol (t1 - t0)).
_TREE_TOL_FLOOR = 2.0**-20  # relative to t1 - t0: never more than 20 levels by default


def default_tree_tol(stepsize_controller, dt0, span) -> float | Array:
    """Default `VirtualBrownianTree` tolerance for a solve over `span = t1 - t0`.

    `tol = span * max(min(rtol, 0.1) / 4, 2**-20)` for a `PIDController` (a quarter of the
    step scale `rtol * span`; `1e-2` stands in for `rtol` with other controllers), capped
    by `|dt0| / 4` and by `dtmin / 2` when those are set. Finer trees cost one bisection
    level per halving of `tol` on every query (measured: docs/sde.md) and buy nothing once
    `tol` is below the steps the controller takes.
    """
    ctrl = stepsize_controller
    if isinstance(ctrl, diffrax.ClipStepSizeController):
        ctrl = ctrl.controller
    rel = 1e-2
    if isinstance(ctrl, diffrax.PIDController):
        rel = min(float(np.min(np.asarray(ctrl.rtol))), 1e-1)
    tol = span * max(rel / 4, _TREE_TOL_FLOOR)
    if dt0 is not None:
        tol = jnp.minimum(tol, jnp.abs(dt0) / 4)
    if isinstance(ctrl, diffrax.PIDController) and ctrl.dtmin is not None:
        tol = jnp.minimum(tol, float(ctrl.dtmin) / 2)
    return tol


def _levy_area_for(solver) -> type:
    minimal = getattr(solver, "minimal_levy_area", diffrax.BrownianIncrement)
    if issubclass(diffrax.BrownianIncrement, minimal):
        return diffrax.BrownianIncrement
    if issubclass(diffrax.SpaceTimeLevyArea, minimal):
        return diffrax.SpaceTimeLevyArea
    return diffrax.SpaceTimeTimeLevyArea


def _num_steps(dt0, t0, t1, num_steps, owner):
    """Static number of fixed steps: `num_steps`, or `(t1 - t0)/dt0` when all are concrete."""
    if num_steps is not None:
        return int(num_steps)
    try:
        span = float(np.asarray(t1) - np.asarray(t0))
        d = float(np.asarray(dt0))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        raise ValueError(
            f"{owner}: with a constant step size and traced `ts` (e.g. inside jax.jit) the "
            "number of steps must be static: pass num_steps=N instead of dt0."
        ) from None
    n = round(span / d)
    if n < 1 or abs(n * d - span) > 1e-6 * abs(span):
        raise ValueError(
            f"{owner}: dt0={d} does not divide ts[-1] - ts[0] = {span} into whole steps, as "
            "a fixed-step solve on the Brownian grid needs; pass num_steps=N (then "
            "dt0 = (ts[-1] - ts[0]) / N)."
        )
    return n


class _Diffusion(eqx.Module):
    """Wraps a per-sample diffusion `g(t, y, args)` for `diffrax.ControlTerm`.

    Diagonal: `g` returns `(n,)`, wrapped as `lineax.DiagonalLinearOperator` (elementwise
    product with `dW`). General: `g` returns `(n, m)`, a matrix acting on `dW` of shape
    `(m,)`. Joint mode applies `g` to every row of the `(B, n)` state at once.
    """

    field: Callable
    noise: str = eqx.field(static=True)
    joint: bool = eqx.field(static=True)
    noise_size: int = eqx.field(static=True)

    def __call__(self, t, y, args):
        if self.joint:
            g = jax.vmap(self.field, in_axes=(None, 0, None))(t, y, args)
        else:
            g = self.field(t, y, args)
        if self.noise == "diagonal":
            if g.shape != y.shape:
                raise ValueError(
                    f"NeuralSDE(noise='diagonal'): the diffusion must return the state's shape "
                    f"{y.shape[-1:]} per sample; got {g.shape[-1:] if g.ndim else g.shape}. For "
                    "a matrix diffusion pass noise='general' and noise_size=m."
                )
            return lx.DiagonalLinearOperator(g)
        expected = y.shape + (self.noise_size,)
        if g.shape != expected:
            raise ValueError(
                f"NeuralSDE(noise='general'): the diffusion must return shape "
                f"{expected[-2:]} (state, noise_size) per sample; got {g.shape}."
            )
        if not self.joint:
            return lx.MatrixLinearOperator(g)
        struct = jax.ShapeDtypeStruct(y.shape[:-1] + (self.noise_size,), g.dtype)
        return lx.FunctionLinearOperator(lambda w: jnp.einsum("bnm,bm->bn", g, w), struct)


class SDESettings(eqx.Module):
    """What an SDE solve needs beyond `SolverSettings` (all static):

    - `num_steps`: number of equal steps over `[ts[0], ts[-1]]` for a constant step size
      (works with traced `ts`); `None` to use `dt0`.
    - `brownian`: `"auto"` (grid for constant steps, tree for adaptive), `"grid"`
      (`ndes.GridBrownianPath`) or `"tree"` (`diffrax.VirtualBrownianTree`).
    - `brownian_tol`: the tree's tolerance; `None` picks `default_tree_tol`.
    """

    num_steps: int | None = eqx.field(default=None, static=True)
    brownian: BrownianKind = eqx.field(default="auto", static=True)
    brownian_tol: float | None = eqx.field(default=None, static=True)


def _stepping(settings, sde, t0, t1, owner):
    """The Brownian kind, the number of fixed steps `n` (or None), the step passed as `dt0`
    and the adjoint of a solve over `[t0, t1]`."""
    adaptive = settings.adaptive
    kind = sde.brownian
    if kind == "auto":
        kind = "tree" if adaptive else "grid"
    if kind == "grid" and adaptive:
        raise ValueError(
            f"{owner}(brownian='grid') needs a constant step size (every step must be one "
            "cell of the Brownian grid); with an adaptive stepsize_controller use "
            "brownian='tree' (diffrax.VirtualBrownianTree) or brownian='auto'."
        )
    n = None
    if kind == "grid":
        n = _num_steps(settings.dt0, t0, t1, sde.num_steps, owner)
        step = (t1 - t0) / n
    elif not adaptive and sde.num_steps is not None:
        n = sde.num_steps
        step = (t1 - t0) / sde.num_steps
    else:
        step = settings.dt0
        if step is None and not adaptive:
            raise ValueError(f"{owner}: a constant step size needs dt0 or num_steps.")
    adjoint = settings.adjoint
    if adjoint is None:
        # A known number of steps: checkpoint every step, i.e. store what a lax.scan stores
        # and recompute nothing on the backward pass (measured: docs/sde.md).
        adjoint = diffrax.RecursiveCheckpointAdjoint(checkpoints=n)
    return kind, n, step, adjoint


def _check_grid_regularizers(regularizers, owner):
    for r in as_regularizers(regularizers):
        if isinstance(r, AbstractLocalRegularizer) and r.sampling != "biased":
            raise ValueError(
                f"{owner}: {type(r).__name__}(sampling={r.sampling!r}) takes its extra "
                "step from a uniformly drawn time, off the fixed Brownian grid "
                "(ndes.GridBrownianPath answers whole grid cells only); pass "
                "sampling='biased' (the start of a solver step) or brownian='tree'."
            )


def solve_sde(
    drift: Callable,
    diffusion: Callable,
    ts: Array,
    y0: Array,
    key: PRNGKeyArray,
    *,
    settings: SolverSettings,
    sde: SDESettings,
    noise: str,
    noise_size: int,
    owner: str,
    regularizers: Sequence = (),
    train_step=None,
    args=None,
    joint_drift: Callable | None = None,
    sample_drift: Callable | None = None,
    sample_data: Any = None,
    final_only: bool = False,
) -> ModelOutput:
    """Solve `dy = drift dt + diffusion dW` from `y0` at `ts[0]`, saving at `ts`.

    The shared engine of `NeuralSDE`, the stable classes and `LatentSDE`; see `NeuralSDE`
    for the meaning of `settings`, `sde`, `noise` and `noise_size` (`m`). For a batch `y0`
    of shape `(B, n)`, solved by `settings.batch_mode`:

    - `joint_drift`, if given, is used as-is on the `(B, n)` state in joint mode (instead
      of `JointField(drift)`);
    - `sample_drift(data_b)`, if given, builds sample `b`'s drift in vmap mode from
      `data_b`, the slice `b` of `sample_data` (a PyTree whose leaves have a leading batch
      axis, e.g. a batch of control paths).

    Fixed-step solves draw one `GridBrownianPath` of noise shape `(B, m)` from `key`;
    sample `b` sees its column `b` in both batch modes. Returns `ys` of shape `(T, n)` or
    `(B, T, n)`; with `final_only`, only the state at `ts[-1]` is saved (`T = 1`: what a
    classifier reads; nothing is interpolated or stored during the solve, and a fixed-step
    solve can then take `adjoint=ndes.ScanAdjoint(n)`).
    """
    t0, t1 = ts[0], ts[-1]
    kind, n, step, adjoint = _stepping(settings, sde, t0, t1, owner)
    if kind == "grid":
        _check_grid_regularizers(regularizers, owner)
    batch = None if y0.ndim == 1 else y0.shape[0]
    dtype = y0.dtype
    levy_area = _levy_area_for(settings.solver)

    def tree(k, shape):
        tol = sde.brownian_tol
        if tol is None:
            tol = default_tree_tol(settings.stepsize_controller, step, t1 - t0)
        return diffrax.VirtualBrownianTree(
            t0, t1, tol=tol, shape=jax.ShapeDtypeStruct(shape, dtype), key=k, levy_area=levy_area
        )

    noise_shape = (noise_size,) if batch is None else (batch, noise_size)
    grid = None
    # Checked once here, not on every query: the solve below steps through exactly the
    # path's grid (constant steps (t1 - t0)/n from the path's own t0, t1; max_steps=n makes
    # diffrax raise should rounding ever ask for a step more). Local regularizers take an
    # extra step outside the loop: their queries keep the traced check.
    trust = kind == "grid" and not any(
        isinstance(r, AbstractLocalRegularizer) for r in as_regularizers(regularizers)
    )

    def checked(path):
        if not trust:
            return path
        return path.for_solve(
            path.t0, path.t1, step, settings.stepsize_controller, settings.solver, num_steps=n
        )

    if kind == "grid":
        grid = GridBrownianPath(
            t0, t1, noise_shape, key, num_steps=n, dtype=dtype, levy_area=levy_area
        )
        t0, t1 = grid.t0, grid.t1
        step = (t1 - t0) / n

    def solve(y, regs, joint, data):
        if batch is None or joint:
            bm = checked(grid) if grid is not None else tree(key, noise_shape)
            f = drift
            if joint:
                f = JointField(drift) if joint_drift is None else joint_drift
        else:
            nb, d = data
            if grid is not None:
                incs, levy = nb
                bm = checked(
                    GridBrownianPath(
                        t0, t1, None, num_steps=n, levy_area=levy_area, increments=incs, levy=levy
                    )
                )
            else:
                bm = tree(nb, (noise_size,))
            f = drift if sample_drift is None else sample_drift(d)
        g = _Diffusion(diffusion, noise, joint, noise_size)
        terms = diffrax.MultiTerm(diffrax.ODETerm(f), diffrax.ControlTerm(g, bm))
        return settings.diffeqsolve(
            terms,
            t0,
            t1,
            y,
            args,
            saveat=diffrax.SaveAt(t1=True) if final_only else diffrax.SaveAt(ts=ts),
            regularizers=regs,
            train_step=train_step,
            dt0=step,
            adjoint=adjoint,
            num_steps=n,
        )

    data = None
    if batch is not None and settings.batch_mode == "vmap":
        if grid is not None:
            # Sample b gets column b of the joint noise: (N, B, m) -> B paths of (N, m).
            noise_b = jax.tree_util.tree_map(
                lambda x: jnp.swapaxes(x, 0, 1), (grid.increments, grid.levy)
            )
        else:
            noise_b = jr.split(key, batch)
        data = (noise_b, sample_data)
    return solve_batch(solve, y0, batch, settings.batch_mode, regularizers, owner, data)
