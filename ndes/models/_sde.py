"""NeuralSDE: drift and diffusion networks solved by `ndes.diffeqsolve`, batched per sample or
jointly, with the Brownian motion chosen for the step-size controller."""

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
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._brownian import GridBrownianPath
from .._solve import diffeqsolve
from ..regularizers import AbstractLocalRegularizer
from ._mlp import MLPVectorField
from ._ode import (
    ModelOutput,
    as_regularizers,
    check_batch_mode,
    check_field_state,
    check_increasing,
    per_trajectory_regularizers,
    stats_of,
)

__all__ = [
    "NeuralSDE",
    "check_sde_solver",
    "default_tree_tol",
    "solve_sde",
    "SDE_TYPES",
    "NOISE_TYPES",
]

NoiseType = Literal["diagonal", "general"]
SDEType = Literal["ito", "stratonovich"]
BrownianKind = Literal["auto", "grid", "tree"]
NOISE_TYPES = ("diagonal", "general")
SDE_TYPES = ("ito", "stratonovich")
_BROWNIAN = ("auto", "grid", "tree")


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


def _is_additive_only(solver) -> bool:
    """Stochastic Runge--Kutta methods whose tableau assumes additive noise (ShARK, SRA1, SEA)."""
    tableau = getattr(solver, "tableau", None)
    return isinstance(solver, diffrax.AbstractSRK) and bool(tableau.is_additive_noise())


def check_sde_solver(solver, sde_type: str, additive: bool, owner: str) -> None:
    """Static check that `solver` converges to the `sde_type` solution.

    Itô and Stratonovich agree for additive noise, so then any SDE solver is accepted.
    """
    if sde_type not in SDE_TYPES:
        raise ValueError(f"{owner}(sde_type={sde_type!r}) must be 'ito' or 'stratonovich'.")
    ito = isinstance(solver, diffrax.AbstractItoSolver)
    strat = isinstance(solver, diffrax.AbstractStratonovichSolver)
    if not (ito or strat):
        raise ValueError(
            f"{owner}: {type(solver).__name__} is not an SDE solver. Use diffrax.Euler() or "
            "diffrax.ItoMilstein() (Itô), or diffrax.Heun(), diffrax.EulerHeun(), "
            "diffrax.ReversibleHeun(), diffrax.SPaRK() (Stratonovich)."
        )
    if _is_additive_only(solver) and not additive:
        raise ValueError(
            f"{owner}: {type(solver).__name__} is only correct for additive noise (a "
            "diffusion that does not depend on the state); use diffrax.Heun() or "
            "diffrax.GeneralShARK() (Stratonovich) or diffrax.Euler() (Itô)."
        )
    if additive:
        return
    if sde_type == "ito" and not ito:
        raise ValueError(
            f"{owner}(sde_type='ito'): {type(solver).__name__} converges to the Stratonovich "
            "solution. Use diffrax.Euler() or diffrax.ItoMilstein(), or pass "
            "sde_type='stratonovich'."
        )
    if sde_type == "stratonovich" and not strat:
        raise ValueError(
            f"{owner}(sde_type='stratonovich'): {type(solver).__name__} converges to the Itô "
            "solution. Use diffrax.Heun(), diffrax.EulerHeun(), diffrax.ReversibleHeun(), "
            "diffrax.StratonovichMilstein() or diffrax.SPaRK(), or pass sde_type='ito'."
        )


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


class _JointDrift(eqx.Module):
    field: Callable

    def __call__(self, t, y, args):
        return jax.vmap(self.field, in_axes=(None, 0, None))(t, y, args)


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


def solver_options(model) -> dict[str, Any]:
    """The solve settings every SDE model stores under the same names, as `solve_sde`
    keyword arguments: solver, controller, step size / count, Brownian choice, max steps."""
    return dict(
        solver=model.solver,
        stepsize_controller=model.stepsize_controller,
        dt0=model.dt0,
        num_steps=model.num_steps,
        brownian=model.brownian,
        brownian_tol=model.brownian_tol,
        max_steps=model.max_steps,
    )


