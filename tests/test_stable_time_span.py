"""`time_span` of the stable SDEs: the model's own clock, `[ts[0], ts[-1]] -> [0, time_span]`."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import ndes

CLASSES = (ndes.NeuralLSDE, ndes.NeuralLNSDE, ndes.NeuralGSDE)


def _paths(ts, x):
    """A batched cubic control on times `ts` for values `x` of shape `(B, L, C)`."""
    coeffs = jax.vmap(lambda xx: diffrax.backward_hermite_coefficients(ts, xx))(x)
    return jax.vmap(lambda c: diffrax.CubicInterpolation(ts, c))(coeffs)


def _series(L=9, B=3, C=2):
    ts = jnp.cumsum(jnp.concatenate([jnp.zeros(1), 1.0 + jr.uniform(jr.key(1), (L - 1,))]))
    return ts + 4.0, jr.normal(jr.key(2), (B, L, C))  # irregular, starting at t = 4


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("mode", ["joint", "vmap"])
def test_time_span_equals_solving_on_rescaled_times(cls, mode):
    """`time_span=T` on raw times = no `time_span` on the times mapped onto [0, T] (the
    control rebuilt there): the same solve, so the same logits and states."""
    ts, x = _series()
    T = 5.0
    ts_model = (ts - ts[0]) * (T / (ts[-1] - ts[0]))
    key = jr.key(3)
    kw = dict(input_channels=2, out_size=4, batch_mode=mode)
    clocked = cls(6, 8, 1, key=jr.key(0), time_span=T, **kw)
    plain = cls(6, 8, 1, key=jr.key(0), time_span=None, **kw)
    a = clocked(ts, _paths(ts, x), key=key)
    b = plain(ts_model, _paths(ts_model, x), key=key)
    np.testing.assert_allclose(a.ys, b.ys, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(a.final_state, b.final_state, rtol=1e-9, atol=1e-11)
    for out in (a, b):  # per sample in vmap mode
        assert np.all(np.asarray(out.stats["num_fevals"]) == 2 * (len(ts) - 1))


def test_time_span_makes_the_model_independent_of_the_units_of_ts():
    """Seconds or hours, an index grid or [0, 1]: with a clock the output is the same."""
    ts, x = _series()
    model = ndes.NeuralLNSDE(6, 8, 1, key=jr.key(0), input_channels=2, out_size=4, time_span=10)
    key = jr.key(4)
    ref = model(ts, _paths(ts, x), key=key).ys
    for scale, shift in ((3600.0, 0.0), (1e-3, -2.0)):
        t2 = ts * scale + shift
        np.testing.assert_allclose(model(t2, _paths(t2, x), key=key).ys, ref, rtol=1e-8, atol=1e-10)
    plain = ndes.NeuralLNSDE(6, 8, 1, key=jr.key(0), input_channels=2, out_size=4, time_span=None)
    t2 = ts * 3600.0
    moved = plain(t2, _paths(t2, x), key=key).ys
    assert not np.allclose(moved, plain(ts, _paths(ts, x), key=key).ys)


def test_time_span_single_series_jit_and_gradient():
    """Unbatched control, under `jax.jit`, and a finite, nonzero gradient through the clock."""
    ts, x = _series(B=1)
    path = diffrax.CubicInterpolation(ts, diffrax.backward_hermite_coefficients(ts, x[0]))
    model = ndes.NeuralLSDE(4, 8, 1, key=jr.key(0), input_channels=2, out_size=3, time_span=2.5)
    key = jr.key(5)
    out = model(ts, path, key=key)
    jitted = eqx.filter_jit(lambda m: m(ts, path, key=key).ys)(model)
    np.testing.assert_allclose(jitted, out.ys, rtol=1e-10, atol=1e-12)
    grads = eqx.filter_grad(lambda m: jnp.sum(m(ts, path, key=key).ys ** 2))(model)
    flat = jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(grads)])
    assert bool(jnp.all(jnp.isfinite(flat))) and float(jnp.max(jnp.abs(flat))) > 0


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "10", True])
def test_time_span_must_be_positive_and_finite(bad):
    with pytest.raises(ValueError, match=r"NeuralLSDE\(time_span=.*positive finite number"):
        ndes.NeuralLSDE(4, 8, 1, key=jr.key(0), time_span=bad)
