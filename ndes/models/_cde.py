"""NeuralCDE: neural controlled differential equations (Kidger et al. 2020)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

from ._common import (
    JointField,
    ModelOutput,
    SolverSettings,
    check_increasing,
    settings_from,
    solve_batch,
)
from ._mlp import MLPVectorField
from ._ode import _DEFAULTS

# One fixed Bosh3 step per observation interval (dt0=None; see `NeuralCDE`).
_CDE_DEFAULTS = {
    **_DEFAULTS,
    "solver": diffrax.Bosh3(),
    "stepsize_controller": diffrax.ConstantStepSize(),
}

__all__ = ["NeuralCDE"]

_INTERPOLATIONS = (diffrax.CubicInterpolation, diffrax.LinearInterpolation)


def _path(interpolation, ts, coeffs):
    if interpolation is diffrax.CubicInterpolation:
        return diffrax.CubicInterpolation(ts, tuple(coeffs))
    return diffrax.LinearInterpolation(ts, coeffs)


class _NormalisedField(eqx.Module):
    r"""$\mathrm{d}z/\mathrm{d}s = (t_1 - t_0)\, f(z)\, \dot X(t_0 + s (t_1 - t_0))$ for one
    series, `args = (ts, coeffs, t0, t1)` (a joint batch wraps it in `JointField` with
    `args_axis=0`, so the control's derivative is evaluated for the whole batch at once)."""

    field: Callable
    interpolation: type = eqx.field(static=True)

    def __call__(self, s, z, args):
        ts, coeffs, t0, t1 = args
        t = t0 + s * (t1 - t0)
        dxdt = _path(self.interpolation, ts, coeffs).derivative(t)
        return (t1 - t0) * (self.field(t, z) @ dxdt)


class NeuralCDE(eqx.Module):
    r"""A neural controlled differential equation with a linear readout.

    $$z(t_0) = \xi_\theta(x(t_0)), \qquad \mathrm{d}z(t) = f_\theta(z(t))\,\mathrm{d}X(t),
    \qquad \text{output} = \ell_\theta(z(t_1)),$$

    where $X$ interpolates the observations $x$ (`diffrax.CubicInterpolation` with the
    coefficients of `diffrax.backward_hermite_coefficients` -- Hermite cubic with backward
    differences, causal -- or `diffrax.LinearInterpolation`), $f_\theta$ is an MLP to a
    `(hidden, channels)` matrix with a final `tanh`, and $\ell_\theta$ is linear (logits for
    classification, values for regression). The CDE is solved as the ODE
    $\dot z = f(z)\dot X(t)$ (as torchcde does).

    **Irregular and missing data.** Put the observation times in a channel of `x` (and,
    if useful, a cumulative count of observations per channel), fill missing values
    forward, then compute coefficients (`NeuralCDE.coefficients`). Coefficients must be
    finite.

    **Variable lengths and normalised time.** Series are padded to a common length `L`
    (pad times increasing, values filled forward) and each series has its own final time
    `t1[b]`. Every series is solved in a normalised time $s \in [0, 1]$,
    $t = t_0 + s (t_1 - t_0)$, so that all series end together at $s = 1$. A CDE's solution
    depends only on the path, not on its parametrisation, so this is exact -- not the
    approximation of holding the control constant after a series' end (which puts a kink in
    $X$ inside a shared step) nor a gather from saved grid states (which needs the solver's
    interpolation when a series ends between steps). `dt0 = 1/N` gives every series exactly
    `N` steps over its own span, identical to solving it alone in real time with step
    $(t_1 - t_0)/N$. Consequence: a step regularizer's `|h|` is in normalised time, so
    `ErrorEstimate` is per unit of normalised time.

    **Batch modes** (`coeffs` with a leading batch axis): `"joint"` (default) solves the
    batch as one state `(B, H)` with the control's derivative evaluated for the whole
    batch at once; shared steps, fastest for fixed-step training (measurements in
    docs/models.md).
    `"vmap"` solves each series separately with its own step sizes; it wins under an
    adaptive controller when series differ a lot in how hard they are to integrate. Step
    regularizers mean the same per-series quantity in both modes (see `NeuralODE`).

    **Arguments:**

    - `channels`: number of input channels `C` (including any time/intensity channels).
    - `hidden_size`: `H`.
    - `out_size`: readout size (number of classes, or regression targets).
    - `width`, `depth`: the vector field MLP's hidden width and hidden layers.
    - `key`: PRNG key.
    - `initial_width`, `initial_depth`: the initial map $\xi$ from `C` channels to `H`;
      `initial_depth=0` (default) makes it linear, otherwise an `eqx.nn.MLP` (ReLU) with
      `initial_depth` hidden layers of width `initial_width` (default 32).
    - `interpolation`: `diffrax.CubicInterpolation` (default) or
      `diffrax.LinearInterpolation` (the class, not an instance).
    - `activation`: hidden activation of the vector field MLP (default `relu`, as in
      torchcde's classification example; chosen on the generalization suite's ten UEA
      sets over `softplus`, measured in docs/results.md).
    - `dtype`: floating dtype of every weight and bias ($\xi$, $f_\theta$, $\ell_\theta$;
      default `None`: JAX's default float, float32 unless `jax_enable_x64`). Pass data of
      the same dtype.
    - `settings`: an `ndes.models.SolverSettings`, or its fields as keywords (replacing
      single fields): `solver`, `stepsize_controller`, `adjoint`, `max_steps` as in
      `diffrax.diffeqsolve` (default `Bosh3` with `ConstantStepSize()`,
      `RecursiveCheckpointAdjoint()`, 4096); `dt0`: initial/fixed step in normalised time
      ($1/N$ for $N$ steps), `None` lets an adaptive controller choose and, with
      `diffrax.ConstantStepSize()` (the default), takes one step per interval of the padded
      time grid ($N = L - 1$: for a regular series every step ends on an observation, and a
      prediction costs a known $3(L - 1) + 1$ evaluations with Bosh3); `batch_mode`:
      `"joint"` (default) or `"vmap"`.

    **The default solve is fixed-step.** Bosh3, one step per observation interval, was
    chosen over adaptive Tsit5 + PID on the generalization suite's ten UEA sets (more
    accurate on average, at a fraction of the evaluations; measured in docs/results.md). A fixed
    step's cost cannot be cut by a regularizer: to trade cost against accuracy with
    `ErrorEstimate` or a budget, pass an adaptive solve, e.g. `solver=diffrax.Tsit5(),
    stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6)` (the previous default).

    **Reference:** Kidger, Morrill, Foster, Lyons, "Neural Controlled Differential
    Equations for Irregular Time Series", NeurIPS 2020.
    """

    initial: eqx.Module
    field: MLPVectorField
    readout: eqx.nn.Linear
    interpolation: type = eqx.field(static=True)
    settings: SolverSettings
    channels: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)

    def __init__(
        self,
        channels: int,
        hidden_size: int,
        out_size: int,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        initial_width: int = 32,
        initial_depth: int = 0,
        interpolation: type = diffrax.CubicInterpolation,
        activation: Callable = jax.nn.relu,
        dtype=None,
        settings: SolverSettings | None = None,
        **options: Any,
    ):
        settings = settings_from(_CDE_DEFAULTS, settings, options, "NeuralCDE")
        settings.check("NeuralCDE")
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"NeuralCDE(interpolation={interpolation!r}) must be diffrax.CubicInterpolation "
                "or diffrax.LinearInterpolation (the class, not an instance)."
            )
        if channels < 1 or hidden_size < 1 or out_size < 1:
            raise ValueError(
                f"NeuralCDE needs channels, hidden_size, out_size >= 1; got {channels}, "
                f"{hidden_size}, {out_size}."
            )
        ki, kf, kr = jr.split(key, 3)
        if initial_depth == 0:
            self.initial = eqx.nn.Linear(channels, hidden_size, key=ki, dtype=dtype)
        else:
            self.initial = eqx.nn.MLP(
                channels, hidden_size, initial_width, initial_depth, key=ki, dtype=dtype
            )
        self.field = MLPVectorField(
            hidden_size,
            width,
            depth,
            key=kf,
            activation=activation,
            final_activation=jnp.tanh,
            out_shape=(hidden_size, channels),
            dtype=dtype,
        )
        self.readout = eqx.nn.Linear(hidden_size, out_size, key=kr, dtype=dtype)
        self.interpolation = interpolation
        self.settings = settings
        self.channels = channels
        self.hidden_size = hidden_size

    def coefficients(
        self, ts: Float[ArrayLike, "*B L"], xs: Float[ArrayLike, "*B L C"]
    ) -> PyTree[Array]:
        """Interpolation coefficients for this model's `interpolation`.

        Cubic: `diffrax.backward_hermite_coefficients` (a tuple of four `(*B, L-1, C)`
        arrays); linear: `xs` itself. Fill missing values (NaN) forward first.
        """
        ts, xs = jnp.asarray(ts), jnp.asarray(xs)
        if self.interpolation is diffrax.LinearInterpolation:
            return xs
        if xs.ndim == 2:
            return diffrax.backward_hermite_coefficients(ts, xs)
        t_axis = 0 if ts.ndim == 2 else None
        return jax.vmap(diffrax.backward_hermite_coefficients, in_axes=(t_axis, 0))(ts, xs)

    def _check(self, ts, coeffs):
        if self.interpolation is diffrax.CubicInterpolation:
            if not (isinstance(coeffs, (tuple, list)) and len(coeffs) == 4):
                raise ValueError(
                    "NeuralCDE(interpolation=CubicInterpolation) needs `coeffs` as the 4-tuple "
                    "from diffrax.backward_hermite_coefficients (or model.coefficients)."
                )
            coeffs = tuple(jnp.asarray(c) for c in coeffs)
            shapes = {c.shape for c in coeffs}
            if len(shapes) != 1:
                raise ValueError(
                    f"NeuralCDE: the 4 cubic coefficient arrays differ in shape: {shapes}."
                )
            shape = coeffs[0].shape
            n_knots_from_coeffs = shape[-2] + 1
        else:
            if isinstance(coeffs, (tuple, list)):
                raise ValueError(
                    "NeuralCDE(interpolation=LinearInterpolation) needs `coeffs` as the "
                    "observation array (L, C) or (B, L, C), not a tuple."
                )
            coeffs = jnp.asarray(coeffs)
            shape = coeffs.shape
            n_knots_from_coeffs = shape[-2]
        if len(shape) not in (2, 3):
            raise ValueError(
                f"NeuralCDE: coefficients must have shape (L', C) or (B, L', C); got {shape}."
            )
        if shape[-1] != self.channels:
            raise ValueError(
                f"NeuralCDE: coefficients have {shape[-1]} channels but the model was built "
                f"with channels={self.channels}."
            )
        batched = len(shape) == 3
        if ts.ndim not in (1, 2) or (ts.ndim == 2 and not batched):
            raise ValueError(
                f"NeuralCDE: `ts` must have shape (L,) or, for a batch, (B, L); got {ts.shape} "
                f"with coefficients of shape {shape}."
            )
        if ts.shape[-1] != n_knots_from_coeffs or (ts.ndim == 2 and ts.shape[0] != shape[0]):
            raise ValueError(
                f"NeuralCDE: `ts` of shape {ts.shape} does not match coefficients of shape "
                f"{shape} (expected {n_knots_from_coeffs} times"
                + (f" for each of {shape[0]} series)." if batched else ").")
            )
        if ts.shape[-1] < 2:
            raise ValueError("NeuralCDE: a series needs at least 2 observation times.")
        ts = check_increasing(ts, "ts", "NeuralCDE")
        leaves = coeffs if isinstance(coeffs, tuple) else (coeffs,)
        bad = jnp.any(jnp.stack([~jnp.all(jnp.isfinite(c)) for c in leaves]))
        coeffs = eqx.error_if(
            coeffs,
            bad,
            "NeuralCDE: coefficients contain NaN/inf; fill missing values forward (and pad "
            "with finite values) before computing them.",
        )
        return ts, coeffs, batched

    def __call__(
        self,
        ts: Float[ArrayLike, "*B L"],
        coeffs: PyTree[Array],
        *,
        t1: Float[ArrayLike, "*B"] | None = None,
        regularizers: Sequence = (),
        train_step: ArrayLike | None = None,
    ) -> ModelOutput:
        """Run the CDE over each series and read out its final state.

        **Arguments:**

        - `ts`: observation times, `(L,)` (shared) or `(B, L)`, strictly increasing (pad
          with increasing times).
        - `coeffs`: cubic: the 4-tuple of `(L-1, C)` / `(B, L-1, C)` arrays from
          `diffrax.backward_hermite_coefficients`; linear: `(L, C)` / `(B, L, C)` values.
          A leading batch axis selects the batch modes.
        - `t1`: each series' final time, scalar or `(B,)` (the time of its last real
          observation); default `ts[..., -1]`. Must lie in `(ts[..., 0], ts[..., -1]]`.
        - `regularizers`, `train_step`: as in `ndes.diffeqsolve`.

        **Returns:** a `ModelOutput`: `ys` the readout `(out,)` or `(B, out)`,
        `final_state` the hidden state `(H,)` or `(B, H)`, penalty and stats.
        """
        ts = jnp.asarray(ts)
        ts, coeffs, batched = self._check(ts, coeffs)
        t0 = ts[..., 0]
        t_end = ts[..., -1] if t1 is None else jnp.asarray(t1, ts.dtype)
        if batched:
            B = (coeffs[0] if isinstance(coeffs, tuple) else coeffs).shape[0]
            if ts.ndim == 1:
                ts = jnp.broadcast_to(ts, (B, ts.shape[0]))
            t0 = jnp.broadcast_to(t0, (B,))
            if t_end.ndim not in (0, 1) or (t_end.ndim == 1 and t_end.shape[0] != B):
                raise ValueError(
                    f"NeuralCDE: `t1` must be a scalar or have shape ({B},); got {t_end.shape}."
                )
            t_end = jnp.broadcast_to(t_end, (B,))
        elif t_end.ndim != 0:
            raise ValueError(f"NeuralCDE: `t1` must be a scalar for one series; got {t_end.shape}.")
        t_end = eqx.error_if(
            t_end,
            jnp.any((t_end <= t0) | (t_end > ts[..., -1])),
            "NeuralCDE: each `t1` must lie in (ts[..., 0], ts[..., -1]]; pass the time of "
            "each series' last real observation.",
        )

        def x0_of(ts_b, coeffs_b, t0_b):
            return _path(self.interpolation, ts_b, coeffs_b).evaluate(t0_b)

        field = _NormalisedField(self.field, self.interpolation)
        dt0 = self.settings.dt0
        if dt0 is None and not self.settings.adaptive:  # one step per knot interval
            dt0 = 1.0 / (ts.shape[-1] - 1)

        def solve(z0, regs, joint, args):
            return self.settings.diffeqsolve(
                diffrax.ODETerm(JointField(field, args_axis=0) if joint else field),
                0.0,
                1.0,
                z0,
                args,
                saveat=diffrax.SaveAt(t1=True),
                regularizers=regs,
                train_step=train_step,
                dt0=dt0,
            )

        args = (ts, coeffs, t0, t_end)
        if not batched:
            z0 = self.initial(x0_of(ts, coeffs, t0))
            out = solve_batch(solve, z0, None, "joint", regularizers, "NeuralCDE", args)
            z1 = out.ys[-1]
            return ModelOutput(self.readout(z1), out.penalty, out.penalty_terms, out.stats, z1)
        z0 = jax.vmap(self.initial)(jax.vmap(x0_of)(ts, coeffs, t0))
        mode = self.settings.batch_mode
        out = solve_batch(solve, z0, B, mode, regularizers, "NeuralCDE", args)
        z1 = out.ys[:, -1]
        return ModelOutput(
            jax.vmap(self.readout)(z1), out.penalty, out.penalty_terms, out.stats, z1
        )
