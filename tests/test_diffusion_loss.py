"""Denoising score matching: minimised by the true score of Gaussian data, parametrisations
agree, finite-difference gradient, training with ndes.fit, and bad input."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import ndes
from ndes.diffusion import VESDE, VPSDE, DSMLoss, GaussianMixtureScore, ScoreMLP, ScoreModel

MU = jnp.array([1.0, -0.5])
COV = jnp.array([[1.0, 0.6], [0.6, 0.8]])


def _gaussian_model(sde, mu=MU, cov=COV):
    return ScoreModel(GaussianMixtureScore(mu[None], cov[None], sde), sde, "score")


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(0.01, 5.0)], ids=["vp", "ve"])
@pytest.mark.parametrize("weighting", ["sigma2", "likelihood"])
def test_true_score_minimises_dsm(sde, weighting, getkey):
    x0 = jr.multivariate_normal(getkey(), MU, COV, (20000,))
    loss = DSMLoss(eps=1e-3, weighting=weighting)
    key = getkey()  # common random numbers for every candidate
    jloss = eqx.filter_jit(lambda m: loss(m, x0, key=key)[0])

    def value(shift, scale):
        return float(jloss(_gaussian_model(sde, MU + shift, COV * scale)))

    best = value(0.0, 1.0)
    for shift, scale in ((0.3, 1.0), (-0.3, 1.0), (0.0, 1.5), (0.0, 0.6)):
        assert value(jnp.array([shift, -shift]), scale) > best
    # the gradient with respect to the mean is ~0 at the truth
    grad = jax.jit(jax.grad(lambda s: jloss(_gaussian_model(sde, MU + s))))
    g, g_off = grad(jnp.zeros(2)), grad(jnp.array([0.3, 0.0]))
    assert float(jnp.linalg.norm(g)) < 0.1 * float(jnp.linalg.norm(g_off))


def test_parametrisations_give_the_same_loss(getkey):
    sde = VPSDE()
    net = ScoreMLP(2, 16, 2, key=getkey())
    x0 = jr.normal(getkey(), (64, 2))
    key = getkey()
    noise_model = ScoreModel(net, sde, "noise")

    class AsScore(eqx.Module):
        net: ScoreMLP

        def __call__(self, t, x):
            return -self.net(t, x) / sde.sigma(t)

    score_model = ScoreModel(AsScore(net), sde, "score")
    weightings = ("sigma2", "likelihood", "none")
    jl = eqx.filter_jit(
        lambda m: jnp.stack([DSMLoss(1e-3, w)(m, x0, key=key)[0] for w in weightings])
    )
    np.testing.assert_allclose(jl(noise_model), jl(score_model), rtol=1e-10)
    t = 0.3
    x = x0[0]
    np.testing.assert_allclose(
        noise_model.score(t, x), -noise_model.noise(t, x) / sde.sigma(t), rtol=1e-12
    )


def test_gradient_matches_finite_differences(getkey):
    sde = VPSDE()
    model = ScoreModel(ScoreMLP(2, 8, 1, key=getkey()), sde)
    x0 = jr.normal(getkey(), (16, 2))
    key = getkey()
    loss = DSMLoss(1e-3)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    @jax.jit
    def f(v):
        return loss(eqx.combine(unravel(v), static), x0, key=key)[0]

    g = jax.grad(f)(flat)
    direction = jr.normal(getkey(), flat.shape)
    h = 1e-6
    fd = (f(flat + h * direction) - f(flat - h * direction)) / (2 * h)
    np.testing.assert_allclose(jnp.dot(g, direction), fd, rtol=1e-6)


@pytest.mark.slow
def test_fit_trains_a_score_model(getkey):
    sde = VPSDE()
    model = ScoreModel(ScoreMLP(2, 32, 2, key=getkey()), sde)
    data = np.asarray(jr.multivariate_normal(getkey(), MU, COV, (512,)))
    res = ndes.fit(
        model, data, DSMLoss(1e-3), optax.adam(3e-3), key=jr.key(0), batch_size=128, steps=300,
        progress=False,
    )  # fmt: skip
    losses = [r["loss"] for r in res.history]
    assert np.mean(losses[-30:]) < 0.8 * np.mean(losses[:30])
    assert res.traces["train_step"] == 1


def test_bad_input(getkey):
    with pytest.raises(ValueError, match="eps=0.0 must be a positive"):
        DSMLoss(eps=0.0)
    with pytest.raises(ValueError, match="weighting='unit' is unknown"):
        DSMLoss(weighting="unit")
    with pytest.raises(ValueError, match="flow_samples=-1"):
        DSMLoss(flow_samples=-1)
    sde = VPSDE()
    with pytest.raises(ValueError, match="parametrisation='x0' is unknown"):
        ScoreModel(ScoreMLP(2, key=getkey()), sde, "x0")
    with pytest.raises(ValueError, match="sde must be an ndes.diffusion SDE"):
        ScoreModel(ScoreMLP(2, key=getkey()), object())
    model = ScoreModel(ScoreMLP(2, 8, 1, key=getkey()), sde)
    with pytest.raises(ValueError, match="eps=2.0 must be below"):
        DSMLoss(eps=2.0)(model, jnp.zeros((4, 2)), key=getkey())
    with pytest.raises(ValueError, match="shape \\(B, d\\)"):
        DSMLoss()(model, jnp.zeros((4,)), key=getkey())
    with pytest.raises(ValueError, match="must be an ndes.diffusion.ScoreModel"):
        DSMLoss()(object(), jnp.zeros((4, 2)), key=getkey())
    with pytest.raises(ValueError, match="takes no solve"):
        DSMLoss()(model, jnp.zeros((4, 2)), key=getkey(), regularizers=(ndes.ErrorEstimate(1.0),))
    with pytest.raises(ValueError, match="ScoreMLP needs"):
        ScoreMLP(0, key=getkey())
    with pytest.raises(ValueError, match="means must have shape"):
        GaussianMixtureScore(jnp.zeros(2), jnp.eye(2), sde)


@pytest.mark.slow  # compiles a regularized probability-flow solve and its gradient
def test_flow_regularized_fine_tuning_loss(getkey):
    sde = VPSDE()
    model = ScoreModel(ScoreMLP(2, 8, 1, key=getkey()), sde)
    x0 = jr.normal(getkey(), (16, 2))
    loss = DSMLoss(1e-3, flow_samples=4)
    regs = (ndes.ErrorEstimate(1.0),)
    value, aux = loss(model, x0, key=getkey(), regularizers=regs)
    assert float(aux["penalty"]) > 0 and int(aux["num_fevals"]) > 0
    assert "ErrorEstimate" in aux["penalty_terms"]
    grads = eqx.filter_grad(
        lambda m: sum(loss(m, x0, key=jr.key(0), regularizers=regs)[1]["penalty"] for _ in [0])
    )(model)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)
