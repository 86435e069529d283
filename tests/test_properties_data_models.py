"""Property-based tests (hypothesis) of the irregular/missing-data pipeline:
random lengths, random increasing irregular times and random missing masks (NaN at the start,
at the end, whole channels) through `ndes.data.cde_features` -> coefficients -> a `NeuralCDE`
and a stable neural SDE (forward + gradient), and `LatentSDE.elbo` on random irregular,
partly missing series. Each either gives finite outputs and gradients or raises the error the
docs promise.

Shapes are fixed per test (padding to `L`) so that every jitted model compiles once; the
random content is in the values of the arrays."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ndes
from ndes.data import cde_features, hermite_coefficients

N, L, C = 3, 8, 2  # series, padded length, channels (model tests)
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@st.composite
def irregular_batch(draw, n=N, length=L, channels=C, min_len=1):
    """(times (n, length), values (n, length, channels) with NaN, lengths, kinds): random
    increasing irregular times, random lengths (NaN padding after each series' end), a random
    missing mask, optionally NaN runs at the start or the end of an observed range, and
    optionally one whole channel of one series missing."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    start = draw(st.floats(-100.0, 100.0))
    gaps = rng.uniform(1e-3, 1.0, size=(n, length - 1)) * draw(st.sampled_from([1e-2, 1.0, 50.0]))
    times = start + np.concatenate([np.zeros((n, 1)), np.cumsum(gaps, axis=1)], axis=1)
    values = rng.normal(size=(n, length, channels))
    lengths = np.array([draw(st.integers(min_len, length)) for _ in range(n)])
    p = draw(st.sampled_from([0.0, 0.3, 0.7]))
    values[rng.uniform(size=values.shape) < p] = np.nan
    kinds = set()
    if draw(st.booleans()):  # a NaN run at the start of some series
        i, k = draw(st.integers(0, n - 1)), draw(st.integers(1, length - 1))
        values[i, :k] = np.nan
        kinds.add("start")
    if draw(st.booleans()):  # a NaN run at the end (the series stopped early)
        i, k = draw(st.integers(0, n - 1)), draw(st.integers(1, length - 1))
        values[i, length - k :] = np.nan
        kinds.add("end")
    if draw(st.booleans()):  # one channel of one series never observed
        values[draw(st.integers(0, n - 1)), :, draw(st.integers(0, channels - 1))] = np.nan
        kinds.add("channel")
    for i, ell in enumerate(lengths):
        values[i, ell:] = np.nan  # padding
    return times, values, lengths, kinds


def _nan_channel(values):
    """Does some series have a channel with no observation at all (the documented error)?"""
    return bool(np.isnan(values).all(axis=1).any())


@settings(max_examples=60, **SETTINGS)
@given(irregular_batch(n=3, length=6, channels=3))
def test_features_and_coefficients_are_finite_or_a_clear_error(batch):
    times, values, lengths, _kinds = batch
    if _nan_channel(values):
        with pytest.raises(ValueError, match="all-NaN|never observed|no observation|NaN"):
            cde_features(times, values)
        return
    f = cde_features(times, values)
    assert f.shape == (3, 6, 7) and np.all(np.isfinite(f))
    # The time channel starts at 0, increases strictly and its longest span is 1.
    assert np.all(f[:, 0, 0] == 0) and np.all(np.diff(f[..., 0], axis=1) > 0)
    assert np.isclose(f[:, -1, 0].max(), 1.0)
    # Counts are non-decreasing, start at 0 or 1/L, and observed values are kept.
    counts = f[..., 4:]
    assert np.all(np.diff(counts, axis=1) >= 0)
    obs = ~np.isnan(values)
    np.testing.assert_array_equal(f[..., 1:4][obs], values[obs])
    coeffs = hermite_coefficients(f[..., 0], f)
    assert all(np.all(np.isfinite(np.asarray(c))) for c in coeffs)


# ---------------------------------------------------------------------------------------
# NeuralCDE: per-series irregular times and final times, forward + gradient


_CDE = ndes.NeuralCDE(2 * C + 1, 4, 2, 8, 1, key=jax.random.key(0))


@eqx.filter_jit
def _cde_loss_and_grad(model, ts, coeffs, t1):
    def loss(m):
        out = m(ts, coeffs, t1=t1)
        return jnp.sum(out.ys**2), out

    return eqx.filter_value_and_grad(loss, has_aux=True)(model)


def _finite_tree(tree):
    leaves = jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))
    return all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


