"""MMD and sliced Wasserstein on cases with known values."""

from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from ndes.diffusion import mmd, sliced_wasserstein


def test_mmd_of_shifted_gaussians_matches_closed_form(getkey):
    # k = exp(-|a-b|^2 / (2 l^2)); for N(0, I) vs N(mu, I) in d dims:
    # MMD^2 = 2 (l^2 / (l^2 + 2))^(d/2) (1 - exp(-|mu|^2 / (2 (l^2 + 2))))
    d, ell = 2, 1.0
    mu = jnp.array([1.0, 0.5])
    x = jr.normal(getkey(), (2000, d))
    y = mu + jr.normal(getkey(), (2000, d))
    c = (ell**2 / (ell**2 + 2)) ** (d / 2)
    exact = 2 * c * (1 - np.exp(-float(mu @ mu) / (2 * (ell**2 + 2))))
    np.testing.assert_allclose(mmd(x, y, bandwidth=ell), exact, rtol=0.1)


def test_mmd_is_unbiased_for_equal_distributions(getkey):
    vals = [float(mmd(jr.normal(getkey(), (200, 2)), jr.normal(getkey(), (300, 2)))) for _ in
            range(20)]  # fmt: skip
    # the biased (V-statistic) estimate would be positive, ~ 1/n; the unbiased one is ~0
    assert abs(np.mean(vals)) < 3 * np.std(vals) / np.sqrt(len(vals))
    assert min(vals) < 0 < max(vals)
    shifted = float(mmd(jr.normal(getkey(), (200, 2)), 1.0 + jr.normal(getkey(), (300, 2))))
    assert shifted > 10 * np.std(vals)


def test_sliced_wasserstein_of_a_shift(getkey):
    # y = x + c: every projection is shifted by theta.c, so SW_2^2 = E[(theta.c)^2] = |c|^2/d
    x = jr.normal(getkey(), (500, 3))
    c = jnp.array([1.0, -2.0, 0.5])
    sw = sliced_wasserstein(x, x + c, getkey(), num_projections=4000)
    np.testing.assert_allclose(sw, jnp.linalg.norm(c) / np.sqrt(3), rtol=0.03)
    assert float(sliced_wasserstein(x, x, getkey())) == 0.0
    # p=1: E|theta.c| in d=3 is |c|/2
    sw1 = sliced_wasserstein(x, x + c, getkey(), num_projections=4000, p=1)
    np.testing.assert_allclose(sw1, jnp.linalg.norm(c) / 2, rtol=0.03)


def test_sliced_wasserstein_unequal_sizes_1d(getkey):
    # 1-D: W_2(N(0, 1), N(0, 4)) = |1 - 2| = 1
    x = jr.normal(getkey(), (3000, 1))
    y = 2.0 * jr.normal(getkey(), (2000, 1))
    np.testing.assert_allclose(sliced_wasserstein(x, y, getkey(), num_projections=4), 1.0,
                               atol=0.06)  # fmt: skip


def test_bad_input(getkey):
    with pytest.raises(ValueError, match="same d"):
        mmd(jnp.zeros((5, 2)), jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd(jnp.zeros((1, 2)), jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match="bandwidth=0.0 must be a positive finite number"):
        mmd(jnp.zeros((5, 2)), jnp.ones((5, 2)), bandwidth=0.0)
    with pytest.raises(ValueError, match="num_projections=0"):
        sliced_wasserstein(jnp.zeros((5, 2)), jnp.ones((5, 2)), getkey(), num_projections=0)
    with pytest.raises(ValueError, match="p=3 must be 1 or 2"):
        sliced_wasserstein(jnp.zeros((5, 2)), jnp.ones((5, 2)), getkey(), p=3)
