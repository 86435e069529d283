"""ndes.train.cnf_nll_loss: a CNF's NLL (nats, bits/dim) under ndes.fit, with a BudgetWeight."""

import functools
import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import ndes
from ndes.train import BudgetWeight, cnf_nll_loss, fit, read_metrics


class Affine(eqx.Module):
    a: jax.Array
    data_size: int = eqx.field(static=True, default=2)

    def __call__(self, t, z, args=None):
        return self.a @ z


FIXED = dict(stepsize_controller=diffrax.ConstantStepSize(), dt0=0.1)


def test_units_and_logdet(getkey):
    model = ndes.CNF(Affine(jr.normal(getkey(), (2, 2)) * 0.3), divergence="exact", **FIXED)
    x, logdet, key = jr.normal(getkey(), (5, 2)), jr.normal(getkey(), (5,)), getkey()
    logp = model.log_prob(x).ys
    nats, aux = cnf_nll_loss(model, x, key=key)
    np.testing.assert_allclose(nats, -jnp.mean(logp), rtol=1e-12)
    bits, aux = cnf_nll_loss(model, (x, logdet), key=key, units="bits/dim")
    np.testing.assert_allclose(bits, -jnp.mean(logp + logdet) / (2 * math.log(2)), rtol=1e-12)
    np.testing.assert_allclose(aux["nll"], -jnp.mean(logp + logdet), rtol=1e-12)
    same, _ = cnf_nll_loss(model, {"x": x, "logdet": logdet}, key=key, units="bits/dim")
    np.testing.assert_allclose(same, bits, rtol=1e-12)
    assert int(aux["num_fevals"]) == int(model.log_prob(x).stats["num_fevals"]) > 10
    assert float(aux["penalty"]) == 0.0


def test_gradient_matches_finite_differences(getkey):
    a0 = jr.normal(getkey(), (2, 2)) * 0.3
    x, logdet, key = jr.normal(getkey(), (4, 2)), jr.normal(getkey(), (4,)), getkey()

    def loss(a):
        m = ndes.CNF(Affine(a), divergence="exact", **FIXED)
        return cnf_nll_loss(m, (x, logdet), key=key, units="bits/dim")[0]

    g = jax.grad(loss)(a0)
    h = 1e-6
    for i, j in [(0, 0), (0, 1), (1, 1)]:
        e = jnp.zeros((2, 2)).at[i, j].set(h)
        np.testing.assert_allclose(g[i, j], (loss(a0 + e) - loss(a0 - e)) / (2 * h), rtol=1e-6)


def _fit(model, data, loss_fn, steps, regularizers=(), run_dir=None, **kw):
    return fit(
        model, data, loss_fn, optax.adam(1e-2), key=jr.key(1), batch_size=64, steps=steps,
        regularizers=regularizers, run_dir=run_dir, progress=False, **kw,
    )  # fmt: skip


def test_fit_trains_a_cnf_on_8gaussians(tmp_path):
    x = np.asarray(ndes.data.toy_2d("8gaussians", 512, key=jr.key(0)), np.float32)
    pid = diffrax.PIDController(rtol=1e-2, atol=1e-4)
    model = ndes.CNF.mlp(2, 16, 2, key=jr.key(2), stepsize_controller=pid)
    loss_fn = functools.partial(cnf_nll_loss, units="bits/dim")
    _fit(model, x, loss_fn, 30, run_dir=tmp_path)
    recs = read_metrics(tmp_path / "metrics.jsonl")
    nll = [r["nll"] for r in recs]
    assert all(np.isfinite(nll)) and len(nll) == 30
    np.testing.assert_allclose([r["loss"] for r in recs], np.array(nll) / (2 * math.log(2)))
    assert np.mean(nll[-5:]) < np.mean(nll[:5]) - 0.1, (nll[:5], nll[-5:])


@pytest.mark.slow  # two fits: ~20 s on the shared 2-core CPU
def test_budget_weight_on_the_log_likelihood_nfe(tmp_path):
    x = np.asarray(ndes.data.toy_2d("8gaussians", 128, key=jr.key(0)), np.float32)
    model = ndes.CNF.mlp(2, 8, 1, key=jr.key(2))
    for target, rises in [(8.0, True), (1e4, False)]:
        bw = BudgetWeight(target_nfe=target, lr=0.5, learned=0.0)
        regs = (ndes.ErrorEstimate(weight=bw),)
        run = tmp_path / str(target)
        _fit(model, x, cnf_nll_loss, 3, regularizers=regs, run_dir=run)
        recs = read_metrics(run / "metrics.jsonl")
        nfe = [r["num_fevals"] for r in recs]
        assert all(n > 8 for n in nfe) and "ErrorEstimate" in recs[0]["penalty_terms"]
        w = [r["budget_weights"]["ErrorEstimate"] for r in recs]
        assert w[0] == 0.0 and w[1] > 0.0  # started after the 1-step warm-up
        # above the budget the weight rises; below it, it stays at its start (its floor)
        assert (w[2] > w[1]) if rises else (w[2] == w[1]), w


def test_bad_input_raises(getkey):
    model = ndes.CNF.mlp(2, 8, 1, key=getkey())
    x, key = jnp.zeros((3, 2)), getkey()
    with pytest.raises(ValueError, match="units='bits'"):
        cnf_nll_loss(model, x, key=key, units="bits")
    with pytest.raises(ValueError, match="must hold the data under 'x'"):
        cnf_nll_loss(model, {"data": x}, key=key)
    with pytest.raises(ValueError, match="must be \\(x,\\) or \\(x, logdet\\)"):
        cnf_nll_loss(model, (x, x, x), key=key)
    with pytest.raises(ValueError, match="must have shape \\(B, d\\)"):
        cnf_nll_loss(model, x[0], key=key)
    with pytest.raises(ValueError, match="logdet must have one value per row"):
        cnf_nll_loss(model, (x, jnp.zeros(4)), key=key)
