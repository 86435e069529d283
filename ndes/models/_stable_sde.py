r"""Stable neural SDE classes of Oh, Lee & Park 2024, "Stable Neural Stochastic Differential
Equations in Analyzing Irregular Time Series Data" (ICLR 2024).

Three classes whose solutions exist, are unique and keep bounded moments (the paper's
Theorems 3.1--3.6):

- Langevin-type (LSDE): $dz = \gamma(z, X_t)\,dt + \sigma(t)\,dW_t$
- linear-noise (LNSDE): $dz = \gamma(t, z, X_t)\,dt + \sigma(t) \odot z\,dW_t$
- geometric (GSDE):     $dz = \gamma(t, z, X_t) \odot z\,dt + \sigma(t) \odot z\,dW_t$

with diagonal noise, $\gamma$ an MLP, $\sigma(t)$ a two-layer network of
$(\sin t, \cos t)$ with a ReLU output, $X_t$ an optional controlled path (interpolated
observations) fed to the drift, $z_0 = \xi(X_{t_0})$ linear, and a linear readout of
$z(t_1)$ for classification.

Checked against the authors' code (github.com/yongkyung-oh/Stable-Neural-SDEs,
`models_sde/neuralsde.py`, `Diffusion_model` with the README's `neuralsde_2_16` (LSDE),
`_4_17` (LNSDE), `_6_17` (GSDE)). `bounded=True` (default) follows that code:

- drift: $\tanh(\mathrm{MLP}(\cdot))$; GSDE: $\tanh(\mathrm{MLP}(\cdot) \odot \tanh z)$ (the code
  replaces the factor $z$ by $\tanh z$);
- diffusion: $\tanh(\mathrm{sigmoid}(\theta)\,\cdot\,\text{raw})$ with a learnable scalar
  $\theta$ (init 1), raw $= \sigma(t)$ (LSDE) or $\sigma(t) \odot z$ (LNSDE, GSDE);
- time enters the drift as $(\sin t, \cos t)$ (LNSDE, GSDE; LSDE's drift has no time);
- Itô, Euler--Maruyama.

`bounded=False` gives the paper's formulas exactly (no tanh, factor $z$).
Differences from the code: the control enters by concatenating $X_t$ to the drift MLP's
input (the code concatenates linear embeddings of $z$ and $X_t$ and maps them linearly --
the same function class); the readout is linear (the code uses an MLP head with batch
norm and dropout); all series share the observation grid `ts` (no per-series final index).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import positive_real
from ._common import ModelOutput, SolverSettings, check_inputs, settings_from
from ._sde import SDE_DEFAULTS, split_sde_options
from ._sde_checks import check_sde_config, check_sde_solver
from ._sde_solve import SDESettings, solve_sde

__all__ = ["AbstractStableSDE"]


def _time_of(s, clock):
    """The time of the user's `ts` at the model's time `s` (`clock = (t0, unit)`; None: same)."""
    return s if clock is None else clock[0] + s * clock[1]


class _Field(eqx.Module):
    """Binds a stable model's drift or diffusion to the control path for one sample."""

    model: "AbstractStableSDE"
    control: Any
    which: str = eqx.field(static=True)
    clock: Any = None

    def __call__(self, t, z, args):
        if self.which == "drift":
            x = None if self.control is None else self.control.evaluate(_time_of(t, self.clock))
            return self.model.drift(t, z, x)
        return self.model.diffusion(t, z)


class _JointControlField(eqx.Module):
    """Joint mode with a control: vmaps the per-sample field over the state rows and the
    batched control path together (the `(B, n)` state is one diffrax state)."""

    model: "AbstractStableSDE"
    control: Any
    clock: Any = None

    def __call__(self, t, z, args):
        tx = _time_of(t, self.clock)
        return jax.vmap(lambda zz, c: self.model.drift(t, zz, c.evaluate(tx)))(z, self.control)