def solve_sde(
    drift: Callable,
    diffusion: Callable,
    ts: Array,
    y0: Array,
    key: PRNGKeyArray,
    *,
    owner: str,
    noise: str,
    noise_size: int,
    solver: diffrax.AbstractSolver,
    stepsize_controller: diffrax.AbstractStepSizeController,
    dt0: float | None,
    num_steps: int | None,
    brownian: str,
    brownian_tol: float | None,
    adjoint: diffrax.AbstractAdjoint | None,
    max_steps: int | None,
    batch_mode: str,
    regularizers: Sequence,
    train_step,
    args,
    joint_drift: Callable | None = None,
    sample_drift: Callable | None = None,
    sample_data: Any = None,
) -> ModelOutput:
    """Solve `dy = drift dt + diffusion dW` from `y0` at `ts[0]`, saving at `ts`.

    The shared engine of `NeuralSDE` and the stable classes; see `NeuralSDE` for the
    meaning of every argument. For a batch `y0` of shape `(B, n)`:

    - `joint_drift`, if given, is used as-is on the `(B, n)` state in joint mode (instead
      of vmapping `drift` over rows);
    - `sample_drift(data_b)`, if given, builds sample `b`'s drift in vmap mode from
      `data_b`, the slice `b` of `sample_data` (a PyTree whose leaves have a leading batch
      axis, e.g. a batch of control paths).

    Fixed-step solves draw one `GridBrownianPath` of noise shape `(B, m)` from `key`;
    sample `b` sees its column `b` in both batch modes. Returns `ys` of shape `(T, n)` or
    `(B, T, n)`.
    """
    t0, t1 = ts[0], ts[-1]
    adaptive = isinstance(stepsize_controller, diffrax.AbstractAdaptiveStepSizeController)
    kind = brownian
    if kind == "auto":
        kind = "tree" if adaptive else "grid"
    if kind == "grid" and adaptive:
        raise ValueError(
            f"{owner}(brownian='grid') needs a constant step size (every step must be one "
            "cell of the Brownian grid); with an adaptive stepsize_controller use "
            "brownian='tree' (diffrax.VirtualBrownianTree) or brownian='auto'."
        )
    if kind == "grid":
        for r in as_regularizers(regularizers):
            if isinstance(r, AbstractLocalRegularizer) and r.sampling != "biased":
                raise ValueError(
                    f"{owner}: {type(r).__name__}(sampling={r.sampling!r}) takes its extra "
                    "step from a uniformly drawn time, off the fixed Brownian grid "
                    "(ndes.GridBrownianPath answers whole grid cells only); pass "
                    "sampling='biased' (the start of a solver step) or brownian='tree'."
                )
    batch = None if y0.ndim == 1 else y0.shape[0]
    dtype = y0.dtype
    levy_area = _levy_area_for(solver)
    n = None
    if kind == "grid":
        n = _num_steps(dt0, t0, t1, num_steps, owner)
        step = (t1 - t0) / n
    elif not adaptive and num_steps is not None:
        n = num_steps
        step = (t1 - t0) / num_steps
    else:
        step = dt0
        if step is None and not adaptive:
            raise ValueError(f"{owner}: a constant step size needs dt0 or num_steps.")
    if adjoint is None:
        # A known number of steps: checkpoint every step, i.e. store what a lax.scan stores
        # and recompute nothing on the backward pass (measured 1.2-1.4x faster train steps
        # than diffrax's default O(sqrt(max_steps)) checkpoints; benchmarks/sde_speed.py).
        adjoint = diffrax.RecursiveCheckpointAdjoint(checkpoints=n)

    def tree(k, shape):
        tol = brownian_tol
        if tol is None:
            tol = default_tree_tol(stepsize_controller, step, t1 - t0)
        return diffrax.VirtualBrownianTree(
            t0, t1, tol=tol, shape=jax.ShapeDtypeStruct(shape, dtype), key=k, levy_area=levy_area
        )

    def solve(drift_f, diff_f, y, bm, regs):
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift_f), diffrax.ControlTerm(diff_f, bm))
        return diffeqsolve(
            terms,
            solver,
            t0,
            t1,
            step,
            y,
            args,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=stepsize_controller,
            adjoint=adjoint,
            max_steps=max_steps,
            regularizers=regs,
            train_step=train_step,
        )

    noise_shape = (noise_size,) if batch is None else (batch, noise_size)
    grid = None
    if kind == "grid":
        grid = GridBrownianPath(
            t0, t1, noise_shape, key, num_steps=n, dtype=dtype, levy_area=levy_area
        )
    if batch is None:
        regs = per_trajectory_regularizers(regularizers, None, owner)
        bm = grid if grid is not None else tree(key, noise_shape)
        sol = solve(drift, _Diffusion(diffusion, noise, False, noise_size), y0, bm, regs)
        return ModelOutput(sol.ys, sol.penalty, dict(sol.penalty_terms), stats_of(sol))
    if batch_mode == "joint":
        regs = per_trajectory_regularizers(regularizers, batch, owner)
        sol = solve(
            _JointDrift(drift) if joint_drift is None else joint_drift,
            _Diffusion(diffusion, noise, True, noise_size),
            y0,
            grid if grid is not None else tree(key, noise_shape),
            regs,
        )
        ys = jnp.swapaxes(sol.ys, 0, 1)
        return ModelOutput(ys, sol.penalty, dict(sol.penalty_terms), stats_of(sol))
    regs = per_trajectory_regularizers(regularizers, None, owner)
    if grid is not None:
        # Sample b gets column b of the joint noise: (N, B, m) -> B paths of (N, m).
        noise_b = jax.tree_util.tree_map(
            lambda x: jnp.swapaxes(x, 0, 1), (grid.increments, grid.levy)
        )
    else:
        noise_b = jr.split(key, batch)

    def one(y, nb, data):
        if grid is not None:
            incs, levy = nb
            bm = GridBrownianPath(
                t0, t1, None, num_steps=n, levy_area=levy_area, increments=incs, levy=levy
            )
        else:
            bm = tree(nb, (noise_size,))
        f = drift if sample_drift is None else sample_drift(data)
        sol = solve(f, _Diffusion(diffusion, noise, False, noise_size), y, bm, regs)
        return sol.ys, sol.penalty, dict(sol.penalty_terms), stats_of(sol)

    ys, pen, terms, stats = jax.vmap(one)(y0, noise_b, sample_data)
    terms = {k: jnp.mean(v) for k, v in terms.items()}
    return ModelOutput(ys, jnp.mean(pen), terms, stats)


