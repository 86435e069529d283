"""MLP vector fields shared by the models."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["MLPVectorField"]


class MLPVectorField(eqx.Module):
    """`f(t, y) = scale * MLP([t, y])` (or `MLP(y)` when `time_input=False`).

    Works on a single state `y` of shape `(in_size,)`; use `jax.vmap` (or the models'
    joint-batch mode) for batches. The output has shape `out_shape`, by default
    `(in_size,)`; set it for CDE/SDE fields whose output is a matrix (the MLP outputs
    `prod(out_shape)` numbers, reshaped row-major).

    **Arguments:**

    - `in_size`: state dimension `n` (>= 1).
    - `width`, `depth`: hidden width (>= 1) and number of hidden layers (>= 0; 0 is one
      linear layer).
    - `key`: PRNG key for the initialisation.
    - `time_input`: concatenate the scalar `t` in front of `y` (input size `n + 1`);
      default `False`.
    - `activation`: hidden activation (default `jax.nn.softplus`).
    - `final_activation`: applied to the output before `scale` (e.g. `jnp.tanh` for bounded
      fields); default the identity.
    - `out_shape`: output shape; defaults to `(in_size,)`.
    - `scale`: constant (static, not trained) output scale; default `1.0`.
    - `dtype`: floating dtype of the MLP's weights and biases (default `None`: JAX's default
      float, float32 unless `jax_enable_x64`). `t` is cast to the dtype of `y`.
    """

    mlp: eqx.nn.MLP
    time_input: bool = eqx.field(static=True)
    out_shape: tuple[int, ...] = eqx.field(static=True)
    scale: float = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        time_input: bool = False,
        activation: Callable = jax.nn.softplus,
        final_activation: Callable = lambda x: x,
        out_shape: tuple[int, ...] | None = None,
        scale: float = 1.0,
        dtype=None,
    ):
        if in_size < 1 or width < 1 or depth < 0:
            raise ValueError(
                f"MLPVectorField needs in_size >= 1, width >= 1, depth >= 0; got "
                f"in_size={in_size}, width={width}, depth={depth}."
            )
        self.out_shape = (in_size,) if out_shape is None else tuple(out_shape)
        out = 1
        for d in self.out_shape:
            out *= d
        self.time_input = time_input
        self.scale = scale
        self.mlp = eqx.nn.MLP(
            in_size + int(time_input),
            out,
            width,
            depth,
            activation=activation,
            final_activation=final_activation,
            key=key,
            dtype=dtype,
        )

    def __call__(self, t, y: Float[Array, " n"], args=None) -> Float[Array, "..."]:
        x = jnp.concatenate([jnp.reshape(t, (1,)).astype(y.dtype), y]) if self.time_input else y
        return self.scale * self.mlp(x).reshape(self.out_shape)
