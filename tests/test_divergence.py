"""ndes.models._divergence: exact and Hutchinson divergence, Frobenius norm from the same VJP."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from ndes.models import MLPVectorField
from ndes.models._divergence import divergence, draw_probe


def _field(key, d):
    mlp = MLPVectorField(d, 16, 2, key=key, time_input=True, activation=jnp.tanh)
    return lambda z: mlp(0.3, z)


@pytest.mark.parametrize("d", [1, 3, 5])
def test_exact_divergence_is_trace_of_jacfwd(getkey, d):
    fn = _field(getkey(), d)
    z = jr.normal(getkey(), (d,))
    fz, div, frob = divergence(fn, z, method="exact")
    jac = jax.jacfwd(fn)(z)
    assert z.dtype == jnp.float64
    np.testing.assert_allclose(fz, fn(z), rtol=1e-12)
    np.testing.assert_allclose(div, jnp.trace(jac), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(frob, jnp.sum(jac**2), rtol=1e-12)


def test_exact_divergence_of_non_vector_state(getkey):
    a = jr.normal(getkey(), (6, 6))

    def fn(z):  # a (2, 3) state: linear map, divergence = trace(A)
        return (a @ z.reshape(6)).reshape(2, 3)

    _, div, frob = divergence(fn, jr.normal(getkey(), (2, 3)), method="exact")
    np.testing.assert_allclose(div, jnp.trace(a), rtol=1e-12)
    np.testing.assert_allclose(frob, jnp.sum(a**2), rtol=1e-12)


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased(getkey, probe):
    d, n = 4, 20000
    fn = _field(getkey(), d)
    z = jr.normal(getkey(), (d,))
    jac = jax.jacfwd(fn)(z)
    eps = draw_probe(getkey(), (n, d), z.dtype, probe)
    _, div, frob = jax.vmap(lambda e: divergence(fn, z, method="hutchinson", eps=e))(eps)
    for est, true in ((div, jnp.trace(jac)), (frob, jnp.sum(jac**2))):
        se = jnp.std(est) / jnp.sqrt(n)
        assert abs(jnp.mean(est) - true) < 4 * se + 1e-12, (probe, jnp.mean(est), true, se)
        assert jnp.std(est) > 0  # a real estimator: not exact for this Jacobian


def test_hutchinson_value_formula(getkey):
    """div = (eps^T J) eps and frob = ||eps^T J||^2 (FFJORD's divergence_approx)."""
    fn = _field(getkey(), 3)
    z, eps = jr.normal(getkey(), (3,)), jr.normal(getkey(), (3,))
    jac = jax.jacfwd(fn)(z)
    _, div, frob = divergence(fn, z, method="hutchinson", eps=eps)
    np.testing.assert_allclose(div, eps @ jac @ eps, rtol=1e-12)
    np.testing.assert_allclose(frob, jnp.sum((eps @ jac) ** 2), rtol=1e-12)


def test_rademacher_probe_is_exact_on_diagonal(getkey):
    """With +-1 entries eps_i^2 = 1, so a diagonal Jacobian's trace is recovered exactly."""
    w = jr.normal(getkey(), (5,))
    eps = draw_probe(getkey(), (5,), jnp.float64, "rademacher")
    assert set(np.unique(np.asarray(eps))) <= {-1.0, 1.0}
    _, div, frob = divergence(lambda z: w * jnp.sin(z), jnp.zeros(5), method="hutchinson", eps=eps)
    np.testing.assert_allclose(div, jnp.sum(w), rtol=1e-12)
    np.testing.assert_allclose(frob, jnp.sum(w**2), rtol=1e-12)


@pytest.mark.parametrize("method", ["exact", "hutchinson"])
def test_gradient_of_divergence_matches_finite_differences(getkey, method):
    """d/dtheta of div and frob (the path a CNF's training takes) against central differences."""
    d = 3
    z, eps = jr.normal(getkey(), (d,)), jr.normal(getkey(), (d,))
    w0 = jr.normal(getkey(), (d, d)) * 0.5
    b = jr.normal(getkey(), (d,))

    def loss(w):
        _, div, frob = divergence(lambda y: jnp.tanh(w @ y + b), z, method=method, eps=eps)
        return div + 0.3 * frob

    g = jax.grad(loss)(w0)
    h = 1e-6
    fd = np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            e = jnp.zeros((d, d)).at[i, j].set(h)
            fd[i, j] = (loss(w0 + e) - loss(w0 - e)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_bad_input_raises(getkey):
    fn = _field(getkey(), 2)
    z = jnp.zeros(2)
    with pytest.raises(ValueError, match="divergence='trace'"):
        divergence(fn, z, method="trace")
    with pytest.raises(ValueError, match="needs eps="):
        divergence(fn, z, method="hutchinson")
    with pytest.raises(ValueError, match="eps must have the state's shape"):
        divergence(fn, z, method="hutchinson", eps=jnp.zeros(3))
    with pytest.raises(ValueError, match="fn must return the state's shape"):
        divergence(lambda y: y[:1], z, method="exact")
    with pytest.raises(ValueError, match="probe='uniform'"):
        draw_probe(getkey(), (2,), jnp.float64, "uniform")
