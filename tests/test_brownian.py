"""GridBrownianPath: distribution, consistency, solves, strong order, gradients, refusals."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
import pytest

from ndes._brownian import GridBrownianPath

from .helpers import central_fd


def _terms(bm, mu, sigma):
    return diffrax.MultiTerm(
        diffrax.ODETerm(lambda t, y, a: mu * y),
        diffrax.ControlTerm(lambda t, y, a: lx.DiagonalLinearOperator(sigma * y), bm),
    )


# --- distribution and consistency ------------------------------------------------------


def test_increments_mean_zero_variance_dt():
    n, m = 40, 5000
    bm = GridBrownianPath(0.0, 2.0, (m,), jr.key(0), num_steps=n)
    w = np.asarray(bm.increments)
    assert w.shape == (n, m)
    dt = 2.0 / n
    count = w.size
    # mean: standard error sqrt(dt / count); variance: relative standard error sqrt(2 / count)
    assert abs(w.mean()) < 5 * np.sqrt(dt / count)
    assert abs(w.var() / dt - 1) < 5 * np.sqrt(2 / count)
    # independent across cells: lag-1 correlation ~ 0
    corr = np.mean(w[1:] * w[:-1]) / dt
    assert abs(corr) < 5 / np.sqrt(count)


def test_space_time_levy_area_variance_and_w_independent_of_levy_choice():
    n, m = 20, 5000
    key = jr.key(1)
    plain = GridBrownianPath(0.0, 1.0, (m,), key, num_steps=n)
    levy = GridBrownianPath(0.0, 1.0, (m,), key, num_steps=n, levy_area=diffrax.SpaceTimeLevyArea)
    np.testing.assert_array_equal(plain.increments, levy.increments)
    h = np.asarray(levy.levy)
    assert abs(h.var() / (1.0 / n / 12) - 1) < 5 * np.sqrt(2 / h.size)
    out = levy.evaluate(0.1, 0.15, use_levy=True)
    assert isinstance(out, diffrax.SpaceTimeLevyArea)
    np.testing.assert_array_equal(out.W, levy.increments[2])
    np.testing.assert_array_equal(out.H, levy.levy[2])
    assert float(out.dt) == pytest.approx(0.05)
    stt = GridBrownianPath(
        0.0, 1.0, (m,), key, num_steps=n, levy_area=diffrax.SpaceTimeTimeLevyArea
    )
    np.testing.assert_array_equal(stt.increments, plain.increments)
    hh, kk = (np.asarray(x) for x in stt.levy)
    assert abs(hh.var() / (1.0 / n / 12) - 1) < 5 * np.sqrt(2 / hh.size)
    assert abs(kk.var() / (1.0 / n / 720) - 1) < 5 * np.sqrt(2 / kk.size)
    out = stt.evaluate(0.1, 0.15, use_levy=True)
    assert isinstance(out, diffrax.SpaceTimeTimeLevyArea)
    np.testing.assert_array_equal(out.K, kk[2])


def test_grid_points_equal_cumulative_sum_and_cells_equal_increments():
    n = 16
    bm = GridBrownianPath(-1.0, 3.0, (3,), jr.key(2), num_steps=n)
    grid = np.asarray(bm.grid)
    cum = np.concatenate([np.zeros((1, 3)), np.cumsum(np.asarray(bm.increments), 0)])
    at = jax.jit(lambda t: bm.evaluate(t))
    for k in range(n + 1):
        np.testing.assert_allclose(at(grid[k]), cum[k], atol=1e-14)
    cell = jax.jit(lambda a, b: bm.evaluate(a, b))
    for k in range(n):
        np.testing.assert_array_equal(cell(grid[k], grid[k + 1]), bm.increments[k])
    # an empty query is W(t) - W(t) = 0 (what jax.vmap runs on finished lanes)
    np.testing.assert_array_equal(cell(grid[3], grid[3]), np.zeros(3))


def test_same_key_same_path_other_key_other_path():
    a = GridBrownianPath(0.0, 1.0, (4,), jr.key(7), num_steps=10)
    b = GridBrownianPath(0.0, 1.0, (4,), jr.key(7), num_steps=10)
    c = GridBrownianPath(0.0, 1.0, (4,), jr.key(8), num_steps=10)
    np.testing.assert_array_equal(a.increments, b.increments)
    assert not np.allclose(a.increments, c.increments)
    via_dt = GridBrownianPath(0.0, 1.0, (4,), jr.key(7), dt=0.1)
    np.testing.assert_array_equal(a.increments, via_dt.increments)


def test_pytree_shape_and_dtype():
    shape = {
        "a": jax.ShapeDtypeStruct((2,), jnp.float32),
        "b": jax.ShapeDtypeStruct((3, 1), jnp.float64),
    }
    bm = GridBrownianPath(0.0, 1.0, shape, jr.key(0), num_steps=4)
    w = bm.evaluate(0.25, 0.5)
    assert w["a"].shape == (2,) and w["a"].dtype == jnp.float32
    assert w["b"].shape == (3, 1) and w["b"].dtype == jnp.float64


# --- solves -------------------------------------------------------------------------


def _hand_em(y0, incs, mu, sigma, dt):
    def body(y, dw):
        return y + mu * y * dt + sigma * y * dw, y

    return jax.lax.scan(body, y0, incs)[0]


def test_euler_maruyama_matches_hand_loop_float64():
    n = 64
    bm = GridBrownianPath(0.0, 1.0, (3,), jr.key(3), num_steps=n)
    y0 = jnp.array([1.0, 0.5, -2.0])
    sol = diffrax.diffeqsolve(_terms(bm, -0.7, 0.4), diffrax.Euler(), 0.0, 1.0, 1.0 / n, y0)
    ref = _hand_em(y0, bm.increments, -0.7, 0.4, 1.0 / n)
    np.testing.assert_allclose(sol.ys[-1], ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("t0,t1,n", [(0.0, 1.0, 4000), (0.3, 7.1, 4096), (-2.0, 3.0, 10000)])
def test_many_steps_float32_grid_matches(t0, t1, n):
    """float32 step times t0 + (t1 - t0) * k / n round differently from the grid; the
    tolerance must absorb that over thousands of steps, and the result match a hand loop."""
    bm = GridBrownianPath(
        jnp.float32(t0), jnp.float32(t1), (2,), jr.key(4), num_steps=n, dtype=jnp.float32
    )
    y0 = jnp.array([1.0, -0.5], jnp.float32)
    dt = jnp.float32((t1 - t0) / n)
    sol = diffrax.diffeqsolve(
        _terms(bm, -0.2, 0.3),
        diffrax.Euler(),
        jnp.float32(t0),
        jnp.float32(t1),
        dt,
        y0,
        max_steps=n + 1,
    )
    assert int(sol.stats["num_steps"]) == n
    ref = _hand_em(y0, bm.increments, -0.2, 0.3, dt)
    np.testing.assert_allclose(sol.ys[-1], ref, rtol=2e-4, atol=1e-6)


def test_backward_in_time_solve_uses_the_same_cells():
    n = 20
    bm = GridBrownianPath(0.0, 1.0, (2,), jr.key(5), num_steps=n)
    sol = diffrax.diffeqsolve(
        diffrax.MultiTerm(
            diffrax.ODETerm(lambda t, y, a: jnp.zeros_like(y)),
            diffrax.ControlTerm(lambda t, y, a: lx.DiagonalLinearOperator(jnp.ones_like(y)), bm),
        ),
        diffrax.Euler(),
        1.0,
        0.0,
        -1.0 / n,
        jnp.zeros(2),
    )
    # dy = dW backwards from 1 to 0: y(0) = -(W(1) - W(0))
    np.testing.assert_allclose(sol.ys[-1], -np.sum(bm.increments, 0), atol=1e-12)


def _strong_errors(solver, ns, exact, m=4000, T=1.0, mu=0.5, sigma=0.8, key=jr.key(11)):
    """Mean |y_N - y(T)| over m paths, the coarse paths summed from the finest grid."""
    nmax = max(ns)
    fine = GridBrownianPath(0.0, T, (m,), key, num_steps=nmax)
    w_T = np.sum(np.asarray(fine.increments), 0)
    y0 = jnp.ones(m)
    y_exact = exact(y0, w_T, mu, sigma, T)
    errs = []
    for n in map(int, ns):
        incs = fine.increments.reshape(n, nmax // n, m).sum(1)
        bm = GridBrownianPath(0.0, T, None, num_steps=n, increments=incs)
        sol = diffrax.diffeqsolve(_terms(bm, mu, sigma), solver, 0.0, T, T / n, y0, max_steps=n + 1)
        errs.append(float(np.mean(np.abs(np.asarray(sol.ys[-1]) - y_exact))))
    return np.asarray(errs)


def _slope(ns, errs):
    return -np.polyfit(np.log(ns), np.log(errs), 1)[0]


def test_strong_order_half_euler_maruyama_ito():
    ns = np.array([8, 32, 128])
    gbm_ito = lambda y0, w, mu, s, T: np.asarray(y0) * np.exp((mu - 0.5 * s**2) * T + s * w)
    slope = _slope(ns, _strong_errors(diffrax.Euler(), ns, gbm_ito))
    assert 0.35 < slope < 0.7, slope


@pytest.mark.parametrize("solver", [diffrax.Heun(), diffrax.StratonovichMilstein()])
def test_strong_order_one_stratonovich(solver):
    ns = np.array([8, 32, 128])
    gbm_strat = lambda y0, w, mu, s, T: np.asarray(y0) * np.exp(mu * T + s * w)
    slope = _slope(ns, _strong_errors(solver, ns, gbm_strat))
    assert 0.85 < slope < 1.2, slope


def test_shark_with_space_time_levy_area_on_additive_noise():
    """An SRK solver that needs H runs on the path (additive noise, dy = -y dt + 0.5 dW),
    and refuses a path without it (diffrax's own error)."""
    n = 32
    terms = lambda bm: diffrax.MultiTerm(
        diffrax.ODETerm(lambda t, y, a: -y),
        diffrax.ControlTerm(lambda t, y, a: lx.DiagonalLinearOperator(0.5 * jnp.ones(2)), bm),
    )
    bm = GridBrownianPath(
        0.0, 1.0, (2,), jr.key(6), num_steps=n, levy_area=diffrax.SpaceTimeLevyArea
    )
    sol = diffrax.diffeqsolve(terms(bm), diffrax.ShARK(), 0.0, 1.0, 1.0 / n, jnp.ones(2))
    assert np.all(np.isfinite(sol.ys))
    plain = GridBrownianPath(0.0, 1.0, (2,), jr.key(6), num_steps=n)
    with pytest.raises(Exception, match="AbstractSpaceTimeLevyArea"):
        diffrax.diffeqsolve(terms(plain), diffrax.ShARK(), 0.0, 1.0, 1.0 / n, jnp.ones(2))


# --- gradients ----------------------------------------------------------------------


@pytest.mark.parametrize("solver", [diffrax.Euler(), diffrax.Heun()])
def test_gradients_match_finite_differences(solver):
    n = 16
    bm = GridBrownianPath(0.0, 1.0, (2,), jr.key(9), num_steps=n)

    def loss(x):
        mu, sigma, y0 = x[0], x[1], x[2:]
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(lambda t, y, a: mu * jnp.sin(y)),
            diffrax.ControlTerm(lambda t, y, a: lx.DiagonalLinearOperator(sigma * jnp.cos(y)), bm),
        )
        sol = diffrax.diffeqsolve(terms, solver, 0.0, 1.0, 1.0 / n, y0)
        return jnp.sum(sol.ys[-1] ** 2)

    x = jnp.array([-0.6, 0.7, 0.9, -0.4])
    g = jax.jit(jax.grad(loss))(x)
    fd = central_fd(jax.jit(loss), x)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_no_gradient_flows_into_the_increments():
    bm = GridBrownianPath(0.0, 1.0, (2,), jr.key(9), num_steps=4)
    g = jax.grad(lambda p: jnp.sum(p.evaluate(0.25, 0.5)))(bm)
    np.testing.assert_array_equal(g.increments, np.zeros_like(bm.increments))


