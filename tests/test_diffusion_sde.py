"""Forward SDEs of ndes.diffusion: closed-form marginals against a Monte-Carlo simulation of
the SDE, the variance ODE, the log-SNR inverse, and bad configurations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from ndes.diffusion import VESDE, VPSDE

SDES = {
    "vp-linear": VPSDE("linear"),
    "vp-cosine": VPSDE("cosine"),
    "ve": VESDE(sigma_min=0.01, sigma_max=5.0),
}


def _simulate(sde, x0, t_end, key, n=20000, steps=2000):
    """Euler--Maruyama for dx = f(t) x dt + g(t) dW from x0 (scalar) to t_end, n paths."""
    dt = t_end / steps
    x = jnp.full((n,), x0)

    def step(x, inp):
        t, k = inp
        dw = jnp.sqrt(dt) * jr.normal(k, x.shape)
        return x + sde.drift(t, x) * dt + sde.diffusion(t) * dw, None

    ts = jnp.arange(steps) * dt
    x, _ = jax.lax.scan(step, x, (ts, jr.split(key, steps)))
    return x


@pytest.mark.parametrize("name", list(SDES))
def test_marginals_match_monte_carlo(name):
    sde = SDES[name]
    x0 = 1.5
    for i, t in enumerate((0.3, 0.8)):
        x = _simulate(sde, x0, t, jr.key(i))
        alpha, sigma = sde.marginal(t)
        n = x.shape[0]
        # mean: standard error sigma/sqrt(n); std: sigma/sqrt(2n); plus O(dt) EM bias
        assert abs(float(jnp.mean(x)) - float(alpha) * x0) < 5 * float(sigma) / np.sqrt(n) + 2e-3
        assert abs(float(jnp.std(x)) / float(sigma) - 1) < 5 / np.sqrt(2 * n) + 2e-3


@pytest.mark.parametrize("name", list(SDES))
def test_variance_ode_and_drift(name):
    # d(alpha)/dt = f alpha and d(sigma^2)/dt = 2 f sigma^2 + g^2 for the linear SDE
    sde = SDES[name]
    for t in (0.05, 0.4, 0.9):
        da = jax.grad(lambda s: jnp.exp(sde.log_alpha(s)))(t)
        np.testing.assert_allclose(da, sde.drift_coef(t) * jnp.exp(sde.log_alpha(t)), rtol=1e-10)
        dv = jax.grad(lambda s: sde.sigma(s) ** 2)(t)
        rhs = 2 * sde.drift_coef(t) * sde.sigma(t) ** 2 + sde.diffusion(t) ** 2
        np.testing.assert_allclose(dv, rhs, rtol=1e-10)
    np.testing.assert_allclose(sde.sigma(0.0), 0.0, atol=1e-12)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_inverse_log_snr(schedule):
    sde = VPSDE(schedule)
    ts = jnp.linspace(1e-3, sde.T, 7)
    np.testing.assert_allclose(sde.inverse_log_snr(sde.log_snr(ts)), ts, rtol=1e-9, atol=1e-12)


def test_cosine_cutoff_and_prior(getkey):
    sde = VPSDE("cosine")
    np.testing.assert_allclose(sde.beta(sde.T), 999.0, rtol=1e-9)
    assert 0.99 < sde.T < 1.0
    ve = VESDE(0.01, 5.0)
    x = ve.prior_sample(getkey(), (20000, 2))
    np.testing.assert_allclose(jnp.std(x), 5.0, rtol=0.03)
    np.testing.assert_allclose(
        ve.prior_log_prob(jnp.zeros(2)), -np.log(2 * np.pi * 25.0), rtol=1e-12
    )


def test_bad_configurations():
    with pytest.raises(ValueError, match="schedule='quadratic'"):
        VPSDE("quadratic")
    with pytest.raises(ValueError, match="beta_min=0.0 must be"):
        VPSDE(beta_min=0.0)
    with pytest.raises(ValueError, match="beta_max=-1.0 must be"):
        VPSDE(beta_max=-1.0)
    with pytest.raises(ValueError, match="smaller than beta_min"):
        VPSDE(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="sigma_max=1.0 must be larger"):
        VESDE(sigma_min=1.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="sigma_min=-1.0 must be"):
        VESDE(sigma_min=-1.0)