def check_sde_config(
    owner,
    noise,
    noise_size,
    brownian,
    brownian_tol,
    batch_mode,
    dt0,
    num_steps,
    stepsize_controller,
):
    check_batch_mode(batch_mode, owner)
    if noise not in NOISE_TYPES:
        raise ValueError(
            f"{owner}(noise={noise!r}) must be 'diagonal' (one Brownian motion per state "
            "component, diffusion returns (n,)) or 'general' (diffusion returns (n, m))."
        )
    if noise == "general" and (noise_size is None or noise_size < 1):
        raise ValueError(
            f"{owner}(noise='general') needs noise_size=m >= 1, the number of Brownian motions."
        )
    if brownian not in _BROWNIAN:
        raise ValueError(
            f"{owner}(brownian={brownian!r}) must be 'auto' (grid for constant steps, tree "
            "for adaptive), 'grid' (ndes.GridBrownianPath) or 'tree' "
            "(diffrax.VirtualBrownianTree)."
        )
    if brownian_tol is not None and not brownian_tol > 0:
        raise ValueError(f"{owner}(brownian_tol={brownian_tol}) must be > 0 or None.")
    if num_steps is not None and (not isinstance(num_steps, int) or num_steps < 1):
        raise ValueError(f"{owner}(num_steps={num_steps!r}) must be an int >= 1 or None.")
    adaptive = isinstance(stepsize_controller, diffrax.AbstractAdaptiveStepSizeController)
    if not adaptive and dt0 is None and num_steps is None:
        raise ValueError(
            f"{owner}: with {type(stepsize_controller).__name__} pass num_steps=N (N equal "
            "steps over [ts[0], ts[-1]]) or dt0."
        )
    if adaptive and num_steps is not None:
        raise ValueError(
            f"{owner}(num_steps=...) sets a constant step; with an adaptive "
            "stepsize_controller pass dt0 (initial step) or None instead."
        )


