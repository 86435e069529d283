"""NeuralODE: an Equinox model solved by `ndes.diffeqsolve`, batched per sample or jointly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._solve import diffeqsolve
from ..regularizers import AbstractEndTime, AbstractRegularizer
from ._mlp import MLPVectorField

__all__ = ["NeuralODE", "ModelOutput", "BatchMode"]

BatchMode = Literal["joint", "vmap"]
_BATCH_MODES = ("joint", "vmap")


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
      `NeuralCDE`; `None` for `NeuralODE`.
    """

    ys: Array
    penalty: Float[Array, ""]
    penalty_terms: dict[str, Float[Array, ""]]
    stats: dict[str, Array]
    final_state: Array | None = None


def check_batch_mode(batch_mode: str, owner: str) -> None:
    if batch_mode not in _BATCH_MODES:
        raise ValueError(
            f"{owner}(batch_mode={batch_mode!r}) must be one of {_BATCH_MODES}: 'joint' solves "
            "the batch as one state with shared steps, 'vmap' solves each sample separately."
        )


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


class _JointField(eqx.Module):
    """Applies a per-sample vector field to a `(B, n)` state as one batched computation."""

    field: Callable

    def __call__(self, t, y, args):
        return jax.vmap(self.field, in_axes=(None, 0, None))(t, y, args)


