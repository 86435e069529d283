"""TrainState: everything a training run needs to continue exactly where it stopped."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int, PyTree, UInt

__all__ = ["TrainState", "init_state", "key_data", "wrap_key"]


class TrainState(eqx.Module):
    """The complete state of a training run; what a checkpoint holds.

    **Fields:**

    - `model`: the Equinox model being trained.
    - `opt_state`: the optax optimiser state.
    - `step`: number of optimiser steps taken so far (int32 scalar array; passed to the
      loss as `train_step`, so schedules never trigger a recompile).
    - `key`: raw PRNG key data from which the loss key of step `s` is derived as
      `fold_in(key, s)`.
    - `data_key`: raw PRNG key data of the data order: the permutation of epoch `e` is
      `jax.random.permutation(fold_in(data_key, e), num_examples)`.
    - `eval_key`: raw PRNG key data passed to evaluation (fixed, so evaluations compare).
    - `budget_weights`: the `BudgetState` of each `BudgetWeight` (its current weight,
      reference NFE and step; in the order of `find_budget_weights(regularizers)`).
    - `skipped_steps`: how many steps had a non-finite loss or gradient and were not
      applied (`fit(on_nonfinite="skip")`; int32 scalar array).
    - `skip_streak`: how many of the latest steps in a row were skipped.
    - `key_impl`: the PRNG implementation name (static), used to rebuild typed keys.

    Keys are stored as raw `uint32` data (`jax.random.key_data`) because typed key arrays
    cannot be written by `eqx.tree_serialise_leaves`.
    """

    model: PyTree
    opt_state: optax.OptState
    step: Int[Array, ""]
    key: UInt[Array, "..."]
    data_key: UInt[Array, "..."]
    eval_key: UInt[Array, "..."]
    budget_weights: tuple[Any, ...]
    skipped_steps: Int[Array, ""]
    skip_streak: Int[Array, ""]
    key_impl: str = eqx.field(static=True, default="threefry2x32")


def _is_typed_key(key) -> bool:
    return hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def key_data(key) -> tuple[Array, str]:
    """`(raw uint32 data, impl name)` of a typed key or a legacy `PRNGKey` array."""
    if _is_typed_key(key):
        impl = str(jax.random.key_impl(key))
        return jax.random.key_data(key), impl
    key = jnp.asarray(key)
    if key.dtype != jnp.uint32:
        raise ValueError(
            f"fit(key=...) must be a PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)); "
            f"got an array of dtype {key.dtype} and shape {key.shape}."
        )
    return key, str(jax.random.key_impl(jax.random.wrap_key_data(key)))


def wrap_key(data: Array, impl: str):
    """A typed key from raw data (inverse of `key_data`)."""
    return jax.random.wrap_key_data(data, impl=impl)


def init_state(
    model: PyTree,
    optimizer: optax.GradientTransformation,
    key,
    budget_weights: tuple[Any, ...] = (),
) -> TrainState:
    """The state at step 0.

    **Arguments:**

    - `model`: the Equinox model.
    - `optimizer`: an optax `GradientTransformation`; initialised on the model's arrays.
    - `key`: a PRNG key; split into the loss, data-order and evaluation keys.
    - `budget_weights`: the initial `BudgetState` of each `BudgetWeight`.

    **Returns:** a `TrainState` with `step == 0`.
    """
    data, impl = key_data(key)
    typed = wrap_key(data, impl)
    k_loss, k_data, k_eval = jax.random.split(typed, 3)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    return strengthen(
        TrainState(
            model=model,
            opt_state=opt_state,
            step=jnp.zeros((), jnp.int32),
            key=jax.random.key_data(k_loss),
            data_key=jax.random.key_data(k_data),
            eval_key=jax.random.key_data(k_eval),
            budget_weights=tuple(budget_weights),
            skipped_steps=jnp.zeros((), jnp.int32),
            skip_streak=jnp.zeros((), jnp.int32),
            key_impl=impl,
        )
    )


def strengthen(tree: Any) -> Any:
    """Drop weak types from every array leaf, so that the first train step sees the same
    input types as every later one (a weak-typed leaf would otherwise recompile once)."""

    def f(x):
        if isinstance(x, jax.Array) and jax.typeof(x).weak_type:
            return jax.lax.convert_element_type(x, x.dtype)
        return x

    return jax.tree_util.tree_map(f, tree)


def array_signature(tree: Any) -> list[list]:
    """`[path, shape, dtype]` of every array leaf: the structure a checkpoint must match."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if eqx.is_array_like(leaf) and not isinstance(leaf, (bool, int, float, complex)):
            arr = leaf
            out.append(
                [jax.tree_util.keystr(path), list(jnp.shape(arr)), str(jnp.result_type(arr))]
            )
        elif isinstance(leaf, (bool, int, float, complex)):
            out.append([jax.tree_util.keystr(path), [], type(leaf).__name__])
    return out