# --- refusals -----------------------------------------------------------------------


def _solve(bm, **kw):
    args = dict(t0=0.0, t1=1.0, dt0=0.1)
    args.update(kw)
    solver = args.pop("solver", diffrax.Euler())
    return diffrax.diffeqsolve(
        _terms(bm, -1.0, 0.5),
        solver,
        args.pop("t0"),
        args.pop("t1"),
        args.pop("dt0"),
        jnp.ones(2),
        **args,
    )


BM10 = GridBrownianPath(0.0, 1.0, (2,), jr.key(0), num_steps=10)


def test_refuses_adaptive_controller():
    with pytest.raises(Exception, match="not exactly one cell.*ConstantStepSize"):
        _solve(
            BM10,
            solver=diffrax.Heun(),
            dt0=None,
            stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-3),
        )


def test_refuses_mismatched_dt0():
    with pytest.raises(Exception, match="not exactly one cell"):
        _solve(BM10, dt0=0.05)
    with pytest.raises(Exception, match="not exactly one cell"):
        _solve(BM10, dt0=0.2)


def test_refuses_shifted_t0():
    with pytest.raises(Exception, match="not exactly one cell"):
        _solve(BM10, t0=0.05, t1=0.95, dt0=0.1)


def test_refuses_solve_beyond_the_interval():
    with pytest.raises(Exception, match="outside the path's interval"):
        _solve(BM10, t1=1.2, dt0=0.1)


