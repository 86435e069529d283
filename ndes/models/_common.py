"""The plumbing every model is built on: output type, solver settings, input checks, batching.

A model owns only what makes it different -- its networks, its terms (`ODETerm`,
`MultiTerm(ODETerm, ControlTerm)`, an augmented state, ...) and what it reads out -- and
takes the rest from here:

- `ModelOutput`: what a model call returns (outputs, penalty, penalty terms, counters).
- `SolverSettings`: solver, step-size controller, adjoint, `dt0`, `max_steps`,
  `batch_mode` as one module; `settings.diffeqsolve(terms, t0, t1, y0, ...)` calls
  `ndes.diffeqsolve` with them. Every model stores one under `settings` and builds it with
  `settings_from(defaults, settings, options, owner)`, so its constructor takes either
  `settings=SolverSettings(...)` or the flat keywords (`solver=...`, `batch_mode=...`), and
  `dataclasses.replace(model, batch_mode="vmap")` works.
- `check_inputs(ts, y0, owner)`: `ts` of shape `(T,)`, `T >= 2`, strictly increasing;
  `y0` of shape `(n,)` or `(B, n)`; `check_field_state` traces a field once on one state.
- `solve_batch(solve, y0, batch_size, settings, regularizers, owner)`: one state, a joint
  batch or a vmapped batch. `solve(y, regularizers, joint, data)` returns an
  `ndes.Solution`; the model wraps its per-sample field in `JointField` when `joint` is
  true. The result has `ys` batch first, `(B, T, ...)`, in both batch modes.

A new model (a CNF on the augmented state `(z, log p)`, a reverse-time SDE, a
probability-flow ODE) writes its per-sample field `f(t, y, args)` on one state -- a PyTree
is fine -- and a `solve` closure; see docs/architecture.md, "Model plumbing".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree

from .._fixed_steps import fixed_step_count
from .._solve import diffeqsolve
from ..regularizers import AbstractEndTime, AbstractRegularizer
from ._mlp import MLPVectorField

__all__ = [
    "BatchMode",
    "ModelOutput",
    "SolverSettings",
    "settings_from",
    "JointField",
    "solve_batch",
    "check_inputs",
    "check_increasing",
    "check_field_state",
    "per_trajectory_regularizers",
    "as_regularizers",
    "stats_of",
    "fixed_step_count",
]

BatchMode = Literal["joint", "vmap"]
BATCH_MODES = ("joint", "vmap")


class ModelOutput(eqx.Module):
    """What a model call returns: its outputs plus the penalty and the solver's counters.

    A small module rather than an `ndes.Solution`: a joint solve stores its states as
    `(times, batch, ...)` and a vmapped solve as `(batch, times, ...)`, and a classifier's
    output is not a trajectory at all. This gives every model and batch mode one layout.

    **Fields:**

    - `ys`: the model's outputs (`NeuralODE`: states at `ts`, shape `(T, n)` or `(B, T, n)`;
      `NeuralCDE`: readout of the final hidden state, `(out,)` or `(B, out)`).
    - `penalty`: scalar, the weighted regularization penalty, averaged over the batch.
    - `penalty_terms`: name -> unweighted regularizer value, averaged over the batch.
    - `stats`: the solve's counters (`num_fevals`, `num_steps`, `num_accepted_steps`,
      `num_rejected_steps`). A joint solve gives scalars counting evaluations of the vector
      field on the whole batch; vmap mode gives one value per trajectory, shape `(B,)`.
    - `final_state`: the hidden state at the end of the solve (`(H,)` or `(B, H)`) for
      `NeuralCDE` and the stable SDEs; `None` for `NeuralODE`.
    """

    ys: PyTree[Array]
    penalty: Float[Array, ""]
    penalty_terms: dict[str, Float[Array, ""]]
    stats: dict[str, Array]
    final_state: Array | None = None


def _float_or_none(x):
    return None if x is None else float(x)


class SolverSettings(eqx.Module):
    """How a model's differential equation is solved: one module for every model.

    **Fields:**

    - `solver`: a diffrax solver.
    - `stepsize_controller`: a diffrax step-size controller.
    - `adjoint`: a diffrax adjoint; `None` lets the model choose (the SDEs checkpoint every
      fixed step, see `ndes.NeuralSDE`).
    - `dt0`: initial (adaptive) or fixed (`ConstantStepSize`) step, in the model's time
      units; `None` lets an adaptive controller pick it. Static (a hyperparameter), stored
      as a Python float.
    - `max_steps`: as in `diffrax.diffeqsolve` (static).
    - `batch_mode`: `"joint"` (the batch is one state with shared steps) or `"vmap"` (one
      solve per sample), static.
    """

    solver: diffrax.AbstractSolver
    stepsize_controller: diffrax.AbstractStepSizeController
    adjoint: diffrax.AbstractAdjoint | None
    dt0: float | None = eqx.field(static=True, converter=_float_or_none)
    max_steps: int | None = eqx.field(static=True)
    batch_mode: BatchMode = eqx.field(static=True)

    @property
    def adaptive(self) -> bool:
        """Whether the controller chooses the steps (`AbstractAdaptiveStepSizeController`)."""
        return isinstance(self.stepsize_controller, diffrax.AbstractAdaptiveStepSizeController)

    def check(self, owner: str, fixed_step_hint: str | None = None) -> None:
        """Static checks naming the model: `batch_mode` is known; with `fixed_step_hint`,
        a constant step size needs `dt0` (the hint says what to pass)."""
        if self.batch_mode not in BATCH_MODES:
            raise ValueError(
                f"{owner}(batch_mode={self.batch_mode!r}) must be one of {BATCH_MODES}: 'joint' "
                "solves the batch as one state with shared steps, 'vmap' solves each sample "
                "separately."
            )
        if fixed_step_hint is not None and self.dt0 is None and not self.adaptive:
            raise ValueError(
                f"{owner}: dt0=None needs an adaptive stepsize_controller; with "
                f"{type(self.stepsize_controller).__name__} {fixed_step_hint}."
            )

    def diffeqsolve(
        self,
        terms: PyTree,
        t0: ArrayLike,
        t1: ArrayLike,
        y0: PyTree[Array],
        args: Any,
        *,
        saveat: diffrax.SaveAt,
        regularizers: Sequence = (),
        train_step: ArrayLike | None = None,
        dt0: Any = dataclasses.MISSING,
        adjoint: Any = dataclasses.MISSING,
        num_steps: int | None = None,
    ):
        """`ndes.diffeqsolve` with these settings; `dt0`/`adjoint` override the stored ones
        (the SDEs pass a step derived from `num_steps` and their adjoint default).

        A solve whose step count is known when it is built -- `num_steps` given (a
        constant step `(t1 - t0)/num_steps`, traced times), or `fixed_step_count` finds it
        (`ConstantStepSize` with concrete `t0`, `t1`, `dt0`; `StepTo`) -- runs with
        `max_steps` equal to that count and, for `RecursiveCheckpointAdjoint()` without
        `checkpoints`, one checkpoint per step: diffrax's loop then stores each step's state
        as a `lax.scan` does and takes its no-recomputation path (`checkpoints ==
        max_steps`). A smaller stored `max_steps` is kept; `RandomEndTime` (whose end time
        moves) keeps the stored settings. (`ndes.ScanAdjoint(count)`, which drives the same
        step from a `lax.scan`, measured no faster with checkpoints, so it is opt-in.)
        """
        dt0 = self.dt0 if dt0 is dataclasses.MISSING else dt0
        adjoint = self.adjoint if adjoint is dataclasses.MISSING else adjoint
        max_steps = self.max_steps
        moves_end = any(isinstance(r, AbstractEndTime) for r in as_regularizers(regularizers))
        if num_steps is None:
            num_steps = fixed_step_count(self.stepsize_controller, t0, t1, dt0)
        if num_steps is not None and not moves_end:
            if max_steps is None or max_steps >= num_steps:
                max_steps = num_steps
            if type(adjoint) is diffrax.RecursiveCheckpointAdjoint and adjoint.checkpoints is None:
                adjoint = diffrax.RecursiveCheckpointAdjoint(checkpoints=max_steps)
        return diffeqsolve(
            terms,
            self.solver,
            t0,
            t1,
            dt0,
            y0,
            args,
            saveat=saveat,
            stepsize_controller=self.stepsize_controller,
            adjoint=adjoint,
            max_steps=max_steps,
            regularizers=regularizers,
            train_step=train_step,
        )


_SETTING_NAMES = tuple(f.name for f in dataclasses.fields(SolverSettings))


def settings_from(
    defaults: Mapping[str, Any],
    settings: SolverSettings | None,
    options: Mapping[str, Any],
    owner: str,
) -> SolverSettings:
    """A model's `SolverSettings`: `settings` (or `defaults`), with `options` -- the flat
    keywords the model's constructor received (`solver=`, `batch_mode=`, ...) -- replacing
    single fields. Unknown keywords raise a `TypeError` naming them."""
    unknown = sorted(set(options) - set(_SETTING_NAMES))
    if unknown:
        raise TypeError(
            f"{owner}() got unexpected keyword argument(s) {unknown}; the solver settings are "
            f"{list(_SETTING_NAMES)}."
        )
    base = dict(defaults) if settings is None else {k: getattr(settings, k) for k in _SETTING_NAMES}
    base.update(options)
    return SolverSettings(**base)


def as_regularizers(regularizers) -> tuple:
    if isinstance(regularizers, eqx.Module):
        return (regularizers,)
    return tuple(regularizers)


def per_trajectory_regularizers(regularizers, batch_size: int | None, owner: str) -> tuple:
    """Every regularizer's `per_trajectory(batch_size)`: per-trajectory means over a joint
    batch (`batch_size` given) or a single trajectory (per-sample solves, `None`).

    Anything that is not an ndes regularizer cannot be made a per-trajectory quantity, so it
    is refused in joint mode (`ndes.diffeqsolve` refuses it in any mode).
    """
    out = []
    for r in as_regularizers(regularizers):
        if isinstance(r, AbstractRegularizer | AbstractEndTime):
            r = r.per_trajectory(batch_size)
        elif batch_size is not None:
            raise ValueError(
                f"{owner}(batch_mode='joint') cannot make {type(r).__name__} a "
                "per-trajectory quantity (it is not an ndes regularizer); use batch_mode='vmap'."
            )
        out.append(r)
    return tuple(out)


def stats_of(sol) -> dict[str, Array]:
    keys = ("num_fevals", "num_steps", "num_accepted_steps", "num_rejected_steps")
    return {k: sol.stats[k] for k in keys if k in sol.stats}


class JointField(eqx.Module):
    """Applies a per-sample field `f(t, y, args)` to a batched state (leading axis `B` on
    every leaf) as one batched computation. `args_axis=0` also maps `args` (a PyTree with a
    leading batch axis, e.g. each series' control path); `None` shares it."""

    field: Callable
    args_axis: int | None = eqx.field(default=None, static=True)

    def __call__(self, t, y, args):
        return jax.vmap(self.field, in_axes=(None, 0, self.args_axis))(t, y, args)


def solve_batch(
    solve: Callable,
    y0: PyTree[Array],
    batch_size: int | None,
    batch_mode: str,
    regularizers: Sequence,
    owner: str,
    data: Any = None,
) -> ModelOutput:
    """One state, a joint batch or a vmapped batch, with the regularizers made
    per-trajectory quantities.

    **Arguments:**

    - `solve(y, regularizers, joint, data) -> ndes.Solution`: the model's solve. `joint` is
      true for a joint batch (`y` then has a leading batch axis; wrap the per-sample field
      in `JointField`). In vmap mode it is called on one sample of `y0` and of `data`.
    - `y0`: the initial state, a PyTree; `batch_size`: `None` for one state, else `B`, the
      leading axis of every leaf of `y0` (and of `data`).
    - `batch_mode`: `"joint"` or `"vmap"`; `regularizers`, `owner`: as the model received.
    - `data`: per-sample inputs with a leading batch axis (control paths, noise, ...),
      passed whole in joint mode and sliced in vmap mode.

    **Returns:** a `ModelOutput` with `ys` as saved, batch first for a batch (`(B, T, ...)`
    in both modes); penalty and penalty terms averaged over the batch; joint counters are
    scalars, vmap counters have shape `(B,)`.
    """
    if batch_size is None:
        sol = solve(y0, per_trajectory_regularizers(regularizers, None, owner), False, data)
        return ModelOutput(sol.ys, sol.penalty, dict(sol.penalty_terms), stats_of(sol))
    if batch_mode == "joint":
        regs = per_trajectory_regularizers(regularizers, batch_size, owner)
        sol = solve(y0, regs, True, data)
        ys = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), sol.ys)
        return ModelOutput(ys, sol.penalty, dict(sol.penalty_terms), stats_of(sol))
    regs = per_trajectory_regularizers(regularizers, None, owner)

    def one(y, d):
        sol = solve(y, regs, False, d)
        return sol.ys, sol.penalty, dict(sol.penalty_terms), stats_of(sol)

    ys, pen, terms, stats = jax.vmap(one)(y0, data)
    terms = {k: jnp.mean(v) for k, v in terms.items()}
    return ModelOutput(ys, jnp.mean(pen), terms, stats)