@settings(max_examples=40, **SETTINGS)
@given(irregular_batch(min_len=2))
def test_neural_cde_forward_and_gradient_are_finite(batch):
    times, values, lengths, _ = batch
    if _nan_channel(values):
        with pytest.raises(ValueError):
            cde_features(times, values)
        return
    f = cde_features(times, values)
    ts = jnp.asarray(f[..., 0])
    t1 = ts[jnp.arange(N), jnp.asarray(lengths) - 1]  # each series ends at its last point
    coeffs = _CDE.coefficients(ts, jnp.asarray(f))
    (value, out), grads = _cde_loss_and_grad(_CDE, ts, coeffs, t1)
    assert np.isfinite(float(value)) and out.ys.shape == (N, 2)
    assert _finite_tree(out.ys) and _finite_tree(grads)


# ---------------------------------------------------------------------------------------
# A stable neural SDE (Langevin-type NeuralLSDE) driven by the interpolated features


_SDE = ndes.NeuralLSDE(
    4, 8, 1, key=jax.random.key(1), input_channels=2 * C + 1, out_size=2, num_steps=16
)


@eqx.filter_jit
def _sde_loss_and_grad(model, ts, coeffs, key):
    control = jax.vmap(lambda c: diffrax.CubicInterpolation(ts, c))(coeffs)

    def loss(m):
        out = m(ts, control, key=key)
        return jnp.sum(out.ys**2), out

    return eqx.filter_value_and_grad(loss, has_aux=True)(model)


@settings(max_examples=30, **SETTINGS)
@given(irregular_batch(min_len=2), st.integers(0, 2**31 - 1))
def test_stable_sde_forward_and_gradient_are_finite(batch, seed):
    times, values, _, _ = batch
    times = np.broadcast_to(times[:1], times.shape)  # one irregular grid shared by the batch
    if _nan_channel(values):
        with pytest.raises(ValueError):
            cde_features(times, values)
        return
    f = cde_features(times, values)
    ts = jnp.asarray(f[0, :, 0])
    coeffs = hermite_coefficients(f[..., 0], f)
    (value, out), grads = _sde_loss_and_grad(_SDE, ts, coeffs, jax.random.key(seed))
    assert np.isfinite(float(value)) and out.ys.shape == (N, 2)
    assert _finite_tree(out.ys) and _finite_tree(grads)


# ---------------------------------------------------------------------------------------
# LatentSDE.elbo on one irregular, partly missing series

_LSDE = ndes.LatentSDE(
    2, 2, key=jax.random.key(2), hidden_size=8, context_size=4, width=16, num_steps=20
)


@eqx.filter_jit
def _neg_elbo_and_grad(model, ts, values, key):
    def loss(m):
        e, parts = m.elbo(ts, values, key, num_samples=2)
        return -e, parts

    return eqx.filter_value_and_grad(loss, has_aux=True)(model)


@settings(max_examples=40, **SETTINGS)
@given(irregular_batch(n=1, length=10, channels=2, min_len=10), st.integers(0, 2**31 - 1))
def test_latent_sde_elbo_and_gradient_are_finite(batch, seed):
    times, values, _, _ = batch
    ts, vals = jnp.asarray(times[0] - times[0, 0]), jnp.asarray(values[0])
    (neg, parts), grads = _neg_elbo_and_grad(_LSDE, ts, vals, jax.random.key(seed))
    assert np.isfinite(float(neg)), (float(neg), {k: parts[k] for k in ("loglik", "kl0")})
    assert all(np.isfinite(float(parts[k])) for k in ("loglik", "kl0", "path_kl"))
    assert _finite_tree(grads)
