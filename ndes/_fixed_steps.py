"""Fixed-step solves driven by `jax.lax.scan` instead of diffrax's `while_loop`.

A solve whose step count `n` is known when it is built (`diffrax.ConstantStepSize`,
`diffrax.StepTo`, the models' `num_steps`) does not need a loop that tests a condition
every step: `ScanAdjoint(n)` hands diffrax's own solve loop
(`diffrax.AbstractAdjoint._loop`, the hook diffrax gives every adjoint) a `lax.scan` of
exactly `n` iterations of diffrax's own step body, each under `jax.checkpoint`. Everything
diffrax does around the loop -- time dtypes, the direction of integration, the wrapped terms,
`solver.init`, the controller (including ndes's counting controller), saving `t0`/`t1`, the
final `max_steps` check, `stats` -- is diffrax's, so `ys` are bitwise those of
`diffrax.RecursiveCheckpointAdjoint(checkpoints=n)` with `max_steps=n`, and so is the memory:
one stored state per step, each step's forward pass recomputed in the backward pass.

Semantics kept: a step taken after the solve has stopped (it reached `t1`, or the solver
failed) leaves the state unchanged (a select on diffrax's own loop condition), and diffrax's
check after the loop still reports `max_steps_reached` if `n` steps did not reach `t1`.

Valid (see `scan_problem`): `diffrax.ConstantStepSize` or `diffrax.StepTo`, no event,
`SaveAt` without `ts`, `steps` or `dense` (those write into buffers that a scan would carry
and checkpoint every step), and no `diffrax.UnsafeBrownianPath`.
"""

from __future__ import annotations

import numbers

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

__all__ = ["ScanAdjoint", "fixed_step_count", "scan_problem"]


def _concrete_scalar(x) -> np.ndarray | None:
    try:
        arr = np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None
    return arr if arr.shape == () and np.issubdtype(arr.dtype, np.number) else None


def fixed_step_count(stepsize_controller, t0, t1, dt0) -> int | None:
    """The number of steps diffrax's loop takes, when it is known when the solve is built:
    `len(ts) - 1` for `StepTo(ts)`; for `ConstantStepSize` with concrete `t0`, `t1`, `dt0`,
    `ceil(|t1 - t0| / nextafter(|dt0|))` in the solve's time dtype, as
    `diffrax.ConstantStepSize.init` computes it. `None` otherwise (adaptive controllers,
    traced times, an infinite `t1`)."""
    if type(stepsize_controller) is diffrax.StepTo:
        return int(np.shape(stepsize_controller.ts)[0]) - 1
    if type(stepsize_controller) is not diffrax.ConstantStepSize or dt0 is None:
        return None
    vals = [_concrete_scalar(x) for x in (t0, t1, dt0)]
    if any(v is None for v in vals):
        return None
    dtype = jnp.result_type(t0, t1, dt0)  # weak Python floats as diffrax types them
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    dtype = np.dtype(jax.dtypes.canonicalize_dtype(dtype))
    a, b, d = (np.asarray(v, dtype) for v in vals)
    if not (np.isfinite(a) and np.isfinite(b) and np.isfinite(d)) or d == 0:
        return None
    q = np.abs(b - a) / np.nextafter(np.abs(d), np.asarray(np.inf, dtype))
    n = int(np.ceil(q))
    return n if n >= 1 else None


def _no_inner_loop(*args, **kwargs):  # SaveAt(ts=...) is refused (`scan_problem`)
    raise AssertionError("ScanAdjoint does not support SaveAt(ts=...)")


def _select(pred, new, old):
    def pick(a, b):
        if isinstance(a, jax.Array) or isinstance(b, jax.Array):
            return jnp.where(pred, a, b)
        return a

    return jtu.tree_map(pick, new, old)