def check_increasing(ts: Array, name: str, owner: str) -> Array:
    """Python error for concrete times, `eqx.error_if` for traced ones."""
    msg = (
        f"{owner}: `{name}` must be strictly increasing along its last axis; sort the times "
        "or drop duplicates."
    )
    try:
        arr = np.asarray(ts)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        arr = None
    if arr is not None:
        if arr.shape[-1] > 1 and not np.all(np.diff(arr, axis=-1) > 0):
            raise ValueError(msg)
        return ts
    return eqx.error_if(ts, jnp.any(jnp.diff(ts, axis=-1) <= 0), msg)


def check_inputs(
    ts: ArrayLike, y0: ArrayLike, owner: str, name: str = "y0"
) -> tuple[Float[Array, " T"], Array]:
    """`ts` of shape `(T,)`, `T >= 2`, strictly increasing; `y0` (called `name` in the
    messages) of shape `(n,)` or `(B, n)`, cast to float if it is not. Returns both as
    arrays."""
    ts = jnp.asarray(ts)
    y0 = jnp.asarray(y0)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(
            f"{owner}: `ts` must have shape (T,) with T >= 2 (the initial time first); got "
            f"shape {ts.shape}."
        )
    if y0.ndim not in (1, 2):
        raise ValueError(f"{owner}: `{name}` must have shape (n,) or (B, n); got shape {y0.shape}.")
    if not jnp.issubdtype(y0.dtype, jnp.floating):
        y0 = y0.astype(float)
    return check_increasing(ts, "ts", owner), y0