class AbstractStableSDE(eqx.Module):
    r"""Shared machinery of `NeuralLSDE`, `NeuralLNSDE`, `NeuralGSDE` (see the module
    docstring for the equations and the reference).

    **Arguments:**

    - `hidden_size`: latent dimension `n` of $z$ (a positive int); the state, drift and
      diagonal diffusion all have shape `(n,)` per sample.
    - `width`, `depth`: hidden width (>= 1) and number of hidden layers (>= 0) of the drift
      MLP $\gamma$ (ReLU activations, linear output of size `n`). Its input is
      `[sin t, cos t]` (LNSDE, GSDE only), then $z$, then $X_t$ (when `input_channels` is
      set): size `n + 2 + C` (LNSDE, GSDE) or `n + C` (LSDE). The noise network
      $\sigma(t)$ is fixed at two layers `2 -> n -> n` with ReLU after each (the code's
      `2NN(t)`).
    - `key`: PRNG key for the initialisation (split four ways: drift MLP, noise network,
      $\xi$, readout).
    - `input_channels`: channels `C` of the controlled path $X$; `None` (default) for an
      autonomous model (then pass `z0`). When set, $\xi$ is a linear map `C -> n` giving
      the default $z_0 = \xi(X_{t_0})$.
    - `out_size`: size of the linear readout `n -> out_size` of $z(t_1)$ (e.g. the number
      of classes, for logits); `None` (default) for no readout (then the call returns the
      saved states).
    - `bounded`: `True` (default) bounds drift and diffusion with tanh as the authors' code
      does; `False` uses the paper's unbounded formulas.
    - `theta`: initial value (default `1.0`) of the learnable scalar logit $\theta$; the
      bounded diffusion is scaled by $\mathrm{sigmoid}(\theta) \in (0, 1)$ (about 0.73 at
      the default). Unused when `bounded=False` (it stays a parameter, with zero gradient).
    - `sde_type`: `"ito"` (default, as the paper) or `"stratonovich"`; the solver must
      converge to it (checked at construction; for LSDE's additive noise both agree).
    - `dtype`: floating dtype of every weight, bias and $\theta$ (default `None`: JAX's
      default float, float32 unless `jax_enable_x64`).
    - `time_span`: the length of the model's own clock (default `10.0`). Every call maps
      its `[ts[0], ts[-1]]` affinely onto `[0, time_span]` and solves there (the control is
      still read at the original times), so the dynamics do not depend on the units or the
      length of the series (on a raw index grid a long series spans tens to thousands of
      time units, over which bounded drift and noise add up). The time-dependent parts
      ($\sigma(t)$, the drift's $\sin t, \cos t$) and step regularizers see the model's
      time. `None` solves in the units of `ts` (ndes's behaviour before 2026-12-03). 10
      was chosen over 3, 30 and the raw grid on the generalization suite's ten UEA sets
      (measured in docs/results.md).
    - `settings`, `sde`, or their fields as keywords (`solver`, default `diffrax.Euler()`,
      any solver `ndes.NeuralSDE` accepts for `sde_type`; `stepsize_controller`,
      `num_steps`, `dt0`, `brownian`, `brownian_tol`, `adjoint`, `max_steps`,
      `batch_mode`): as in `ndes.NeuralSDE` (fixed steps use `ndes.GridBrownianPath`,
      adaptive ones `diffrax.VirtualBrownianTree`; joint batch by default). One
      difference: a constant step size with neither `dt0` nor `num_steps` (the default)
      takes **one step per interval of `ts`** (`len(ts) - 1` equal steps over
      `[ts[0], ts[-1]]`, so 2 NFE per observation: one drift and one diffusion evaluation),
      as `ndes.NeuralCDE` does; measured against adaptive ShARK in docs/results.md.
    """

    drift_mlp: eqx.nn.MLP
    noise_net: eqx.nn.MLP
    theta: Float[Array, ""]
    initial: eqx.nn.Linear | None
    readout: eqx.nn.Linear | None
    hidden_size: int = eqx.field(static=True)
    input_channels: int | None = eqx.field(static=True)
    bounded: bool = eqx.field(static=True)
    sde_type: str = eqx.field(static=True)
    time_span: float | None = eqx.field(static=True)
    settings: SolverSettings
    sde: SDESettings

    # Whether the drift sees (sin t, cos t); whether the diffusion is additive.
    time_input: eqx.AbstractClassVar[bool]
    additive: eqx.AbstractClassVar[bool]

    def __init__(
        self,
        hidden_size: int,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        input_channels: int | None = None,
        out_size: int | None = None,
        bounded: bool = True,
        theta: float = 1.0,
        sde_type: str = "ito",
        dtype=None,
        time_span: float | None = 10.0,
        settings: SolverSettings | None = None,
        sde: SDESettings | None = None,
        **options: Any,
    ):
        name = type(self).__name__
        if hidden_size < 1 or width < 1 or depth < 0:
            raise ValueError(
                f"{name} needs hidden_size >= 1, width >= 1, depth >= 0; got {hidden_size}, "
                f"{width}, {depth}."
            )
        if time_span is not None and positive_real(time_span) is None:
            raise ValueError(
                f"{name}(time_span={time_span!r}) must be a positive finite number (the "
                "length of the model's clock) or None (solve in the units of `ts`)."
            )
        options, sde = split_sde_options(dict(options), sde)
        settings = settings_from(SDE_DEFAULTS, settings, options, name)
        check_sde_config(name, settings, sde, "diagonal", None, per_interval=True)
        check_sde_solver(settings.solver, sde_type, type(self).additive, name)
        kd, kn1, ki, kr = jr.split(key, 4)
        c = 0 if input_channels is None else int(input_channels)
        in_size = hidden_size + 2 * int(type(self).time_input) + c
        self.drift_mlp = eqx.nn.MLP(
            in_size, hidden_size, width, depth, activation=jax.nn.relu, key=kd, dtype=dtype
        )
        # sigma(t) = relu(Linear(relu(Linear(sin t, cos t)))): the code's "2NN(t)".
        self.noise_net = eqx.nn.MLP(
            2,
            hidden_size,
            hidden_size,
            1,
            activation=jax.nn.relu,
            final_activation=jax.nn.relu,
            key=kn1,
            dtype=dtype,
        )
        self.theta = jnp.asarray(theta, dtype=dtype if dtype is not None else float)
        self.initial = (
            None if input_channels is None else eqx.nn.Linear(c, hidden_size, key=ki, dtype=dtype)
        )
        self.readout = (
            None if out_size is None else eqx.nn.Linear(hidden_size, out_size, key=kr, dtype=dtype)
        )
        self.hidden_size = hidden_size
        self.input_channels = input_channels
        self.bounded = bounded
        self.sde_type = sde_type
        self.time_span = None if time_span is None else float(time_span)
        self.settings = settings
        self.sde = sde

    # --- the SDE, per sample -------------------------------------------------------
    def _gamma(self, t, z, x):
        parts = []
        if type(self).time_input:
            t = jnp.asarray(t, z.dtype)
            parts.append(jnp.stack([jnp.sin(t), jnp.cos(t)]))
        parts.append(z)
        if x is not None:
            parts.append(x.astype(z.dtype))
        return self.drift_mlp(jnp.concatenate(parts))

    def sigma(self, t, dtype) -> Float[Array, " n"]:
        r"""$\sigma(t) \ge 0$, shape `(n,)`."""
        t = jnp.asarray(t, dtype)
        return self.noise_net(jnp.stack([jnp.sin(t), jnp.cos(t)]))

    @abc.abstractmethod
    def drift(self, t, z: Float[Array, " n"], x: Float[Array, " C"] | None) -> Float[Array, " n"]:
        """Drift at one state `z` with control value `x = X(t)` (or None)."""

    @abc.abstractmethod
    def _noise_raw(self, t, z):
        """The diffusion before the optional tanh bound: `sigma(t)` or `sigma(t) * z`."""

    def diffusion(self, t, z: Float[Array, " n"]) -> Float[Array, " n"]:
        """Diagonal diffusion at one state `z`, shape `(n,)`."""
        raw = self._noise_raw(t, z)
        if self.bounded:
            return jnp.tanh(jax.nn.sigmoid(self.theta).astype(z.dtype) * raw)
        return raw

    def __call__(
        self,
        ts: Float[ArrayLike, " T"],
        control: diffrax.AbstractPath | None = None,
        *,
        key: PRNGKeyArray,
        z0: Float[ArrayLike, " n"] | Float[ArrayLike, "B n"] | None = None,
        regularizers: Sequence = (),
        train_step: ArrayLike | None = None,
    ) -> ModelOutput:
        """Sample the SDE over `ts` and read out the final state.

        **Arguments:**

        - `ts`: `(T,)` strictly increasing times shared by the batch; the solve runs from
          `ts[0]` to `ts[-1]` and saves at every `ts` (on the model's clock `[0,
          time_span]` unless `time_span=None`; the control is read at `ts` itself).
        - `control`: the controlled path $X$, e.g.
          `diffrax.CubicInterpolation(ts, diffrax.backward_hermite_coefficients(ts, x))`,
          evaluating to `(C,)`. For a batch pass a path whose array leaves carry a leading
          batch axis, e.g.
          `jax.vmap(lambda c: diffrax.CubicInterpolation(ts, c))(coeffs)`. `None` for an
          autonomous model.
        - `key`: PRNG key of the Brownian motion.
        - `z0`: initial state `(n,)` / `(B, n)`; default $\\xi(X(t_0))$ (needs `control`).
        - `regularizers`, `train_step`: as in `ndes.diffeqsolve`.

        **Returns:** a `ModelOutput`: `ys` the readout `(out,)` / `(B, out)` (or, without a
        readout, the states `(T, n)` / `(B, T, n)`), `final_state` $z(t_1)$, penalty, stats.
        """
        name = type(self).__name__
        if (control is None) != (self.input_channels is None):
            raise ValueError(
                f"{name}: built with input_channels={self.input_channels}, so `control` must be "
                + (
                    "None."
                    if self.input_channels is None
                    else "a diffrax path (e.g. diffrax.CubicInterpolation) of the observations."
                )
            )
        batched_control = control is not None and not _unbatched_ok(control, jnp.asarray(ts))
        control_batch = None
        if control is not None:
            control_batch = _check_control(control, jnp.asarray(ts), batched_control, self, name)
        if z0 is None:
            if control is None:
                raise ValueError(f"{name}: pass `z0` (the model has no control path to map).")
            t_first = jnp.asarray(ts)[0]
            if batched_control:
                x0 = jax.vmap(lambda c: c.evaluate(t_first))(control)
                z0 = jax.vmap(self.initial)(x0)
            else:
                z0 = self.initial(control.evaluate(t_first))
        ts, z0 = check_inputs(ts, z0, name)
        if z0.shape[-1] != self.hidden_size:
            raise ValueError(
                f"{name}: `z0` must have {self.hidden_size} components (hidden_size); got "
                f"shape {z0.shape}."
            )
        if control is not None and (z0.ndim == 2) != batched_control:
            raise ValueError(
                f"{name}: a batch of states needs a batched control path (array leaves with a "
                "leading batch axis, e.g. jax.vmap(lambda c: diffrax.CubicInterpolation(ts, "
                "c))(coeffs)) and a single state an unbatched one."
            )
        if control_batch is not None and z0.ndim == 2 and z0.shape[0] != control_batch:
            raise ValueError(
                f"{name}: `z0` holds {z0.shape[0]} states (shape {z0.shape}) but the control "
                f"path holds {control_batch} series; pass one initial state per series."
            )
        clock = None
        if self.time_span is not None:  # the model's clock: [ts[0], ts[-1]] -> [0, time_span]
            unit = (ts[-1] - ts[0]) / self.time_span
            clock = (ts[0], unit)
            ts = (ts - ts[0]) / unit
        joint = self.settings.batch_mode == "joint"
        sde = self.sde
        if not self.settings.adaptive and self.settings.dt0 is None and sde.num_steps is None:
            # One step per interval of `ts` (equal steps over [ts[0], ts[-1]]): the default.
            sde = dataclasses.replace(sde, num_steps=ts.shape[0] - 1)
        out = solve_sde(
            _Field(self, control if z0.ndim == 1 else None, "drift", clock),
            _Field(self, None, "diffusion"),
            ts,
            z0,
            key,
            settings=self.settings,
            sde=sde,
            noise="diagonal",
            noise_size=self.hidden_size,
            owner=name,
            regularizers=regularizers,
            train_step=train_step,
            joint_drift=_JointControlField(self, control, clock)
            if control is not None and joint
            else None,
            sample_drift=None if control is None else (lambda c: _Field(self, c, "drift", clock)),
            sample_data=None if z0.ndim == 1 else control,
            final_only=self.readout is not None,  # the readout reads the final state only
        )
        final = out.ys[..., -1, :]
        if self.readout is None:
            return ModelOutput(out.ys, out.penalty, out.penalty_terms, out.stats, final)
        head = self.readout if final.ndim == 1 else jax.vmap(self.readout)
        return ModelOutput(head(final), out.penalty, out.penalty_terms, out.stats, final)


