"""Shared pieces of the ndes.train tests: a tiny MLP regression (compiles in well under a
second), a toy "cost" problem whose NFE is a known function of one parameter, a stand-in
regularizer, and `_fit` (ndes.fit with small defaults)."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ndes.train import (
    fit,
    init_state,
)


def _regression_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = np.sin(x[:, :1]) + 0.5 * x[:, 1:]
    return x, y


def _mlp(seed=0, width=8):
    return eqx.nn.MLP(2, 1, width, 1, key=jax.random.key(seed))


class ToyReg(eqx.Module):
    """A stand-in regularizer: its (resolved) weight scales `sum(params**2)`."""

    weight: Any

    @property
    def name(self):
        return "ToyReg"


def _weight(regularizers, train_step):
    w = 0.0
    for r in regularizers:
        w = w + (r.weight(train_step) if callable(r.weight) else r.weight)
    return w


def mse_loss(model, batch, *, key, regularizers, train_step):
    x, y = batch
    pred = jax.vmap(model)(x)
    aux = {}
    if regularizers:
        sq = sum(jnp.sum(p**2) for p in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)))
        aux["penalty"] = _weight(regularizers, train_step) * sq
        aux["penalty_terms"] = {"ToyReg": sq}
    # Fake, but per-example counters, to check that fit averages them.
    aux["num_fevals"] = jnp.full(x.shape[0], 7.0)
    aux["num_accepted_steps"] = 2
    aux["num_rejected_steps"] = 0
    return jnp.mean((pred - y) ** 2), aux


def _params(model):
    return jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))


def _assert_bitwise(m1, m2):
    for a, b in zip(_params(m1), _params(m2), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _fit(**kw):
    x, y = _regression_data()
    args = dict(key=jax.random.key(1), batch_size=8, progress=False)
    args.update(kw)
    model = args.pop("model", None) or _mlp()
    return fit(
        model,
        args.pop("data", (x, y)),
        args.pop("loss_fn", mse_loss),
        args.pop("optimizer", optax.adam(1e-2)),
        **args,
    )


class Scalar(eqx.Module):
    a: jax.Array


def toy_cost_loss(model, batch, *, key, regularizers, train_step):
    """Task pulls a to 2; the 'solver cost' grows as 10 + 40 a^2; penalty w a^2."""
    a = model.a
    aux = {"num_fevals": 10.0 + 40.0 * a**2}
    if regularizers:
        aux["penalty"] = _weight(regularizers, train_step) * a**2
        aux["penalty_terms"] = {"ToyReg": a**2}
    return jnp.mean((a - batch) ** 2), aux


def _state_at(step=3, model=None):
    state = init_state(model or _mlp(), optax.adam(1e-2), jax.random.key(0))
    return eqx.tree_at(lambda s: s.step, state, jnp.asarray(step, jnp.int32))