def _built_state_size(field) -> int | None:
    """The state size a field was built for, when it says so (`MLPVectorField`)."""
    if isinstance(field, MLPVectorField):
        return field.mlp.in_size - int(field.time_input)
    return None


def check_field_state(
    field: Callable,
    t0,
    y0: Array,
    args: Any,
    owner: str,
    what: str = "vector field",
    returns: bool = True,
) -> None:
    """Trace-time check that `field(t, y, args)` takes one state of `y0`'s size `n` (and, with
    `returns`, gives back shape `(n,)`): a ValueError naming the model, the expected and the
    received size instead of a `dot_general` shape error from inside the solver.

    The size an `MLPVectorField` was built for is compared directly; any other field is
    traced once on a state of shape `(n,)` with `jax.eval_shape` (no computation).
    """
    n = y0.shape[-1]
    expected = _built_state_size(field)
    if expected is not None and expected != n:
        raise ValueError(
            f"{owner}: `y0` has {n} components per state (shape {y0.shape}) but the {what} was "
            f"built for states of size {expected}; pass `y0` of shape ({expected},) or "
            f"(B, {expected}), or build the model with state_size={n}."
        )
    state = jax.ShapeDtypeStruct((n,), y0.dtype)
    try:
        out = jax.eval_shape(lambda y: field(t0, y, args), state)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{owner}: the {what} fails on one state of shape ({n},) from `y0` of shape "
            f"{y0.shape}: is {n} the state size it was built for? ({e})"
        ) from e
    if returns and getattr(out, "shape", None) != (n,):
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"{owner}: the {what} must return the state's shape ({n},) for a state of shape "
            f"({n},); got {got}."
        )
