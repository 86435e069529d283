"""Tests for ndes.models._latent_sde.LatentSDE (float64 via conftest)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

from ndes.models._latent_sde import LatentSDE
from tests.helpers import central_fd, with_posterior_equal_prior


def _model(key, **kw):
    if "stepsize_controller" in kw:
        kw.setdefault("dt0", 0.1)
    else:
        kw.setdefault(
            "num_steps", 20
        )  # static step count: `ts` are traced under the jitted helpers below
    kw.setdefault("width", 16)
    return LatentSDE(1, 2, key=key, hidden_size=8, context_size=4, **kw)


def _series(n=11, t1=2.0):
    ts = jnp.linspace(0.0, t1, n)
    return ts, jnp.sin(2 * ts)[:, None]


_elbo = eqx.filter_jit(lambda m, ts, v, k, n: m.elbo(ts, v, k, num_samples=n))
_post = eqx.filter_jit(lambda m, ts, v, k: m.sample_posterior(ts, v, k))
_prior = eqx.filter_jit(lambda m, ts, k: m.sample_prior(ts, k))


def test_path_kl_integrand_matches_direct_formula(getkey):
    # One Euler step of length h: the extra state equals h * ½‖(f_post − f_prior)/g‖² at (t0, z0,
    # context_0).
    m = _model(getkey(), num_steps=1)
    h = 0.1
    ts = jnp.array([0.0, h])
    vals = jnp.array([[0.3], [-0.2]])
    key = getkey()
    _, parts = _elbo(m, ts, vals, key, 1)
    mu, std, ctx = m.encode(ts, vals)
    kz, _ = jr.split(jr.split(key, 1)[0])
    z0 = mu + std * jr.normal(kz, mu.shape, mu.dtype)
    fp, fq, g = m.f_post(0.0, z0, ctx[0]), m.f_prior(0.0, z0), m.g(z0)
    direct = 0.5 * jnp.sum(((fp - fq) / g) ** 2)
    assert jnp.allclose(m.path_kl_integrand(0.0, z0, ctx[0]), direct)
    assert jnp.allclose(parts["path_kl"], h * direct, rtol=1e-10)
    assert direct > 0


def test_kl_zero_when_posterior_equals_prior(getkey):
    m = with_posterior_equal_prior(_model(getkey()))
    ts, vals = _series()
    _, parts = _elbo(m, ts, vals, getkey(), 2)
    assert float(parts["kl0"]) == 0.0
    assert abs(float(parts["path_kl"])) < 1e-12
    # and a generic model has strictly positive KL terms
    _, parts = _elbo(_model(getkey()), ts, vals, getkey(), 1)
    assert parts["kl0"] > 0 and parts["path_kl"] > 0


def test_variance_shrinks_with_samples(getkey):
    m = _model(getkey())
    ts, vals = _series()
    e1 = np.array([_elbo(m, ts, vals, jr.key(i), 1)[0] for i in range(12)])
    e8 = np.array([_elbo(m, ts, vals, jr.key(100 + i), 8)[0] for i in range(12)])
    # the variance of a mean of 8 iid samples is 1/8 of one; allow sampling noise of the variance
    # estimate
    assert e8.var() < 0.5 * e1.var()


def test_deterministic_given_key_and_shapes(getkey):
    m = _model(getkey())
    ts, vals = _series()
    k = getkey()
    a, b = _post(m, ts, vals, k), _post(m, ts, vals, k)
    assert jnp.array_equal(a[0], b[0]) and a[0].shape == (11, 2) and a[1].shape == (11, 1)
    c = _post(m, ts, vals, getkey())
    assert not jnp.array_equal(a[0], c[0])
    p1, p2 = _prior(m, ts, k), _prior(m, ts, k)
    assert jnp.array_equal(p1[1], p2[1])
    # jit/vmap-able
    keys = jr.split(k, 3)
    zs, xs = eqx.filter_jit(eqx.filter_vmap(lambda kk: m.sample_prior(ts, kk)))(keys)
    assert xs.shape == (3, 11, 1)


def test_missing_half_no_nan_and_finite_gradients(getkey):
    m = _model(getkey())
    ts, vals = _series(n=20)
    miss = jr.bernoulli(getkey(), 0.5, (20, 1))
    vals = jnp.where(miss, jnp.nan, vals)
    assert int(miss.sum()) >= 5

    def loss(mm):
        e, parts = mm.elbo(ts, vals, jr.key(3), num_samples=2)
        return -e, parts

    (lv, parts), grads = eqx.filter_jit(eqx.filter_value_and_grad(loss, has_aux=True))(m)
    assert jnp.isfinite(lv)
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    assert any(float(jnp.abs(x).max()) > 0 for x in leaves)


def test_fd_gradient(getkey):
    m = _model(getkey(), width=4)
    ts, vals = _series(n=5, t1=0.4)
    key = jr.key(7)

    # a small parameter subset: prior-drift output bias, post-drift output bias, decoder weights,
    # obs scale, encoder bias
    def get(mm):
        return (
            mm.prior_drift.layers[-1].bias,
            mm.post_drift.layers[-1].bias,
            mm.decoder.weight,
            mm.log_obs_scale,
            mm.encoder_out.bias,
        )

    flat0, unravel = jax.flatten_util.ravel_pytree(get(m))

    @jax.jit
    def f(x):
        mm = eqx.tree_at(get, m, unravel(x))
        return mm.elbo(ts, vals, key)[0]

    ad = jax.grad(f)(flat0)
    fd = central_fd(f, flat0, eps=1e-6)
    np.testing.assert_allclose(ad, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~70 s of compile + 100 Adam steps; run with `make test-slow`
def test_fit_ou_improves_elbo_and_tracks_data(getkey):
    # OU data dx = -θ x dt + σ dW with θ = 1, σ = 0.3, x0 = 1, observed with noise 0.05.
    theta, sigma, n = 1.0, 0.3, 11
    ts = jnp.linspace(0.0, 2.0, n)
    dt = ts[1] - ts[0]
    noise = jr.normal(getkey(), (n - 1,))
    x = [1.0]
    for i in range(n - 1):
        x.append(
            x[-1] * np.exp(-theta * dt)
            + sigma * np.sqrt((1 - np.exp(-2 * theta * dt)) / (2 * theta)) * noise[i]
        )
    vals = (jnp.array(x) + 0.05 * jr.normal(getkey(), (n,)))[:, None]
    m = _model(getkey(), obs_scale=0.2)
    opt = optax.adam(2e-2)
    state = opt.init(eqx.filter(m, eqx.is_array))

    @eqx.filter_jit
    def step(m, state, k):
        def loss(mm):
            return -mm.elbo(ts, vals, k, num_samples=2)[0]

        lv, g = eqx.filter_value_and_grad(loss)(m)
        upd, state = opt.update(g, state, eqx.filter(m, eqx.is_array))
        return eqx.apply_updates(m, upd), state, lv

    eval_keys = jr.split(jr.key(11), 8)
    before = np.mean([_elbo(m, ts, vals, k, 1)[0] for k in eval_keys])
    for i in range(100):
        m, state, _ = step(m, state, jr.key(1000 + i))
    after = np.mean([_elbo(m, ts, vals, k, 1)[0] for k in eval_keys])
    assert after > before + 10.0, (before, after)
    # posterior mean (16 samples) tracks the data: MSE below half the data variance (a loose
    # threshold).
    xs = eqx.filter_jit(eqx.filter_vmap(lambda k: m.sample_posterior(ts, vals, k)[1]))(
        jr.split(jr.key(5), 16)
    )
    mse = float(jnp.mean((xs.mean(0) - vals) ** 2))
    assert mse < 0.5 * float(jnp.var(vals)), (mse, float(jnp.var(vals)))


def test_bad_inputs(getkey):
    m = _model(getkey())
    ts, vals = _series()
    with pytest.raises(ValueError, match="`values` must have shape"):
        m.elbo(ts, vals[:-1], getkey())
    with pytest.raises(ValueError, match="`values` must have shape"):
        m.elbo(ts, jnp.ones((11, 2)), getkey())
    with pytest.raises(Exception, match="NaN/inf times"):
        m.elbo(ts.at[3].set(jnp.nan), vals, getkey())
    with pytest.raises(Exception, match="strictly increasing"):
        m.elbo(ts.at[3].set(ts[2]), vals, getkey())
    with pytest.raises(Exception, match="strictly increasing"):
        m.sample_prior(ts[::-1], getkey())
    with pytest.raises(ValueError, match="`diffusion_floor` must be > 0"):
        _model(getkey(), diffusion_floor=-0.1)
    with pytest.raises(ValueError, match="`diffusion_scale` must be > 0"):
        _model(getkey(), diffusion_scale=0.0)
    with pytest.raises(ValueError, match="`num_samples` must be >= 1"):
        m.elbo(ts, vals, getkey(), num_samples=0)


def test_regularizers_on_posterior_solve(getkey):
    import diffrax

    from ndes.regularizers import ErrorEstimate

    ts, vals = _series()
    # fixed-step Euler has no error estimate: ndes raises a clear ValueError
    m = _model(getkey())
    with pytest.raises(ValueError):
        m.elbo(ts, vals, getkey(), regularizers=ErrorEstimate())
    # adaptive Heun (Stratonovich) + PID + Brownian tree: the penalty is finite and positive
    ma = _model(
        getkey(),
        solver=diffrax.Heun(),
        stepsize_controller=diffrax.PIDController(rtol=1e-2, atol=1e-2),
    )
    e, parts = eqx.filter_jit(lambda mm, k: mm.elbo(ts, vals, k, regularizers=ErrorEstimate()))(
        ma, getkey()
    )
    assert jnp.isfinite(e) and parts["penalty"] > 0 and parts["num_fevals"] > 0
    # The unweighted value too (what ndes.BudgetWeight reads): weight 1, so it is the penalty.
    assert float(parts["penalty_terms"]["ErrorEstimate"]) == pytest.approx(float(parts["penalty"]))


def test_fixed_step_default_uses_grid_path_and_matches_hand_written_euler(getkey):
    # The default (Euler, constant steps) drives the posterior by ndes.GridBrownianPath drawn from
    # the key: a
    # hand-written Euler--Maruyama loop over the same path's increments reproduces the sample
    # exactly.
    from ndes import GridBrownianPath

    m = _model(getkey())
    ts, vals = (
        _series()
    )  # 11 times on [0, 2], 20 steps: every second grid point is an observation time
    key = getkey()
    zs, _ = _post(m, ts, vals, key)
    mu, std, ctx = m.encode(ts, vals)
    kz, kb = jr.split(key)
    z = mu + std * jr.normal(kz, mu.shape, mu.dtype)
    path = GridBrownianPath(ts[0], ts[-1], (m.latent_size + 1,), kb, num_steps=20)
    h = float(ts[-1] - ts[0]) / 20
    manual = [z]
    for k in range(20):
        t = ts[0] + k * h
        c = ctx[jnp.clip(jnp.searchsorted(ts, t, side="left"), 0, len(ts) - 1)]
        z = z + m.f_post(t, z, c) * h + m.g(z) * path.increments[k, : m.latent_size]
        manual.append(z)
    np.testing.assert_allclose(zs, jnp.stack(manual)[::2], rtol=1e-10, atol=1e-12)
    # deterministic given the key (jitted and not), different for another key
    again = m.sample_posterior(ts, vals, key)[0]
    np.testing.assert_allclose(again, zs, rtol=1e-12, atol=1e-12)
    assert jnp.array_equal(_post(m, ts, vals, key)[0], zs)
    assert not jnp.allclose(_post(m, ts, vals, getkey())[0], zs)
    e1, e2 = _elbo(m, ts, vals, key, 2)[0], _elbo(m, ts, vals, key, 2)[0]
    assert float(e1) == float(e2)


def test_brownian_choice_and_step_count(getkey):
    import diffrax

    ts, vals = _series()
    # dt0 with concrete ts gives the same grid (and sample) as the equivalent num_steps
    key = getkey()
    k0 = getkey()
    a = LatentSDE(1, 2, key=k0, hidden_size=8, context_size=4, width=16, dt0=0.1).sample_posterior(
        ts, vals, key
    )
    b = _model(k0).sample_posterior(ts, vals, key)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-10, atol=1e-12)
    # dt0 with traced ts cannot give a static step count: a clear error naming num_steps
    m_dt = LatentSDE(1, 2, key=k0, hidden_size=8, context_size=4, width=16, dt0=0.1)
    with pytest.raises(ValueError, match="num_steps"):
        _post(m_dt, ts, vals, key)
    # ... unless the tree is asked for explicitly
    m_tree = LatentSDE(
        1, 2, key=k0, hidden_size=8, context_size=4, width=16, dt0=0.1, brownian="tree"
    )
    zs = _post(m_tree, ts, vals, key)[0]
    assert zs.shape == (11, 2) and bool(jnp.all(jnp.isfinite(zs)))
    # the grid needs constant steps
    with pytest.raises(ValueError, match="brownian='grid'"):
        ma = _model(
            getkey(),
            solver=diffrax.Heun(),
            stepsize_controller=diffrax.PIDController(rtol=1e-2, atol=1e-2),
            brownian="grid",
        )
        ma.sample_posterior(ts, vals, key)
    with pytest.raises(ValueError, match="brownian="):
        _model(getkey(), brownian="bridge")


def test_parameters_have_strong_dtypes():
    # A weakly typed parameter (e.g. jnp.full of a Python float) becomes strongly typed after the
    # first optimiser update, so a jitted train step would compile twice.
    m = _model(jr.key(0))
    leaves = jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_array))
    assert not any(x.aval.weak_type for x in leaves)


# --- batch ELBO: joint (one state) vs vmap (one solve per series) ----------------------


def _batch(B=3, n=9):
    ts = jnp.linspace(0.0, 1.0, n)
    phase = jnp.arange(B)[:, None, None] * 0.7
    vals = jnp.sin(3 * ts[None, :, None] + phase)
    return ts, vals.at[1, 2, 0].set(jnp.nan)  # one missing entry


_elbo_b = eqx.filter_jit(
    lambda m, ts, v, k, mode, regs=(): m.elbo_batch(
        ts, v, k, num_samples=2, batch_mode=mode, regularizers=regs
    )
)


def test_elbo_batch_joint_equals_vmap_on_fixed_steps(getkey):
    import diffrax

    from ndes.regularizers import ErrorEstimate

    m = _model(getkey(), num_steps=16, solver=diffrax.Heun())
    ts, vals = _batch()
    k = getkey()
    regs = (ErrorEstimate(0.1, rtol=1e-2, atol=1e-2),)
    ej, pj = _elbo_b(m, ts, vals, k, "joint", regs)
    ev, pv = _elbo_b(m, ts, vals, k, "vmap", regs)
    assert ej.shape == (3,) and bool(jnp.all(jnp.isfinite(ej)))
    np.testing.assert_allclose(ej, ev, rtol=1e-11)
    for name in ("loglik", "kl0", "path_kl"):
        np.testing.assert_allclose(pj[name], pv[name], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(pj["penalty"], pv["penalty"], rtol=1e-11)
    assert pj["penalty"] > 0 and pj["path_kl"].shape == (3,)
    # the same gradient in both modes
    grad = eqx.filter_jit(
        eqx.filter_grad(lambda mm, mode: -jnp.mean(mm.elbo_batch(ts, vals, k, batch_mode=mode)[0]))
    )
    gj, gv = grad(m, "joint"), grad(m, "vmap")
    for a, b in zip(jax.tree_util.tree_leaves(gj), jax.tree_util.tree_leaves(gv), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def test_elbo_batch_rows_are_the_single_series_elbo_math(getkey):
    # With posterior == prior the path KL is 0 and kl0 is the closed form per series; the
    # default mode on fixed steps is joint and each row depends on its own series only.
    m = _model(getkey(), num_steps=8)
    ts, vals = _batch(B=2)
    k = getkey()
    e, parts = _elbo_b(m, ts, vals, k, None)
    e2, _ = _elbo_b(m, ts, vals.at[1].set(vals[1] + 5.0), k, None)
    assert float(e[0]) == pytest.approx(float(e2[0]), rel=1e-12) and float(e2[1]) < float(e[1])
    m0 = with_posterior_equal_prior(m)
    _, p0 = _elbo_b(m0, ts, vals, k, "joint")
    np.testing.assert_allclose(p0["path_kl"], 0.0, atol=1e-12)


def test_elbo_batch_fd_gradient_of_obs_scale(getkey):
    m = _model(getkey(), num_steps=6)
    ts, vals = _batch(B=2, n=5)
    k = getkey()

    def f(x):
        mm = eqx.tree_at(lambda q: q.log_obs_scale, m, x)
        return jnp.mean(mm.elbo_batch(ts, vals, k)[0])

    g = jax.grad(f)(m.log_obs_scale)
    np.testing.assert_allclose(g, central_fd(jax.jit(f), m.log_obs_scale), rtol=1e-6, atol=1e-8)


def test_elbo_batch_bad_inputs(getkey):
    m = _model(getkey())
    ts, vals = _batch()
    with pytest.raises(ValueError, match="shape \\(batch, num_times, data_size\\)"):
        m.elbo_batch(ts, vals[0], getkey())
    with pytest.raises(ValueError, match="batch_mode='each'"):
        m.elbo_batch(ts, vals, getkey(), batch_mode="each")
    with pytest.raises(ValueError, match="num_samples"):
        m.elbo_batch(ts, vals, getkey(), num_samples=0)