class NeuralODE(eqx.Module):
    r"""A neural ODE $\mathrm{d}y/\mathrm{d}t = f_\theta(t, y)$ solved by `ndes.diffeqsolve`.

    Every ndes regularizer applies and the exact counters are returned.

    **Batch modes** (for `y0` of shape `(B, n)`):

    - `"joint"` (default): the batch is one state of shape `(B, n)`; the MLP runs on the
      whole batch at once and all trajectories share the solver's steps. Fastest for most
      training (one large matmul per stage instead of `B` small ones; measured 1.7--3.2x
      faster per train step than `"vmap"` at batch 256 on CPU, see
      `benchmarks/node_batching.py`).
    - `"vmap"`: `jax.vmap` of per-sample solves; each trajectory gets its own step sizes.
      Wins when trajectories differ a lot in stiffness or scale: in a joint solve the
      hardest trajectory sets the step for all of them (the controller's norm is over the
      whole batch).

    Regularizers mean the same per-trajectory quantity in both modes: in joint mode the
    model sets `batch_axis=0` (and `batch_size`) on `ErrorEstimate` / `StiffnessEstimate`,
    so the per-step value is computed from each trajectory's own slice and averaged over the
    batch; in vmap mode each sample's penalty is computed and the batch mean is taken. With a
    constant step size the two agree to rounding; under an adaptive controller the joint
    solve shares steps chosen from the whole batch's error, so its penalty (and `ys`)
    differ from vmap mode. Regularizers without a `batch_axis` are refused in joint mode.

    **Arguments:**

    - `vector_field`: an `eqx.Module` (or callable) `f(t, y, args) -> dy/dt` on a single state
      `y` of shape `(n,)`, e.g. `MLPVectorField`; see also `NeuralODE.mlp`.
    - `solver`: a diffrax solver (default `diffrax.Tsit5()`).
    - `stepsize_controller`: default `diffrax.PIDController(rtol=1e-3, atol=1e-6)`.
    - `adjoint`: default `diffrax.RecursiveCheckpointAdjoint()`.
    - `dt0`: initial (or, with `ConstantStepSize`, fixed) step in units of `t`; `None` lets
      an adaptive controller pick it.
    - `max_steps`: as in `diffrax.diffeqsolve`.
    - `batch_mode`: `"joint"` or `"vmap"`, see above.
    """

    vector_field: Callable
    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    stepsize_controller: diffrax.AbstractStepSizeController = diffrax.PIDController(
        rtol=1e-3, atol=1e-6
    )
    adjoint: diffrax.AbstractAdjoint = diffrax.RecursiveCheckpointAdjoint()
    dt0: float | None = None
    max_steps: int | None = eqx.field(default=4096, static=True)
    batch_mode: BatchMode = eqx.field(default="joint", static=True)

    def __check_init__(self):
        check_batch_mode(self.batch_mode, "NeuralODE")
        if self.dt0 is None and not isinstance(
            self.stepsize_controller, diffrax.AbstractAdaptiveStepSizeController
        ):
            raise ValueError(
                "NeuralODE: dt0=None needs an adaptive stepsize_controller; with "
                f"{type(self.stepsize_controller).__name__} pass the step, e.g. dt0=0.05."
            )

    @classmethod
    def mlp(
        cls,
        state_size: int,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        time_input: bool = False,
        activation: Callable = jax.nn.softplus,
        **kwargs: Any,
    ) -> "NeuralODE":
        """A `NeuralODE` whose field is `MLPVectorField(state_size, width, depth, ...)`.

        `kwargs` go to `NeuralODE` (solver, controller, `batch_mode`, ...).
        """
        field = MLPVectorField(
            state_size, width, depth, key=key, time_input=time_input, activation=activation
        )
        return cls(field, **kwargs)

    def _solve(self, field, ts, y0, regularizers, train_step, args):
        return diffeqsolve(
            diffrax.ODETerm(field),
            self.solver,
            ts[0],
            ts[-1],
            self.dt0,
            y0,
            args,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=self.stepsize_controller,
            adjoint=self.adjoint,
            max_steps=self.max_steps,
            regularizers=regularizers,
            train_step=train_step,
        )

    def __call__(
        self,
        ts: Float[ArrayLike, " T"],
        y0: Float[ArrayLike, " n"] | Float[ArrayLike, "B n"],
        *,
        regularizers: Sequence = (),
        train_step: ArrayLike | None = None,
        args: Any = None,
    ) -> ModelOutput:
        """Solve from `y0` at `ts[0]` and return the states at every time in `ts`.

        **Arguments:**

        - `ts`: shape `(T,)`, strictly increasing, shared by the whole batch; `ts[0]` is
          the initial time.
        - `y0`: shape `(n,)` (one trajectory) or `(B, n)` (a batch, solved by `batch_mode`).
        - `regularizers`: ndes regularizers (see the class docstring for batches).
        - `train_step`: the optimiser step, for scheduled regularizer weights.
        - `args`: passed to the vector field.

        **Returns:** a `ModelOutput` with `ys` of shape `(T, n)` or `(B, T, n)`.
        """
        ts = jnp.asarray(ts)
        y0 = jnp.asarray(y0)
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(
                f"NeuralODE: `ts` must have shape (T,) with T >= 2 (the initial time first); "
                f"got shape {ts.shape}."
            )
        if y0.ndim not in (1, 2):
            raise ValueError(
                f"NeuralODE: `y0` must have shape (n,) or (B, n); got shape {y0.shape}."
            )
        ts = check_increasing(ts, "ts", "NeuralODE")
        check_field_state(self.vector_field, ts[0], y0, args, "NeuralODE")
        if y0.ndim == 1:
            sol = self._solve(
                self.vector_field,
                ts,
                y0,
                per_trajectory_regularizers(regularizers, None, "NeuralODE"),
                train_step,
                args,
            )
            return ModelOutput(sol.ys, sol.penalty, dict(sol.penalty_terms), stats_of(sol))
        if self.batch_mode == "joint":
            regs = per_trajectory_regularizers(regularizers, y0.shape[0], "NeuralODE")
            sol = self._solve(_JointField(self.vector_field), ts, y0, regs, train_step, args)
            ys = jnp.swapaxes(sol.ys, 0, 1)
            return ModelOutput(ys, sol.penalty, dict(sol.penalty_terms), stats_of(sol))
        regs = per_trajectory_regularizers(regularizers, None, "NeuralODE")

        def one(y):
            sol = self._solve(self.vector_field, ts, y, regs, train_step, args)
            return sol.ys, sol.penalty, dict(sol.penalty_terms), stats_of(sol)

        ys, pen, terms, stats = jax.vmap(one)(y0)
        terms = {k: jnp.mean(v) for k, v in terms.items()}
        return ModelOutput(ys, jnp.mean(pen), terms, stats)
