"""NeuralSDE: drift and diffusion networks solved by `ndes.diffeqsolve`, batched per sample or
jointly, with the Brownian motion chosen for the step-size controller (`_sde_solve.py`)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal

import diffrax
import equinox as eqx
import jax
import jax.random as jr
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from ._common import ModelOutput, SolverSettings, check_field_state, check_inputs, settings_from
from ._mlp import MLPVectorField
from ._sde_checks import NOISE_TYPES, SDE_TYPES, check_sde_config, check_sde_solver
from ._sde_solve import SDESettings, solve_sde

__all__ = ["NeuralSDE", "SDESettings", "SDE_TYPES", "NOISE_TYPES"]

NoiseType = Literal["diagonal", "general"]
SDEType = Literal["ito", "stratonovich"]

# Defaults of every SDE model: Euler--Maruyama on fixed steps, adjoint chosen by `solve_sde`.
SDE_DEFAULTS = dict(
    solver=diffrax.Euler(),
    stepsize_controller=diffrax.ConstantStepSize(),
    adjoint=None,
    dt0=None,
    max_steps=4096,
    batch_mode="joint",
)
_SDE_NAMES = ("num_steps", "brownian", "brownian_tol")


def split_sde_options(options: dict, sde: SDESettings | None) -> tuple[dict, SDESettings]:
    """Split a constructor's flat keywords into `SolverSettings` ones and an `SDESettings`
    (`sde`, or the default, with `num_steps`/`brownian`/`brownian_tol` replaced)."""
    base = SDESettings() if sde is None else sde
    picked = {k: options.pop(k) for k in _SDE_NAMES if k in options}
    steps = picked.get("num_steps")
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool):
        picked["num_steps"] = int(steps)  # a static field: no NumPy scalar (validated later)
    merged = {k: getattr(base, k) for k in _SDE_NAMES} | picked
    return options, SDESettings(**merged)


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
    controller's `rtol` implies (`default_tree_tol`; cost measurements in docs/sde.md).
    Lévy area is drawn when the solver asks for it.

    **Determinism.** Given `key`, the output is deterministic. On fixed-step solves a batch
    draws one `GridBrownianPath` of noise shape `(B, m)` from `key` and sample `b` is driven
    by its column `b` in *both* batch modes, so joint and vmap give the same `ys` to
    rounding. (Adaptive solves use one tree of shape `(B, m)` in joint mode and one tree per
    sample, keys `jax.random.split(key, B)`, in vmap mode, so the two modes see different
    noise.)

    **Batch modes** (for `y0` of shape `(B, n)`):

    - `"joint"` (default): the batch is one state `(B, n)`: drift and diffusion MLPs run on
      the whole batch at once and all trajectories share the steps. Fastest for fixed-step
      training on CPU (measurements in docs/sde.md).
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
    - `settings` (an `ndes.models.SolverSettings`) and `sde` (an `SDESettings`), or their
      fields as keywords, replacing single fields:
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
    - `max_steps`: as in `diffrax.diffeqsolve`; a fixed-step solve runs with exactly its
      `N` steps (and `N` checkpoints), the grid path checked once when the solve is built
      (`ndes.GridBrownianPath.for_solve`) instead of on every query.
    - `batch_mode`: `"joint"` or `"vmap"`.

    **Reference:** Kidger, "On Neural Differential Equations", 2021, ch. 4 (neural SDEs).
    """

    drift: Callable
    diffusion: Callable
    noise: NoiseType = eqx.field(static=True)
    noise_size: int | None = eqx.field(static=True)
    sde_type: SDEType = eqx.field(static=True)
    additive: bool = eqx.field(static=True)
    settings: SolverSettings
    sde: SDESettings

    def __init__(
        self,
        drift: Callable,
        diffusion: Callable,
        noise: NoiseType = "diagonal",
        noise_size: int | None = None,
        sde_type: SDEType = "ito",
        additive: bool = False,
        *,
        settings: SolverSettings | None = None,
        sde: SDESettings | None = None,
        **options: Any,
    ):
        options, sde = split_sde_options(dict(options), sde)
        self.settings = settings_from(SDE_DEFAULTS, settings, options, "NeuralSDE")
        self.sde = sde
        self.drift, self.diffusion = drift, diffusion
        self.noise, self.noise_size = noise, noise_size
        self.sde_type, self.additive = sde_type, additive
        check_sde_config("NeuralSDE", self.settings, sde, noise, noise_size)
        solver = self.settings.solver
        check_sde_solver(solver, sde_type, additive, "NeuralSDE")
        milstein = (diffrax.ItoMilstein, diffrax.StratonovichMilstein)
        if noise == "general" and noise_size > 1 and isinstance(solver, milstein):
            raise ValueError(
                f"NeuralSDE: {type(solver).__name__} assumes commutative noise, which a "
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
        ts, y0 = check_inputs(ts, y0, "NeuralSDE")
        check_field_state(self.drift, ts[0], y0, args, "NeuralSDE", "drift")
        check_field_state(self.diffusion, ts[0], y0, args, "NeuralSDE", "diffusion", False)
        m = y0.shape[-1] if self.noise == "diagonal" else self.noise_size
        return solve_sde(
            self.drift,
            self.diffusion,
            ts,
            y0,
            key,
            settings=self.settings,
            sde=self.sde,
            noise=self.noise,
            noise_size=m,
            owner="NeuralSDE",
            regularizers=regularizers,
            train_step=train_step,
            args=args,
        )