def _unbatched_ok(control, ts) -> bool:
    """Whether `control.evaluate(t)` works unbatched and returns a vector."""
    try:
        out = jax.eval_shape(lambda c: c.evaluate(ts[0]), control)
    except Exception:  # a batched path fails inside diffrax's interpolation on shapes
        return False
    return len(out.shape) == 1


def _check_control(control, ts, batched: bool, model, name: str) -> int | None:
    """Static check that the control evaluates to `(input_channels,)` per sample; returns
    the batch size of a batched path (`None` for an unbatched one)."""
    if batched:
        try:
            shape = jax.eval_shape(
                lambda c: jax.vmap(lambda cc: cc.evaluate(ts[0]))(c), control
            ).shape
        except Exception as e:  # not a batch of paths either
            raise ValueError(
                f"{name}: `control` must be a diffrax path evaluating to shape "
                f"(input_channels,) = ({model.input_channels},), or a batch of such paths "
                "(array leaves with a leading batch axis, e.g. jax.vmap(lambda c: "
                f"diffrax.CubicInterpolation(ts, c))(coeffs)); evaluating it failed: {e}"
            ) from e
    else:
        shape = jax.eval_shape(lambda c: c.evaluate(ts[0]), control).shape
    if len(shape) != 1 + int(batched) or shape[-1] != model.input_channels:
        got = shape[-1] if len(shape) == 1 + int(batched) else None
        raise ValueError(
            f"{name}: the control path has "
            + (f"{got} channels" if got is not None else f"values of shape {shape[int(batched) :]}")
            + f" but the model was built with input_channels={model.input_channels}."
        )
    return shape[0] if batched else None
