"""NeuralODE: an Equinox model solved by `ndes.diffeqsolve`, batched per sample or jointly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from ._common import (
    BatchMode,
    JointField,
    ModelOutput,
    SolverSettings,
    check_field_state,
    check_inputs,
    settings_from,
    solve_batch,
)
from ._mlp import MLPVectorField

__all__ = ["NeuralODE", "ModelOutput", "BatchMode"]

_DEFAULTS = dict(
    solver=diffrax.Tsit5(),
    stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6),
    adjoint=diffrax.RecursiveCheckpointAdjoint(),
    dt0=None,
    max_steps=4096,
    batch_mode="joint",
)


class NeuralODE(eqx.Module):
    r"""A neural ODE $\mathrm{d}y/\mathrm{d}t = f_\theta(t, y)$ solved by `ndes.diffeqsolve`.

    Every ndes regularizer applies and the exact counters are returned.

    **Batch modes** (for `y0` of shape `(B, n)`):

    - `"joint"` (default): the batch is one state of shape `(B, n)`; the MLP runs on the
      whole batch at once and all trajectories share the solver's steps. Fastest for most
      training (one large matmul per stage instead of `B` small ones; measurements in
      docs/models.md).
    - `"vmap"`: `jax.vmap` of per-sample solves; each trajectory gets its own step sizes.
      Wins when trajectories differ a lot in stiffness or scale: in a joint solve the
      hardest trajectory sets the step for all of them (the controller's norm is over the
      whole batch).

    Regularizers mean the same per-trajectory quantity in both modes: in joint mode the
    model calls each regularizer's `per_trajectory(B)`, so the per-step value is computed
    from each trajectory's own slice and averaged over the batch; in vmap mode each sample's
    penalty is computed and the batch mean is taken. With a constant step size the two
    agree to rounding; under an adaptive controller the joint solve shares steps chosen from
    the whole batch's error, so its penalty (and `ys`) differ from vmap mode. Anything that
    is not an ndes regularizer is refused in joint mode.

    **Arguments:**

    - `vector_field`: an `eqx.Module` (or callable) `f(t, y, args) -> dy/dt` on a single state
      `y` of shape `(n,)`, e.g. `MLPVectorField`; see also `NeuralODE.mlp`.
    - `settings`: an `ndes.models.SolverSettings`; or the flat keywords below, which
      replace single fields of it:
    - `solver`: a diffrax solver (default `diffrax.Tsit5()`).
    - `stepsize_controller`: default `diffrax.PIDController(rtol=1e-3, atol=1e-6)`.
    - `adjoint`: default `diffrax.RecursiveCheckpointAdjoint()`.
    - `dt0`: initial (or, with `ConstantStepSize`, fixed) step in units of `t`; `None` lets
      an adaptive controller pick it.
    - `max_steps`: as in `diffrax.diffeqsolve` (default 4096).
    - `batch_mode`: `"joint"` (default) or `"vmap"`, see above.
    """

    vector_field: Callable
    settings: SolverSettings

    def __init__(
        self, vector_field: Callable, *, settings: SolverSettings | None = None, **options: Any
    ):
        self.vector_field = vector_field
        self.settings = settings_from(_DEFAULTS, settings, options, "NeuralODE")
        self.settings.check("NeuralODE", "pass the step, e.g. dt0=0.05")

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
        ts, y0 = check_inputs(ts, y0, "NeuralODE")
        check_field_state(self.vector_field, ts[0], y0, args, "NeuralODE")

        # Two times are the start and the end: saving them directly, rather than interpolating
        # at `ts`, gives the same `ys` with a ~20 % smaller compiled program (docs/benchmarks.md).
        if ts.shape[0] == 2:
            saveat = diffrax.SaveAt(t0=True, t1=True)
        else:
            saveat = diffrax.SaveAt(ts=ts)

        def solve(y, regs, joint, _):
            field = JointField(self.vector_field) if joint else self.vector_field
            return self.settings.diffeqsolve(
                diffrax.ODETerm(field),
                ts[0],
                ts[-1],
                y,
                args,
                saveat=saveat,
                regularizers=regs,
                train_step=train_step,
            )

        batch = None if y0.ndim == 1 else y0.shape[0]
        return solve_batch(solve, y0, batch, self.settings.batch_mode, regularizers, "NeuralODE")
