"""Samplers of ndes.diffusion with the exact score of Gaussian data: every sampler matches the
target mean/covariance, NFE is exact, DPM-Solver converges at its order, the probability-flow
ODE matches its closed-form map and its log-likelihood the analytic density."""

from __future__ import annotations

import functools
import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import ndes
from ndes import diffusion as S
from ndes.diffusion import VESDE, VPSDE, GaussianMixtureScore, ScoreMLP, ScoreModel

MU = jnp.array([1.0, -0.5])
COV = jnp.array([[1.0, 0.6], [0.6, 0.8]])
EPS = 1e-3


def _model(sde=None):
    sde = VPSDE() if sde is None else sde
    return ScoreModel(GaussianMixtureScore(MU[None], COV[None], sde), sde, "score")


def _cov_t(sde, t):
    alpha, sigma = sde.marginal(t)
    return alpha * MU, alpha**2 * COV + sigma**2 * jnp.eye(2)


def _flow_map(sde, x_T, t_from, t_to):
    """The probability-flow ODE of Gaussian data in closed form:
    x_t - m_t = C_t^{1/2} C_s^{-1/2} (x_s - m_s) (the covariances commute)."""
    lam, u = jnp.linalg.eigh(COV)
    (a0, s0), (a1, s1) = sde.marginal(t_from), sde.marginal(t_to)
    ratio = jnp.sqrt((a1**2 * lam + s1**2) / (a0**2 * lam + s0**2))
    m = u @ jnp.diag(ratio) @ u.T
    return a1 * MU + (x_T - a0 * MU) @ m.T


