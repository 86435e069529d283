"""Classifiers on the `ndes.train.classification_loss` protocol.

Each is called as `model(*inputs, key=..., regularizers=..., train_step=...)` and returns
`(logits, ModelOutput)`, so one loss, one evaluation and one command line (`ndes train`,
`ndes demo`) serve them all:

- `ODEClassifier`: a fixed-size input `x` -> linear encoder -> neural ODE on `t in [0, 1]`
  -> linear readout (the ODE-Net of Chen et al. 2018, "Neural Ordinary Differential
  Equations", with the convolutional front end replaced by a linear map).
- `CDEClassifier`: a `NeuralCDE` on the `(times, coeffs, t1)` of `ndes.data.prepare_cde`.
- `StableSDEClassifier`: a stable neural SDE (Oh, Lee, Park 2024) driven by the cubic path
  of the same inputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

from ._cde import NeuralCDE
from ._ode import ModelOutput, NeuralODE
from ._stable_sde import AbstractStableSDE

__all__ = ["ODEClassifier", "CDEClassifier", "StableSDEClassifier"]


class ODEClassifier(eqx.Module):
    """`logits = readout(h(1))`, `dh/dt = f(h)`, `h(0) = encoder(x)`, with `f` an MLP.

    **Arguments:**

    - `in_size`: size of an input `x`; `num_classes`: number of logits.
    - `hidden`: size of the ODE state `h`.
    - `width`, `depth`, `activation`: the vector field MLP (`NeuralODE.mlp`).
    - `key`: PRNG key for the initialisation.
    - `rtol`, `atol`: the default `PIDController`'s tolerances.
    - `ode_kwargs`: go to `ndes.NeuralODE` (default: Tsit5 with `PIDController(rtol, atol)`,
      joint batch mode).

    Called on a batch `x` of shape `(B, in_size)`, returns `(logits (B, num_classes),
    ModelOutput)`; `key` is accepted for the classifier protocol and unused.
    """

    encoder: eqx.nn.Linear
    ode: NeuralODE
    readout: eqx.nn.Linear

    def __init__(
        self,
        in_size: int,
        num_classes: int,
        hidden: int,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        activation: Callable[[Array], Array] = jnp.tanh,
        rtol: float = 1e-3,
        atol: float = 1e-6,
        **ode_kwargs: Any,
    ):
        ke, kf, kr = jax.random.split(key, 3)
        self.encoder = eqx.nn.Linear(in_size, hidden, key=ke)
        ode_kwargs.setdefault("solver", diffrax.Tsit5())
        ode_kwargs.setdefault("stepsize_controller", diffrax.PIDController(rtol=rtol, atol=atol))
        self.ode = NeuralODE.mlp(hidden, width, depth, key=kf, activation=activation, **ode_kwargs)
        self.readout = eqx.nn.Linear(hidden, num_classes, key=kr)

    def with_batch_mode(self, batch_mode: str) -> ODEClassifier:
        """The same parameters with the ODE solved `"joint"`ly or per input (`"vmap"`)."""
        ode = dataclasses.replace(self.ode, batch_mode=batch_mode)
        return eqx.tree_at(lambda m: m.ode, self, ode)

    def __call__(
        self,
        x: Float[ArrayLike, "B in_size"],
        *,
        key: PRNGKeyArray | None = None,
        regularizers: Sequence = (),
        train_step: ArrayLike | None = None,
    ) -> tuple[Float[Array, "B num_classes"], ModelOutput]:
        del key
        h0 = jax.vmap(self.encoder)(jnp.asarray(x))
        ts = jnp.array([0.0, 1.0], dtype=h0.dtype)
        out = self.ode(ts, h0, regularizers=regularizers, train_step=train_step)
        logits = jax.vmap(self.readout)(out.ys[:, -1])
        return logits, out


class CDEClassifier(eqx.Module):
    """A `NeuralCDE` (built with `out_size = num_classes`) on `(times, coeffs, t1)`.

    Called as `model(times (B, L), coeffs, t1 (B,), *, key=None, regularizers=(),
    train_step=None)` with the first three entries of an `ndes.data.CDEData` batch; returns
    `(logits (B, num_classes), ModelOutput)`. `key` is unused.
    """

    cde: NeuralCDE

    def __call__(
        self,
        times: Float[ArrayLike, "B L"],
        coeffs: PyTree[Array],
        t1: Float[ArrayLike, " B"],
        *,
        key: PRNGKeyArray | None = None,
        regularizers: Sequence = (),
        train_step: ArrayLike | None = None,
    ) -> tuple[Array, ModelOutput]:
        del key
        out = self.cde(times, coeffs, t1=t1, regularizers=regularizers, train_step=train_step)
        return out.ys, out


class StableSDEClassifier(eqx.Module):
    """A stable neural SDE (`ndes.NeuralLSDE`, `NeuralLNSDE` or `NeuralGSDE`, built with
    `input_channels` and `out_size = num_classes`) driven by the cubic path of each series.

    Called as `model(times (B, L), coeffs, t1 (B,), *, key, regularizers=(),
    train_step=None)`; all series must share one time grid (`times[0]`, as the padded grids
    of `ndes.data.load_uea` do). The solve runs over the whole grid and reads out at its end:
    the path is constant after a series' last observation (`t1` is not needed). `key`
    drives the Brownian motion. Returns `(logits (B, num_classes), ModelOutput)`.
    """

    sde: AbstractStableSDE

    def __call__(
        self,
        times: Float[ArrayLike, "B L"],
        coeffs: PyTree[Array],
        t1: Float[ArrayLike, " B"],
        *,
        key: PRNGKeyArray,
        regularizers: Sequence = (),
        train_step: ArrayLike | None = None,
    ) -> tuple[Array, ModelOutput]:
        del t1
        ts = jnp.asarray(times)[0]
        path = jax.vmap(lambda c: diffrax.CubicInterpolation(ts, c))(coeffs)
        out = self.sde(ts, path, key=key, regularizers=regularizers, train_step=train_step)
        return out.ys, out