class NeuralSDE(eqx.Module):
    r"""A neural SDE $\mathrm{d}y = f_\theta(t, y)\,\mathrm{d}t + g_\theta(t, y)\,\mathrm{d}W_t$
    solved by `ndes.diffeqsolve`, so every regularizer and counter applies.

    **Noise.** `noise="diagonal"`: $g_\theta(t, y)$ has shape `(n,)` and multiplies an
    `n`-dimensional $W$ elementwise. `noise="general"`: $g_\theta(t, y)$ has shape `(n, m)`
    and $W$ is `m`-dimensional (`noise_size=m`).

    **Itô or Stratonovich** (`sde_type`): the solver must converge to that solution --
    Itô: `diffrax.Euler` (Euler--Maruyama), `diffrax.ItoMilstein`; Stratonovich:
    `diffrax.Heun`, `EulerHeun`, `ReversibleHeun`, `StratonovichMilstein`, `SPaRK`,
    `GeneralShARK`, `SlowRK`. A mismatch raises `ValueError` (for `additive=True`, where the
    two agree, any SDE solver is accepted, including `ShARK`, `SRA1`, `SEA`).

    **Brownian motion** (`brownian="auto"`): a constant step size uses
    `ndes.GridBrownianPath` -- all increments of the step grid drawn at once, the speed of a
    hand-written `lax.scan` loop; an adaptive controller uses `diffrax.VirtualBrownianTree`
    with `tol = brownian_tol` or, by default, a quarter of the finest step scale the
    controller's `rtol` implies (`default_tree_tol`; measured cost grows linearly with
    `log2(span/tol)`, see docs/sde.md). Lévy area is drawn when the solver asks for it.

    **Determinism.** Given `key`, the output is deterministic. On fixed-step solves a batch
    draws one `GridBrownianPath` of noise shape `(B, m)` from `key` and sample `b` is driven
    by its column `b` in *both* batch modes, so joint and vmap give the same `ys` to
    rounding. (Adaptive solves use one tree of shape `(B, m)` in joint mode and one tree per
    sample, keys `jax.random.split(key, B)`, in vmap mode, so the two modes see different
    noise.)

    **Batch modes** (for `y0` of shape `(B, n)`):

    - `"joint"` (default): the batch is one state `(B, n)`: drift and diffusion MLPs run on
      the whole batch at once and all trajectories share the steps. Fastest for fixed-step
      training on CPU (`benchmarks/sde_speed.py`: at batch 256, 50 Euler--Maruyama steps,
      joint ≈ 2x faster per train step than vmap; provisional, see docs/sde.md).
    - `"vmap"`: per-sample solves; each trajectory gets its own adaptive steps. Wins under an
      adaptive controller when trajectories differ a lot in difficulty (in a joint solve the
      hardest sets the step for all).

    Regularizers mean the same per-trajectory quantity in both modes: joint mode sets
    `batch_axis=0` on `ErrorEstimate`/`StiffnessEstimate` (error norms per trajectory, then
    the batch mean), regularizers without `batch_axis` are refused in joint mode. Under an
    adaptive controller the joint solve still shares steps chosen from the whole batch's
    error. Step regularizers need a solver with an error estimate (`Heun`, `SPaRK`, ...);
    on fixed steps pass their tolerances (`ErrorEstimate(w, rtol=..., atol=...)`). Local
    regularizers (`LocalErrorEstimate`, ...) on the fixed grid need `sampling="biased"`
    (their extra step then is a grid cell); `"unbiased"` needs `brownian="tree"`.

    **Arguments:**

    - `drift`: `f(t, y, args) -> (n,)` on one state `y` of shape `(n,)` (e.g.
      `MLPVectorField`).
    - `diffusion`: `g(t, y, args) -> (n,)` (diagonal) or `(n, m)` (general).
    - `noise`: `"diagonal"` (default) or `"general"`; `noise_size`: `m` (general only).
    - `sde_type`: `"ito"` (default) or `"stratonovich"`.
    - `additive`: `True` if `g` does not depend on `y` (then Itô = Stratonovich).
    - `solver`: a diffrax SDE solver (default `diffrax.Euler()`).
    - `stepsize_controller`: default `diffrax.ConstantStepSize()`.
    - `num_steps`: number of equal steps over `[ts[0], ts[-1]]` for a constant step size
      (static; works with traced `ts`). Alternatively `dt0` with concrete `ts`.
    - `dt0`: fixed step (concrete `ts`) or the adaptive controller's initial step.
    - `brownian`: `"auto"`, `"grid"` or `"tree"`; `brownian_tol`: the tree's tolerance.
    - `adjoint`: as in `diffrax.diffeqsolve`; default `None` picks
      `diffrax.RecursiveCheckpointAdjoint(checkpoints=N)` for `N` fixed steps (every step
      checkpointed, as a `lax.scan` stores; memory `O(N)` states, no recomputation) and
      `diffrax.RecursiveCheckpointAdjoint()` for adaptive solves.
    - `max_steps`: as in `diffrax.diffeqsolve`.
    - `batch_mode`: `"joint"` or `"vmap"`.

    **Reference:** Kidger, "On Neural Differential Equations", 2021, ch. 4 (neural SDEs).
    """

    drift: Callable
    diffusion: Callable
    noise: NoiseType = eqx.field(default="diagonal", static=True)
    noise_size: int | None = eqx.field(default=None, static=True)
    sde_type: SDEType = eqx.field(default="ito", static=True)
    additive: bool = eqx.field(default=False, static=True)
    solver: diffrax.AbstractSolver = diffrax.Euler()
    stepsize_controller: diffrax.AbstractStepSizeController = diffrax.ConstantStepSize()
    num_steps: int | None = eqx.field(default=None, static=True)
    dt0: float | None = eqx.field(default=None, static=True)
    brownian: BrownianKind = eqx.field(default="auto", static=True)
    brownian_tol: float | None = eqx.field(default=None, static=True)
    adjoint: diffrax.AbstractAdjoint | None = None
    max_steps: int | None = eqx.field(default=4096, static=True)
    batch_mode: str = eqx.field(default="joint", static=True)

    def __check_init__(self):
        check_sde_config(
            "NeuralSDE",
            self.noise,
            self.noise_size,
            self.brownian,
            self.brownian_tol,
            self.batch_mode,
            self.dt0,
            self.num_steps,
            self.stepsize_controller,
        )
        check_sde_solver(self.solver, self.sde_type, self.additive, "NeuralSDE")
        milstein = (diffrax.ItoMilstein, diffrax.StratonovichMilstein)
        if self.noise == "general" and self.noise_size > 1 and isinstance(self.solver, milstein):
            raise ValueError(
                f"NeuralSDE: {type(self.solver).__name__} assumes commutative noise, which a "
                "general (n, m) diffusion with noise_size > 1 need not have; use "
                "noise='diagonal', or diffrax.Euler() (Itô) / diffrax.Heun() or "
                "diffrax.GeneralShARK() (Stratonovich)."
            )

    @classmethod
    def mlp(
        cls,
        state_size: int,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        noise: NoiseType = "diagonal",
        noise_size: int | None = None,
        time_input: bool = False,
        activation: Callable = jax.nn.softplus,
        diffusion_activation: Callable = jax.nn.sigmoid,
        dtype=None,
        **kwargs: Any,
    ) -> "NeuralSDE":
        """A `NeuralSDE` with `MLPVectorField` drift and diffusion.

        The diffusion MLP ends in `diffusion_activation` (default `sigmoid`, so
        $g \\in (0, 1)$, bounded as in the stable-SDE literature); general noise gives it
        output shape `(state_size, noise_size)`. `kwargs` go to `NeuralSDE`.
        """
        kd, kg = jr.split(key)
        drift = MLPVectorField(
            state_size,
            width,
            depth,
            key=kd,
            time_input=time_input,
            activation=activation,
            dtype=dtype,
        )
        out_shape = (state_size,) if noise == "diagonal" else (state_size, noise_size or 0)
        if noise == "general" and not noise_size:
            raise ValueError("NeuralSDE.mlp(noise='general') needs noise_size=m >= 1.")
        diffusion = MLPVectorField(
            state_size,
            width,
            depth,
            key=kg,
            time_input=time_input,
            activation=activation,
            final_activation=diffusion_activation,
            out_shape=out_shape,
            dtype=dtype,
        )
        return cls(
            drift,
            diffusion,
            noise=noise,
            noise_size=noise_size if noise == "general" else None,
            **kwargs,
        )

    def __call__(
        self,
        ts: Float[ArrayLike, " T"],
        y0: Float[ArrayLike, " n"] | Float[ArrayLike, "B n"],
        *,
        key: PRNGKeyArray,
        regularizers: Sequence = (),
        train_step: ArrayLike | None = None,
        args: Any = None,
    ) -> ModelOutput:
        """Sample the SDE from `y0` at `ts[0]` and return the states at every time in `ts`.

        **Arguments:**

        - `ts`: shape `(T,)`, strictly increasing, shared by the batch.
        - `y0`: `(n,)` or `(B, n)` (solved according to `batch_mode`).
        - `key`: PRNG key of the Brownian motion (the output is deterministic given it).
        - `regularizers`, `train_step`: as in `ndes.diffeqsolve`.
        - `args`: passed to drift and diffusion.

        **Returns:** a `ModelOutput` with `ys` of shape `(T, n)` or `(B, T, n)`.
        """
        ts, y0 = _check_inputs(ts, y0, "NeuralSDE")
        check_field_state(self.drift, ts[0], y0, args, "NeuralSDE", "drift")
        check_field_state(self.diffusion, ts[0], y0, args, "NeuralSDE", "diffusion", False)
        n = y0.shape[-1]
        m = n if self.noise == "diagonal" else self.noise_size
        return solve_sde(
            self.drift,
            self.diffusion,
            ts,
            y0,
            key,
            owner="NeuralSDE",
            noise=self.noise,
            noise_size=m,
            **solver_options(self),
            adjoint=self.adjoint,
            batch_mode=self.batch_mode,
            regularizers=regularizers,
            train_step=train_step,
            args=args,
        )


def _check_inputs(ts, y0, owner):
    ts = jnp.asarray(ts)
    y0 = jnp.asarray(y0)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(
            f"{owner}: `ts` must have shape (T,) with T >= 2 (the initial time first); got "
            f"shape {ts.shape}."
        )
    if y0.ndim not in (1, 2):
        raise ValueError(f"{owner}: `y0` must have shape (n,) or (B, n); got shape {y0.shape}.")
    if not jnp.issubdtype(y0.dtype, jnp.floating):
        y0 = y0.astype(float)
    ts = check_increasing(ts, "ts", owner)
    return ts, y0