class ScanAdjoint(diffrax.AbstractAdjoint):
    """Differentiate a fixed-step solve of `num_steps` steps through a `jax.lax.scan` of
    diffrax's own step, instead of diffrax's `while_loop`.

    Opt-in: pass `adjoint=ndes.ScanAdjoint(n)` to `ndes.diffeqsolve` (or to a model whose
    solve is valid for it, e.g. a fixed-step `NeuralCDE`). With `checkpoint=True` it gives
    the same solve as diffrax's checkpointed loop in a smaller traced program, but measured
    no faster, so ndes does not switch to it by itself; `checkpoint=False` trades memory
    for speed (measurements in docs/benchmarks.md).

    **Arguments:**

    - `num_steps`: the number of steps of the solve (a Python `int` >= 1); it also bounds
      them, as `max_steps` does: if `num_steps` steps do not reach `t1`, `result` is
      `max_steps_reached`. Steps beyond the solve's own count are computed and discarded (a
      select on diffrax's loop condition): give the exact count, or pay for the extras.
    - `checkpoint`: `True` (default) wraps every step in `jax.checkpoint`: the memory of
      `diffrax.RecursiveCheckpointAdjoint(checkpoints=num_steps)` (one stored state per
      step, the step recomputed in the backward pass). `False` stores every step's
      residuals instead (more memory; faster on some problems and slower on others -- see
      docs/benchmarks.md).

    **Same solve.** Everything around the loop (time dtypes, direction, wrapped terms,
    `solver.init`, the step-size controller, saving `t0`/`t1`, `stats`) is diffrax's; only
    the loop differs, so `ys` and the step counts are bitwise those of
    `RecursiveCheckpointAdjoint(checkpoints=num_steps)` with `max_steps=num_steps` (tested
    for eight explicit Runge--Kutta solvers and three SDE solvers; gradients equal to
    rounding).

    **Valid with:** `diffrax.ConstantStepSize` or `diffrax.StepTo`; no `event`; a `SaveAt`
    without `ts`, `steps` or `dense` (saving `t0`, `t1`, `solver_state`, ... is fine: what is
    saved during the loop would be carried and checkpointed every step); no
    `diffrax.UnsafeBrownianPath`; `max_steps` `None` or >= `num_steps`. `ndes.diffeqsolve`
    raises a `ValueError` naming the clash otherwise.
    """

    num_steps: int = eqx.field(static=True)
    checkpoint: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        n = self.num_steps
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(
                f"ScanAdjoint(num_steps={n!r}): num_steps must be a Python int >= 1, the "
                "number of steps of the fixed-step solve."
            )
        if not isinstance(self.checkpoint, bool):
            raise TypeError(f"ScanAdjoint(checkpoint={self.checkpoint!r}) must be True or False.")

    def loop(
        self,
        *,
        terms,
        saveat,
        init_state,
        max_steps,
        throw,
        passed_solver_state,
        passed_controller_state,
        **kwargs,
    ):
        del throw, passed_solver_state, passed_controller_state
        n = int(self.num_steps)

        def outer_while_loop(cond_fun, body_fun, init_val, *, max_steps, buffers):
            del max_steps, buffers  # nothing is saved inside the loop (see `scan_problem`)

            def step(state, _):
                return _select(cond_fun(state), body_fun(state), state), None

            if self.checkpoint:
                step = jax.checkpoint(step)
            final, _ = jax.lax.scan(step, init_val, None, length=n)
            return final

        return self._loop(
            terms=terms,
            saveat=saveat,
            init_state=init_state,
            max_steps=max_steps,
            inner_while_loop=_no_inner_loop,
            outer_while_loop=outer_while_loop,
            **kwargs,
        )


def _unsafe_brownian(terms) -> bool:
    is_path = lambda x: isinstance(x, diffrax.UnsafeBrownianPath)  # noqa: E731
    return any(is_path(x) for x in jtu.tree_leaves(terms, is_leaf=is_path))


def _saves_in_loop(saveat: diffrax.SaveAt) -> bool:
    if saveat.dense:
        return True
    is_sub = lambda x: isinstance(x, diffrax.SubSaveAt)  # noqa: E731
    return any(s.ts is not None or s.steps for s in jtu.tree_leaves(saveat.subs, is_leaf=is_sub))


def scan_problem(
    num_steps: int, *, stepsize_controller, saveat, event, terms, max_steps
) -> str | None:
    """Why a scan of `num_steps` steps cannot stand for diffrax's loop here; `None` if it can."""
    if type(stepsize_controller) not in (diffrax.ConstantStepSize, diffrax.StepTo):
        name = type(stepsize_controller).__name__
        return f"needs diffrax.ConstantStepSize() or diffrax.StepTo(ts), not {name}"
    if max_steps is not None and max_steps < num_steps:
        return f"takes num_steps={num_steps} steps, more than max_steps={max_steps}"
    if event is not None:
        return "does not support an event"
    if _saves_in_loop(saveat):
        return "does not support SaveAt(ts=...), SaveAt(steps=True) or SaveAt(dense=True)"
    if _unsafe_brownian(terms):
        return "cannot differentiate through diffrax.UnsafeBrownianPath"
    return None
