"""`ndes.diffeqsolve`: a drop-in replacement for `diffrax.diffeqsolve` with regularizers."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import ArrayLike, PyTree

from ._counting import CountState, feval_cost, make_counting_controller
from ._fixed_steps import ScanAdjoint, scan_problem
from ._solution import Solution
from .regularizers import Problem
from .regularizers._augment import Augmentation, ProjectedHook
from .regularizers._local import local_step_values, make_sampler, step_evaluations
from .regularizers._mechanisms import Mechanisms, Regularizer
from .regularizers._wrapped_solver import regularized_solver

__all__ = ["diffeqsolve", "supports_feval_count"]


def supports_feval_count(solver, terms, t0=0.0, t1=1.0, y0=None, args=None) -> bool:
    """Whether `ndes.diffeqsolve` reports an exact `stats["num_fevals"]` for this solver.

    **Arguments:** `solver` and `terms` as they would be passed to `ndes.diffeqsolve`
    (the answer depends on them: explicit Runge--Kutta methods with one Butcher tableau,
    `Euler`, `EulerHeun`, `ReversibleHeun`, additive-noise SRKs such as `ShARK` and `SRA1`,
    and `diffrax.HalfSolver` around any of these are counted exactly). `t0`, `t1`, `y0`,
    `args` (defaults `0.0`, `1.0`, `None`, `None`) are handed to the terms'
    `is_vf_expensive` check, which decides the first-same-as-last cost of a Runge--Kutta
    step, not whether counting is exact; pass the solve's own when at hand.

    **Returns:** a Python `bool`.
    """
    return feval_cost(solver, terms, t0, t1, y0, args) is not None


def _unique_names(regs) -> list[str]:
    names, seen = [], {}
    for r in regs:
        n = r.name
        k = seen.get(n, 0)
        names.append(n if k == 0 else f"{n}_{k}")
        seen[n] = k + 1
    return names


def _concrete_float(x) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, numbers.Real):
        return float(x)
    if isinstance(x, np.ndarray | jax.Array) and not isinstance(x, jax.core.Tracer):
        if x.shape == () and jnp.issubdtype(x.dtype, jnp.number):
            return float(x)
    return None


def _check_times(t0, t1, dt0):
    """Static checks of `dt0` (when concrete); returns `dt0`, with a run-time check that it is
    non-zero when it is traced."""
    a, b, d = _concrete_float(t0), _concrete_float(t1), _concrete_float(dt0)
    if d is not None and (d == 0 or not math.isfinite(d)):
        raise ValueError(
            f"dt0={d} must be a finite, non-zero initial step size with the sign of t1 - t0 "
            "(e.g. dt0=0.1 for t1 > t0), or dt0=None to let an adaptive controller choose; a "
            "zero step never advances the solve."
        )
    if a is not None and b is not None and d is not None and (b - a) * d < 0:
        raise ValueError(
            f"dt0={d} points away from t1: with t0={a} and t1={b} it must have the sign of "
            f"t1 - t0 (use dt0={-d}), or dt0=None to let the controller choose."
        )
    if dt0 is not None and d is None and isinstance(dt0, jax.Array):
        dt0 = eqx.error_if(
            dt0,
            jnp.any(dt0 == 0),
            "dt0 is 0: a zero initial step size never advances the solve; pass a non-zero "
            "dt0 with the sign of t1 - t0, or dt0=None to let an adaptive controller choose.",
        )
    return dt0


def _fsal_first_step_flag(solver_state) -> Any:
    # diffrax's FSAL Runge--Kutta state is `(first_step, f0)`; anything else has no pending
    # first stage to track (its cost model has `first_stage == 0`).
    if isinstance(solver_state, tuple) and len(solver_state) == 2:
        flag = solver_state[0]
        if jnp.result_type(flag) == jnp.bool_:
            return flag
    return True


def _failed(result, ys) -> Any:
    """Whether the solve failed: `result` is an error, or a saved state is NaN. (Saved
    states the solve never reached, e.g. after an event, are +-inf, not NaN.)"""
    failed = jnp.invert(diffrax.is_okay(result))
    for leaf in jtu.tree_leaves(ys):
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            failed = failed | jnp.any(jnp.isnan(leaf))
    return failed


def _is_none(x) -> bool:
    return x is None


def _y_dtype(y0):
    leaves = [jnp.asarray(x) for x in jtu.tree_leaves(y0)]
    if not leaves:
        return jnp.result_type(float)
    dtype = jnp.result_type(*leaves)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    return dtype


def diffeqsolve(
    terms: PyTree[diffrax.AbstractTerm],
    solver: diffrax.AbstractSolver,
    t0: ArrayLike,
    t1: ArrayLike,
    dt0: ArrayLike | None,
    y0: PyTree[ArrayLike],
    args: PyTree[Any] = None,
    *,
    saveat: diffrax.SaveAt = diffrax.SaveAt(t1=True),
    stepsize_controller: diffrax.AbstractStepSizeController = diffrax.ConstantStepSize(),
    adjoint: diffrax.AbstractAdjoint = diffrax.RecursiveCheckpointAdjoint(),
    event: diffrax.Event | None = None,
    max_steps: int | None = 4096,
    throw: bool = True,
    progress_meter: diffrax.AbstractProgressMeter = diffrax.NoProgressMeter(),
    solver_state: PyTree[ArrayLike] | None = None,
    controller_state: PyTree[ArrayLike] | None = None,
    made_jump: ArrayLike | None = None,
    regularizers: Sequence[Regularizer] | Regularizer = (),
    train_step: ArrayLike | None = None,
) -> Solution:
    """Solve a differential equation exactly as `diffrax.diffeqsolve` does, and also return
    a differentiable regularization penalty and exact cost counters.

    Every argument of `diffrax.diffeqsolve` is accepted with the same meaning. Without
    regularizers, `ys` and the step counts are bitwise identical to diffrax's; with
    regularizers, the accepted/rejected step sequence and `ys` are still identical (the
    regularizers only read what the solver computes anyway).

    **Arguments passed through to `diffrax.diffeqsolve`** (same meaning and defaults; see
    diffrax's docstring for the detail):

    - `terms`: the terms of the equation, e.g. `diffrax.ODETerm(f)` with
      `f(t, y, args) -> dy/dt`, or a `diffrax.MultiTerm` of drift and diffusion for an SDE.
    - `solver`: the solver, e.g. `diffrax.Tsit5()`; `stats["num_fevals"]` is exact for the
      solvers `ndes.supports_feval_count` accepts and absent otherwise.
    - `t0`, `t1`: start and end of the integration (in the units of the vector field's
      `t`); `t1 < t0` integrates backwards. `RandomEndTime` replaces `t1` by a sampled end
      time, and the returned `Solution.t1` is that sampled time.
    - `dt0`: the first step size (every step's for a constant step size), with the sign of
      `t1 - t0`; `None` lets an adaptive controller choose. Checked here (see Raises).
    - `y0`: the initial state, any PyTree of arrays; the penalty has the floating dtype of
      its leaves (the default float if none is floating).
    - `args`: extra arguments passed to the vector field (default `None`).
    - `saveat`: which times to save (default `diffrax.SaveAt(t1=True)`); `ys`, `ts` and a
      dense `interpolation` hold the user's state only (no integral-regularizer
      accumulators); `solver_state` / `controller_state` are returned only when requested
      here, with ndes's own bookkeeping removed.
    - `stepsize_controller`: step-size control (default `diffrax.ConstantStepSize()`);
      e.g. `diffrax.PIDController(rtol=1e-3, atol=1e-6)`. With integral regularizers
      their accumulators are excluded from its error norm (supported for
      `diffrax.PIDController`, optionally inside `diffrax.ClipStepSizeController`, and
      non-adaptive controllers).
    - `adjoint`: how to differentiate (default `diffrax.RecursiveCheckpointAdjoint()`;
      see Gradients below); `ndes.ScanAdjoint(n)` for a fixed-step solve of `n` steps.
    - `event`: a `diffrax.Event` that stops the solve early (default `None`).
    - `max_steps`: the most steps before the solve fails (default 4096); `None` for no
      limit (not with `SaveAt(steps=True)` or `SaveAt(dense=True)`).
    - `throw`: raise on a failed solve (default `True`); with `False` inspect `result`
      (and see Returns for the penalty of a failed solve).
    - `progress_meter`: a `diffrax.AbstractProgressMeter` (default none).
    - `solver_state`, `controller_state`, `made_jump`: state from a previous solve (from
      `SaveAt(solver_state=True)` etc.) to continue it; default `None`. The FSAL cost of
      the first step is counted accordingly.

    **Arguments (beyond diffrax's):**

    - `regularizers`: a tuple of ndes regularizers, in any combination, e.g.
      `(ndes.ErrorEstimate(1e-2), ndes.StiffnessEstimate(1e-3))`. Four kinds reach into the
      solve differently: per-step estimates (`ErrorEstimate`, `StiffnessEstimate`) read every
      accepted step; local estimates (`LocalErrorEstimate`, `LocalStiffnessEstimate`) record
      the state at one sampled time and take one extra step after the solve; integral
      penalties (`KineticEnergy`, `JacobianFrobenius`, `TaylorDerivative`) are integrated as
      extra state that takes no part in step-size control; `RandomEndTime` perturbs `t1`.
      Pass `regularizers=()` to switch them all off (e.g. for evaluation).
    - `train_step`: the optimiser step count; needed when a regularizer's weight is a
      schedule (e.g. `optax.exponential_decay(...)`).

    **Returns:** an `ndes.Solution`: a `diffrax.Solution` with `penalty` (scalar, weighted
    sum), `penalty_terms` (name -> unweighted value) and `stats["num_fevals"]` (which
    includes the extra step of the local regularizers). With local regularizers, also
    `stats["local_sample_time"]` and `stats["local_step_size"]` (the sampled time and the
    step size of the extra step). Every penalty is non-negative and the same for a
    backward solve (`t1 < t0`) as for its forward mirror. When the solve fails
    (`throw=False` and `result` is an error -- neither successful nor an event -- or a
    saved state is NaN), `penalty` and every `penalty_terms` value are NaN instead of the
    partial sum (which would often be 0 and pass for cheap dynamics).

    **Gradients.** The penalty is differentiated through the accepted steps with the step
    sizes treated as constants (diffrax's controller stops gradients through them), as in
    Pal et al. 2021. Use `adjoint=diffrax.RecursiveCheckpointAdjoint()` (default) or
    `diffrax.DirectAdjoint()`; `diffrax.BacksolveAdjoint` cannot differentiate the
    accumulated penalty and is refused when regularizers are given.

    **Raises:** `ValueError` / `TypeError` for bad input, each naming the argument and the
    fix (e.g. a `dt0` that is 0, non-finite or points away from `t1`; a traced `dt0` of 0
    raises at run time through `eqx.error_if`; an `ndes.ScanAdjoint` with an adaptive
    controller, an event, `SaveAt(ts=...)`/`steps`/`dense`, or more steps than `max_steps`);
    diffrax's own errors otherwise.
    """
    kinds = Mechanisms.of(regularizers)
    dt0 = _check_times(t0, t1, dt0)
    problem = Problem(
        terms,
        solver,
        t0,
        t1,
        y0,
        args,
        saveat,
        stepsize_controller,
        adjoint,
        event,
        solver_state,
        controller_state,
    )
    kinds = kinds.bind(problem)
    step_regs, local_regs = kinds.step, kinds.local
    penalised = kinds.penalised
    weights = [r.resolve_weight(train_step) for r in penalised]

    cost = feval_cost(solver, terms, t0, t1, y0, args)
    dtype = _y_dtype(y0)

    # 1. STEER: a random end time.
    run_t1 = t1 if kinds.end is None else kinds.end.end_time(t0, t1)

    # 2. Per-step hooks: the step regularizers, and the sampler of the local regularizers.
    hooks: list = list(step_regs)
    if local_regs:
        sampler, direction = make_sampler(local_regs, t0, run_t1, y0)
        hooks.append(sampler)

    # 3. Integral regularizers: augment the state.
    run_terms, run_y0, run_controller, run_saveat = terms, y0, stepsize_controller, saveat
    augmentation = None
    if kinds.integral:
        augmentation = Augmentation(kinds.integral)
        run_terms, run_y0, run_controller, run_saveat = augmentation.problem(
            terms, y0, stepsize_controller, saveat, t0, run_t1
        )
        hooks = [ProjectedHook(h) for h in hooks]

    run_solver = solver
    if hooks:
        if (
            isinstance(adjoint, diffrax.DirectAdjoint)
            and isinstance(solver, diffrax.AbstractRungeKutta)
            and solver.scan_kind is None
        ):
            # What DirectAdjoint does to a bare Runge--Kutta solver (so that forward-mode
            # autodiff works); it cannot reach through our wrapper, so do it here.
            solver = eqx.tree_at(lambda s: s.scan_kind, solver, "bounded", is_leaf=_is_none)
        run_solver = regularized_solver(solver, hooks)
    run_solver_state = solver_state
    if hooks and solver_state is not None:
        run_solver_state = (solver_state, tuple(h.init(dtype) for h in hooks))

    pending0 = True if solver_state is None else _fsal_first_step_flag(solver_state)
    if made_jump is not None:
        pending0 = jnp.logical_or(pending0, made_jump)
    if cost is not None:
        controller = make_counting_controller(run_controller, cost, pending0)
        run_controller_state = controller_state
        if controller_state is not None:
            n = jnp.zeros(len(cost.per_attempt), jnp.int32)
            run_controller_state = CountState(controller_state, n, jnp.asarray(pending0))
    else:
        controller = run_controller
        run_controller_state = controller_state

    run_saveat = eqx.tree_at(
        lambda s: (s.solver_state, s.controller_state),
        run_saveat,
        (
            bool(saveat.solver_state) or bool(hooks),
            bool(saveat.controller_state) or cost is not None,
        ),
    )

    if isinstance(adjoint, ScanAdjoint):
        why = scan_problem(
            adjoint.num_steps,
            stepsize_controller=stepsize_controller,
            saveat=run_saveat,
            event=event,
            terms=terms,
            max_steps=max_steps,
        )
        if why is not None:
            raise ValueError(
                f"adjoint=ndes.ScanAdjoint({adjoint.num_steps}) {why}; use "
                "adjoint=diffrax.RecursiveCheckpointAdjoint() for this solve."
            )
    sol = diffrax.diffeqsolve(
        run_terms,
        run_solver,
        t0,
        run_t1,
        dt0,
        run_y0,
        args,
        saveat=run_saveat,
        stepsize_controller=controller,
        adjoint=adjoint,
        event=event,
        max_steps=max_steps,
        throw=throw,
        progress_meter=progress_meter,
        solver_state=run_solver_state,
        controller_state=run_controller_state,
        made_jump=made_jump,
    )

    stats = dict(sol.stats)
    out_controller_state = sol.controller_state
    counts = None
    if cost is not None:
        counts = sol.controller_state.num_fevals
        out_controller_state = sol.controller_state.inner

    out_solver_state = sol.solver_state
    values: list = []
    if hooks:
        results = run_solver.finalize(sol.solver_state)
        out_solver_state = sol.solver_state[0]
        values.extend(results[: len(step_regs)])
    if local_regs:
        local_values, t_s, h = local_step_values(
            local_regs, problem, results[-1], solver, direction
        )
        values.extend(local_values)
        stats["local_sample_time"] = t_s
        stats["local_step_size"] = h
        if counts is not None:
            counts = counts + jnp.asarray(step_evaluations(cost), counts.dtype)
    ts, ys, interpolation = sol.ts, sol.ys, sol.interpolation
    if augmentation is not None:
        ts, ys, interpolation, integral_values = augmentation.split(sol)
        values.extend(integral_values)
    if counts is not None:
        stats["num_fevals"] = jnp.sum(counts)
        if len(cost.per_attempt) > 1:
            stats["num_fevals_per_term"] = counts

    if values:
        # A failed solve (diffrax's `result` not okay, e.g. max_steps reached after every
        # step was rejected) or a NaN state has no meaningful penalty: report NaN rather
        # than the partial (often 0) sum, so that the failure cannot pass for cheap dynamics.
        failed = _failed(sol.result, ys)
        values = [jnp.where(failed, jnp.nan, v) for v in values]
    penalty_terms: dict[str, Any] = {}
    penalty = jnp.zeros((), dtype)
    for name, w, v in zip(_unique_names(penalised), weights, values, strict=True):
        penalty_terms[name] = v
        penalty = penalty + (w * v).astype(dtype)

    return Solution(
        t0=sol.t0,
        t1=sol.t1,
        ts=ts,
        ys=ys,
        interpolation=interpolation,
        stats=stats,
        result=sol.result,
        solver_state=out_solver_state if saveat.solver_state else None,
        controller_state=out_controller_state if saveat.controller_state else None,
        made_jump=sol.made_jump,
        event_mask=sol.event_mask,
        penalty=penalty,
        penalty_terms=penalty_terms,
    )