def test_refuses_half_solver():
    with pytest.raises(Exception, match="not exactly one cell"):
        _solve(BM10, solver=diffrax.HalfSolver(diffrax.Heun()))


def test_refuses_off_grid_point_and_levy_without_interval():
    with pytest.raises(Exception, match="not a grid point"):
        jax.jit(lambda t: BM10.evaluate(t))(0.15)
    with pytest.raises(ValueError, match="needs an interval"):
        BM10.evaluate(0.1, use_levy=True)


def test_construction_errors():
    with pytest.raises(ValueError, match="exactly one of num_steps"):
        GridBrownianPath(0.0, 1.0, (2,), jr.key(0))
    with pytest.raises(ValueError, match="whole"):
        GridBrownianPath(0.0, 1.0, (2,), jr.key(0), dt=0.3)
    with pytest.raises(ValueError, match="t0 < t1"):
        GridBrownianPath(1.0, 0.0, (2,), jr.key(0), num_steps=4)
    with pytest.raises(ValueError, match="too fine"):
        GridBrownianPath(
            jnp.float32(1000.0),
            jnp.float32(1000.001),
            (2,),
            jr.key(0),
            num_steps=100,
            dtype=jnp.float32,
        )
    with pytest.raises(ValueError, match="levy_area"):
        GridBrownianPath(0.0, 1.0, (2,), jr.key(0), num_steps=4, levy_area=int)
    with pytest.raises(ValueError, match="leading axis"):
        GridBrownianPath(0.0, 1.0, None, num_steps=4, increments=jnp.zeros((3, 2)))


def test_under_jit_with_traced_interval():
    @eqx.filter_jit
    def run(t1, key):
        bm = GridBrownianPath(0.0, t1, (2,), key, num_steps=8)
        return _solve(bm, t1=t1, dt0=t1 / 8).ys[-1], jnp.sum(bm.increments, 0)

    y, _ = run(jnp.asarray(2.0), jr.key(1))
    assert np.all(np.isfinite(y))