SAMPLERS = {
    "reverse_sde": lambda m, k: S.reverse_sde_sample(m, k, 1500, steps=100, eps=EPS),
    "pc": lambda m, k: S.pc_sample(m, k, 1500, steps=50, eps=EPS),
    "flow": lambda m, k: S.probability_flow_sample(m, k, 1500, rtol=1e-4, atol=1e-6, eps=EPS),
    "dpm2": lambda m, k: S.dpm_solver_sample(m, k, 1500, nfe=20, order=2, eps=EPS),
    "dpm3": lambda m, k: S.dpm_solver_sample(m, k, 1500, nfe=10, order=3, eps=EPS),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samples_match_the_gaussian(name):
    model = _model()
    out = eqx.filter_jit(SAMPLERS[name])(model, jr.key(1))
    mean, cov = _cov_t(model.sde, EPS)
    x = out.samples
    assert x.shape == (1500, 2)
    # standard errors ~ 0.03 for the mean, ~ 0.04 for the covariance entries
    np.testing.assert_allclose(jnp.mean(x, 0), mean, atol=0.08)
    np.testing.assert_allclose(jnp.cov(x.T), cov, atol=0.12)


@pytest.mark.slow
def test_ve_samplers_match_the_gaussian():
    sde = VESDE(0.01, 10.0)
    model = _model(sde)
    mean, cov = _cov_t(sde, EPS)
    for fn in (
        lambda k: S.reverse_sde_sample(model, k, 1500, steps=300, eps=EPS),
        lambda k: S.probability_flow_sample(model, k, 1500, rtol=1e-4, atol=1e-6, eps=EPS),
    ):
        x = jax.jit(fn)(jr.key(2)).samples
        np.testing.assert_allclose(jnp.mean(x, 0), mean, atol=0.1)
        np.testing.assert_allclose(jnp.cov(x.T), cov, atol=0.15)


class _Counting(eqx.Module):
    inner: eqx.Module
    data_size: int = 2

    def __call__(self, t, x):
        jax.debug.callback(lambda *_: CALLS.append(1), x)
        return self.inner(t, x)


CALLS: list = []


def test_nfe_is_exact():
    inner = GaussianMixtureScore(MU[None], COV[None], VPSDE())
    model = ScoreModel(_Counting(inner), VPSDE(), "score")
    n = 3
    cases = {
        "reverse": lambda k: S.reverse_sde_sample(model, k, n, steps=7),
        "pc": lambda k: S.pc_sample(model, k, n, steps=5, corrector_steps=2),
        "flow": lambda k: S.probability_flow_sample(model, k, n, rtol=1e-3),
        "flow_dopri5": lambda k: S.probability_flow_sample(model, k, n, solver=diffrax.Dopri5()),
        "dpm2": lambda k: S.dpm_solver_sample(model, k, n, nfe=9, order=2),
        "dpm3": lambda k: S.dpm_solver_sample(model, k, n, nfe=10, order=3),
    }
    expected = {"reverse": 7, "pc": 15, "dpm2": 9, "dpm3": 10}
    for name, fn in cases.items():
        CALLS.clear()
        out = jax.jit(fn)(jr.key(0))
        jax.effects_barrier()
        assert len(CALLS) == n * int(out.nfe), name
        if name in expected:
            assert int(out.nfe) == expected[name], name


def test_dpm_solver_converges_at_its_order():
    model = _model()
    sde = model.sde
    x_T = jr.normal(jr.key(3), (200, 2))
    exact = _flow_map(sde, x_T, sde.T, EPS)

    @functools.partial(jax.jit, static_argnums=(0, 1, 2))
    def err(nfe, order, schedule="singlestep"):
        out = S.dpm_solver_sample(model, None, nfe=nfe, order=order, schedule=schedule,
                                  eps=EPS, x_T=x_T)  # fmt: skip
        return jnp.max(jnp.abs(out.samples - exact)), out.nfe

    e = {(n, o): float(err(n, o)[0]) for o in (1, 2, 3) for n in (12, 24)}
    for order in (1, 2, 3):
        rate = math.log2(e[12, order] / e[24, order])  # halving the step: error / 2^order
        assert rate > order - 0.6, (order, e)
    assert e[24, 3] < e[24, 2] < e[24, 1]
    assert e[12, 3] < e[12, 1]  # (at 12 NFE DPM-Solver-2 is not yet better than DDIM here)
    # the 'fast' budget split uses exactly nfe evaluations and beats DDIM at equal nfe
    for nfe in (10, 11):
        val, used = err(nfe, 3, "fast")
        assert int(used) == nfe
        assert float(val) < e[12, 1]


def test_probability_flow_matches_closed_form_map():
    model = _model()
    x_T = jr.normal(jr.key(4), (50, 2))
    out = S.probability_flow_sample(model, None, rtol=1e-9, atol=1e-9, x_T=x_T, eps=EPS)
    np.testing.assert_allclose(out.samples, _flow_map(model.sde, x_T, 1.0, EPS), atol=1e-6)
    assert out.stats["num_accepted_steps"] > 0


class _Gaussian(eqx.Module):
    mean: jax.Array
    cov: jax.Array

    def log_prob(self, z):
        return jax.scipy.stats.multivariate_normal.logpdf(z, self.mean, self.cov)

    def sample(self, key, shape, dtype):
        return jr.multivariate_normal(key, self.mean, self.cov, shape[:1], dtype=dtype)


def test_probability_flow_log_likelihood_is_analytic():
    model = _model()
    sde = model.sde
    x = jr.multivariate_normal(jr.key(5), MU, COV, (10,))
    exact = jax.vmap(lambda v: model.network.log_prob(EPS, v))(x)
    prior = _Gaussian(*_cov_t(sde, sde.T))  # the exact p_T: no prior mismatch
    out = S.probability_flow_log_prob(model, x, eps=EPS, rtol=1e-8, atol=1e-8, prior=prior)
    np.testing.assert_allclose(out.log_prob, exact, atol=1e-5)


@pytest.mark.slow
def test_probability_flow_log_likelihood_standard_prior_and_hutchinson():
    model = _model()
    sde = model.sde
    x = jr.multivariate_normal(jr.key(5), MU, COV, (20,))
    exact = jax.vmap(lambda v: model.network.log_prob(EPS, v))(x)
    prior = _Gaussian(*_cov_t(sde, sde.T))
    # with the standard-normal prior the mismatch p_T != N(0, I) is small (alpha_T ~ 7e-3)
    out = S.probability_flow_log_prob(model, x, eps=EPS, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.log_prob, exact, atol=5e-2)
    # Hutchinson: unbiased, with a fixed probe per solve
    hut = S.probability_flow_log_prob(model, x, jr.key(6), eps=EPS, divergence="hutchinson",
                                      prior=prior)  # fmt: skip
    assert float(jnp.abs(jnp.mean(hut.log_prob - exact))) < 0.3
    assert int(hut.nfe) > 0


def test_flow_regularizers_apply():
    model = _model()
    out = S.probability_flow_sample(
        model, jr.key(0), 16, regularizers=(ndes.ErrorEstimate(1.0), ndes.StiffnessEstimate(1.0))
    )
    assert set(out.penalty_terms) == {"ErrorEstimate", "StiffnessEstimate"}
    assert float(out.penalty) > 0


def test_bad_input(getkey):
    model = _model()
    with pytest.raises(ValueError, match="needs a VP SDE"):
        S.dpm_solver_sample(_model(VESDE()), getkey(), 4)
    with pytest.raises(ValueError, match="eps=0.0 must lie in"):
        S.reverse_sde_sample(model, getkey(), 4, eps=0.0)
    with pytest.raises(ValueError, match="eps=1.5 must lie in"):
        S.probability_flow_sample(model, getkey(), 4, eps=1.5)
    with pytest.raises(ValueError, match="steps=0 must be an int"):
        S.pc_sample(model, getkey(), 4, steps=0)
    with pytest.raises(ValueError, match="snr=-1.0 must be a positive finite number"):
        S.pc_sample(model, getkey(), 4, snr=-1.0)
    with pytest.raises(ValueError, match="order=4 must be 1, 2 or 3"):
        S.dpm_solver_sample(model, getkey(), 4, order=4)
    with pytest.raises(ValueError, match="nfe divisible by order"):
        S.dpm_solver_sample(model, getkey(), 4, nfe=10, order=3, schedule="singlestep")
    with pytest.raises(ValueError, match="schedule='adaptive'"):
        S.dpm_solver_sample(model, getkey(), 4, schedule="adaptive")
    with pytest.raises(ValueError, match="rtol=0.0 must be a positive"):
        S.probability_flow_sample(model, getkey(), 4, rtol=0.0)
    with pytest.raises(ValueError, match="must be an ndes.diffusion.ScoreModel"):
        S.reverse_sde_sample(object(), getkey(), 4)
    with pytest.raises(ValueError, match="num_samples=None must be an int"):
        S.reverse_sde_sample(model, getkey())
    with pytest.raises(ValueError, match="x_T must have shape"):
        S.reverse_sde_sample(model, getkey(), x_T=jnp.zeros(2))

    class NoSize(eqx.Module):
        def __call__(self, t, x):
            return x

    with pytest.raises(ValueError, match="cannot tell the data dimension"):
        S.reverse_sde_sample(ScoreModel(NoSize(), VPSDE()), getkey(), 4)
    assert ScoreModel(ScoreMLP(2, key=getkey()), VPSDE()).data_size == 2


@pytest.mark.slow
def test_every_sampler_matches_a_gaussian_mixture():
    sde = VPSDE()
    means = jnp.array([[-2.0, 0.0], [2.0, 1.0]])
    covs = jnp.stack([0.3 * jnp.eye(2), jnp.array([[0.5, 0.2], [0.2, 0.4]])])
    mix = GaussianMixtureScore(means, covs, sde, weights=jnp.array([0.3, 0.7]))
    model = ScoreModel(mix, sde, "score")

    def draw(key, n):
        kc, kn = jr.split(key)
        comp = jr.bernoulli(kc, 0.7, (n,)).astype(int)
        chol = jnp.linalg.cholesky(covs)[comp]
        return means[comp] + jnp.einsum("nij,nj->ni", chol, jr.normal(kn, (n, 2)))

    ref, ref2 = draw(jr.key(10), 1000), draw(jr.key(11), 1000)
    floor = abs(float(ndes.diffusion.mmd(ref2, ref)))
    wrong = float(ndes.diffusion.mmd(ref + jnp.array([0.5, 0.0]), ref2))
    fns = {
        "reverse": lambda k: S.reverse_sde_sample(model, k, 1000, steps=200),
        "pc": lambda k: S.pc_sample(model, k, 1000, steps=100),
        "flow": lambda k: S.probability_flow_sample(model, k, 1000, rtol=1e-4, atol=1e-5),
        "dpm3": lambda k: S.dpm_solver_sample(model, k, 1000, nfe=30, order=3),
    }
    for name, fn in fns.items():
        x = jax.jit(fn)(jr.key(12)).samples
        value = float(ndes.diffusion.mmd(x, ref))
        assert value < max(5 * floor, 0.1 * wrong), (name, value, floor, wrong)
