"""Shared test helpers: small vector fields, a real evaluation counter, finite differences."""

import diffrax
import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np


class Counter:
    """Counts real vector-field evaluations through `jax.debug.callback`."""

    def __init__(self):
        self.n = 0

    def _tick(self, t=None):
        self.n += 1 if t is None else int(np.size(t))

    def wrap(self, f, *, per_time=False):
        """`per_time=True` counts one evaluation per time point when the solver `vmap`s the
        field over several times (the callback then runs once with a batched `t`)."""

        def counted(t, y, args):
            if per_time:
                jax.debug.callback(self._tick, t)
            else:
                jax.debug.callback(self._tick)
            return f(t, y, args)

        return counted

    def read(self):
        jax.effects_barrier()
        return self.n


class MLPField(eqx.Module):
    mlp: eqx.nn.MLP
    scale: float = eqx.field(static=True)

    def __init__(self, dim, width, key, dtype=jnp.float64, scale=1.0):
        self.mlp = eqx.nn.MLP(dim, dim, width, 2, activation=jnp.tanh, key=key, dtype=dtype)
        self.scale = scale

    def __call__(self, t, y, args):
        return self.scale * self.mlp(y)


def flat_field(key, scale):
    """A float64 `MLPField` as one flat parameter vector, for finite differences.

    Returns `(flat, build)` with `build(flat)` the field. A large `scale` makes the field fast,
    so that per-step estimates (differences of O(1) stage values) sit well above rounding.
    """
    params, static = eqx.partition(MLPField(2, 8, key, scale=scale), eqx.is_array)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    return flat, lambda p: eqx.combine(unravel(p), static)


def linear_term(A):
    return diffrax.ODETerm(lambda t, y, args: A @ y)


def central_fd(f, x, eps=1e-6):
    """Central finite differences of scalar `f` at flat float64 array `x`."""
    x = np.asarray(x, dtype=np.float64)
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = eps
        g.flat[i] = (float(f(jnp.asarray(x + e))) - float(f(jnp.asarray(x - e)))) / (2 * eps)
    return g


def with_posterior_equal_prior(model):
    """Helper used in tests/docs: returns a copy whose posterior drift ignores the context and
    equals the prior drift, and whose q(z0) = N(0, I) (encoder output zeroed). Both KL terms are
    then exactly 0."""
    c = model.context_size
    pd = model.prior_drift
    # post_drift input is [t, z, c]: copy the prior's first layer and zero the context columns
    w0 = pd.layers[0].weight
    new_w0 = jnp.concatenate([w0, jnp.zeros((w0.shape[0], c), w0.dtype)], axis=1)
    n_layers = len(pd.layers)
    post = eqx.tree_at(
        lambda m: [lin.weight for lin in m.layers] + [lin.bias for lin in m.layers],
        model.post_drift,
        [new_w0] + [lin.weight for lin in pd.layers[1:]] + [lin.bias for lin in pd.layers],
    )
    assert n_layers == len(post.layers)
    model = eqx.tree_at(lambda m: m.post_drift, model, post)
    eo = model.encoder_out
    model = eqx.tree_at(
        lambda m: (m.encoder_out.weight, m.encoder_out.bias),
        model,
        (jnp.zeros_like(eo.weight), jnp.zeros_like(eo.bias)),
    )
    return model
