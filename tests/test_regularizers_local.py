"""LocalErrorEstimate / LocalStiffnessEstimate: sampling, equality with the global per-step
terms, the counted extra step, gradients and error paths."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ndes

from .helpers import Counter, central_fd, flat_field, linear_term

RTOL, ATOL = 1e-5, 1e-7
PID = diffrax.PIDController(rtol=RTOL, atol=ATOL)
A = jnp.array([[-0.5, 2.0], [-2.0, -0.5]])
Y0 = jnp.array([1.0, 0.5])
T1 = 4.0


def _accepted_times(term, y0):
    sol = diffrax.diffeqsolve(
        term,
        diffrax.Tsit5(),
        0.0,
        T1,
        0.1,
        y0,
        stepsize_controller=PID,
        saveat=diffrax.SaveAt(t0=True, steps=True),
        max_steps=256,
    )
    ts, ys = np.asarray(sol.ts), np.asarray(sol.ys)
    keep = np.isfinite(ts)
    return ts[keep], ys[keep]


def _solve(regs, term=None, y0=Y0, ctrl=PID, t1=T1, dt0=0.1):
    return ndes.diffeqsolve(
        linear_term(A) if term is None else term,
        diffrax.Tsit5(),
        0.0,
        t1,
        dt0,
        y0,
        stepsize_controller=ctrl,
        regularizers=regs,
    )


def _one_step_global(reg, ta, tb, ya):
    """The global estimate of the single step [ta, tb] from ya (its per-step term)."""
    ta, tb = jnp.asarray(ta), jnp.asarray(tb)  # traced: one compilation for every step
    sol = ndes.diffeqsolve(
        linear_term(A),
        diffrax.Tsit5(),
        ta,
        tb,
        tb - ta,
        jnp.asarray(ya),
        stepsize_controller=diffrax.ConstantStepSize(),
        regularizers=(reg,),
    )
    assert int(sol.stats["num_accepted_steps"]) == 1
    return float(sol.penalty)


def _sampled(sampling, keys):
    """Per key: the sampled time, the extra step's size and both local penalties (one solve
    with a LocalErrorEstimate and a LocalStiffnessEstimate sharing the key)."""

    def one(key):
        regs = (
            ndes.LocalErrorEstimate(1.0, sampling=sampling, key=key),
            ndes.LocalStiffnessEstimate(1.0, sampling=sampling, key=key),
        )
        sol = _solve(regs)
        return (
            sol.stats["local_sample_time"],
            sol.stats["local_step_size"],
            sol.penalty_terms["LocalErrorEstimate"],
            sol.penalty_terms["LocalStiffnessEstimate"],
        )

    return [np.asarray(v) for v in jax.jit(jax.vmap(one))(keys)]


def test_biased_local_equals_global_step_term():
    """Sampled at an accepted step's start, the local value is that step's term of the
    global estimate (same norm, tolerances and step size), at the first, a middle and the
    last steps."""
    ts, ys = _accepted_times(linear_term(A), Y0)
    assert len(ts) > 6
    t_s, h, pen_e, pen_s = _sampled("biased", jax.random.split(jax.random.key(0), 300))
    for j in (0, 2, len(ts) // 2, len(ts) - 2):
        hits = np.flatnonzero(np.abs(t_s - ts[j]) < 1e-12)
        assert hits.size > 0, j  # 300 keys hit every one of the ~25 steps
        i = hits[0]
        np.testing.assert_allclose(h[i], ts[j + 1] - ts[j], rtol=1e-12)
        want_e = _one_step_global(
            ndes.ErrorEstimate(1.0, rtol=RTOL, atol=ATOL), *ts[j : j + 2], ys[j]
        )
        want_s = _one_step_global(
            ndes.StiffnessEstimate(1.0, aggregate="sum"), *ts[j : j + 2], ys[j]
        )
        np.testing.assert_allclose(pen_e[i], want_e, rtol=1e-8)
        np.testing.assert_allclose(pen_s[i], want_s, rtol=1e-8)


def test_unbiased_local_is_one_step_from_the_interpolant():
    """Sampled inside accepted step j, the extra step starts from the solve's interpolant at
    t_s, has step j's size, and its value is the global per-step term of that one step."""
    ts, _ = _accepted_times(linear_term(A), Y0)
    t_s, h, pen_e, pen_s = _sampled("unbiased", jax.random.split(jax.random.key(1), 4))
    dense = diffrax.diffeqsolve(
        linear_term(A),
        diffrax.Tsit5(),
        0.0,
        T1,
        0.1,
        Y0,
        stepsize_controller=PID,
        saveat=diffrax.SaveAt(dense=True),
        max_steps=256,
    )
    for i in range(len(t_s)):
        j = int(np.searchsorted(ts, t_s[i], side="right")) - 1
        assert ts[j] <= t_s[i] < ts[j + 1]
        np.testing.assert_allclose(h[i], min(ts[j + 1] - ts[j], T1 - t_s[i]), rtol=1e-12)
        y_s = dense.evaluate(t_s[i])
        t_b = t_s[i] + h[i]
        want_e = _one_step_global(ndes.ErrorEstimate(1.0, rtol=RTOL, atol=ATOL), t_s[i], t_b, y_s)
        want_s = _one_step_global(ndes.StiffnessEstimate(1.0, aggregate="sum"), t_s[i], t_b, y_s)
        np.testing.assert_allclose(pen_e[i], want_e, rtol=1e-8)
        np.testing.assert_allclose(pen_s[i], want_s, rtol=1e-8)


def test_biased_sampling_returns_only_accepted_step_starts():
    ts, _ = _accepted_times(linear_term(A), Y0)
    starts = ts[:-1]  # t1 is never a start

    def sample(key):
        sol = _solve((ndes.LocalErrorEstimate(1.0, sampling="biased", key=key),))
        return sol.stats["local_sample_time"], sol.stats["num_rejected_steps"]

    keys = jax.random.split(jax.random.key(1), 600)
    t_s, rejected = jax.jit(jax.vmap(sample))(keys)
    assert int(rejected[0]) > 0  # rejected attempts exist and must never be sampled
    t_s = np.asarray(t_s)
    dist = np.min(np.abs(t_s[:, None] - starts[None, :]), axis=1)
    assert np.all(dist < 1e-12)
    # Uniform over the accepted steps: every start is hit, no step more than ~3x expected.
    counts = np.array([np.sum(np.abs(t_s - s) < 1e-12) for s in starts])
    expected = len(t_s) / len(starts)
    assert counts.min() > 0
    assert counts.max() < 3 * expected


def test_unbiased_sampling_covers_interval():
    def sample(key):
        sol = _solve((ndes.LocalErrorEstimate(1.0, key=key),))
        return sol.stats["local_sample_time"]

    keys = jax.random.split(jax.random.key(2), 2000)
    t_s = np.sort(np.asarray(jax.jit(jax.vmap(sample))(keys)))
    assert t_s.min() >= 0.0 and t_s.max() <= T1
    # Kolmogorov--Smirnov distance to U(0, T1); the 0.1% critical value for n=2000 is 0.044.
    ecdf = np.arange(1, len(t_s) + 1) / len(t_s)
    ks = np.max(np.abs(ecdf - t_s / T1))
    assert ks < 0.044


def test_backward_in_time_sample_lies_in_interval():
    sol = ndes.diffeqsolve(
        linear_term(A),
        diffrax.Tsit5(),
        T1,
        0.0,
        -0.1,
        Y0,
        stepsize_controller=PID,
        regularizers=(ndes.LocalErrorEstimate(1.0, key=jax.random.key(3)),),
    )
    t_s = float(sol.stats["local_sample_time"])
    assert 0.0 <= t_s <= T1
    assert float(sol.penalty) > 0


def test_extra_step_is_counted():
    counter = Counter()
    term = diffrax.ODETerm(counter.wrap(lambda t, y, args: A @ y))
    base = _solve((), term=term)
    n_base = counter.read()
    assert int(base.stats["num_fevals"]) == n_base
    regs = (
        ndes.LocalErrorEstimate(1.0, key=jax.random.key(0)),
        ndes.LocalStiffnessEstimate(1.0, key=jax.random.key(0)),
    )
    sol = _solve(regs, term=term)
    n_local = counter.read() - n_base
    # One shared extra step: 7 evaluations for Tsit5 (a fresh step: init + all stages).
    assert int(sol.stats["num_fevals"]) == int(base.stats["num_fevals"]) + 7
    assert n_local == int(sol.stats["num_fevals"])


def test_ys_unchanged_by_local_regularizers():
    base = _solve(())
    sol = _solve((ndes.LocalErrorEstimate(1.0, key=jax.random.key(0)),))
    np.testing.assert_array_equal(np.asarray(sol.ys), np.asarray(base.ys))
    assert int(sol.stats["num_steps"]) == int(base.stats["num_steps"])


@pytest.mark.parametrize("which", ["error", "stiffness"])
@pytest.mark.parametrize("sampling", ["unbiased", "biased"])
def test_fd_gradient(getkey, which, sampling):
    flat, build = flat_field(getkey(), scale=5.0)
    y0 = jnp.array([0.5, -0.3])
    key = jax.random.key(7)
    if which == "error":
        # rtol=0: the error scale is a true constant, so central differences must agree.
        reg = ndes.LocalErrorEstimate(1.0, sampling=sampling, key=key, rtol=0.0, atol=1e-3)
    else:
        reg = ndes.LocalStiffnessEstimate(1.0, sampling=sampling, key=key)

    def solve(p):
        return ndes.diffeqsolve(
            diffrax.ODETerm(build(p)),
            diffrax.Tsit5(),
            0.0,
            1.0,
            0.25,
            y0,
            stepsize_controller=diffrax.ConstantStepSize(),
            regularizers=(reg,),
        )

    def f(p):
        return solve(p).penalty

    # The sample (t_s, y(t_s), h) is a constant of the gradient, so the finite differences
    # are taken of one step from the recorded sample, held fixed.
    sol = solve(flat)
    t_s, h = float(sol.stats["local_sample_time"]), float(sol.stats["local_step_size"])
    ref = diffrax.diffeqsolve(
        diffrax.ODETerm(build(flat)),
        diffrax.Tsit5(),
        0.0,
        1.0,
        0.25,
        y0,
        saveat=diffrax.SaveAt(dense=True),
    )
    y_s = ref.evaluate(t_s)
    one_reg = (
        ndes.ErrorEstimate(1.0, rtol=0.0, atol=1e-3)
        if which == "error"
        else ndes.StiffnessEstimate(1.0, aggregate="sum")
    )

    def g(p):
        one = ndes.diffeqsolve(
            diffrax.ODETerm(build(p)),
            diffrax.Tsit5(),
            t_s,
            t_s + h,
            h,
            y_s,
            stepsize_controller=diffrax.ConstantStepSize(),
            regularizers=(one_reg,),
        )
        return one.penalty

    np.testing.assert_allclose(float(f(flat)), float(g(flat)), rtol=1e-7)
    grad = np.asarray(jax.grad(f)(flat))
    idx = np.arange(0, flat.size, max(1, flat.size // 10))
    fd = central_fd(lambda q: g(flat.at[idx].set(q)), flat[idx], eps=1e-5)
    np.testing.assert_allclose(grad[idx], fd, rtol=1e-4, atol=1e-8)
    # y(t_s) is gradient-stopped: no gradient reaches y0.
    g_y0 = jax.grad(
        lambda y: (
            ndes.diffeqsolve(
                diffrax.ODETerm(build(flat)),
                diffrax.Tsit5(),
                0.0,
                1.0,
                0.25,
                y,
                stepsize_controller=diffrax.ConstantStepSize(),
                regularizers=(reg,),
            ).penalty
        )
    )(y0)
    np.testing.assert_array_equal(np.asarray(g_y0), 0.0)


def test_vmap_grad_with_per_trajectory_keys(getkey):
    flat, build = flat_field(getkey(), scale=5.0)
    y0s = jnp.array([[0.5, -0.3], [2.0, 1.0], [-1.0, 0.1]])
    keys = jax.random.split(jax.random.key(4), 3)

    def f(p, y0, key):
        sol = ndes.diffeqsolve(
            diffrax.ODETerm(build(p)),
            diffrax.Tsit5(),
            0.0,
            1.0,
            None,
            y0,
            stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-5),
            regularizers=(ndes.LocalErrorEstimate(1.0, key=key),),
        )
        return sol.penalty

    batched = jax.vmap(jax.grad(f), in_axes=(None, 0, 0))(flat, y0s, keys)
    assert np.all(np.isfinite(np.asarray(batched)))
    for i in range(3):
        np.testing.assert_allclose(
            batched[i], jax.grad(f)(flat, y0s[i], keys[i]), rtol=1e-5, atol=1e-9
        )


@pytest.mark.parametrize("sampling", ["unbiased", "biased"])
def test_local_error_on_adaptive_sde(sampling):
    key = jax.random.key(5)
    bm = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1e-3, shape=(2,), key=key)
    terms = diffrax.MultiTerm(
        diffrax.ODETerm(lambda t, y, args: -y),
        diffrax.ControlTerm(lambda t, y, args: 0.1 * jnp.eye(2), bm),
    )
    sol = ndes.diffeqsolve(
        terms,
        diffrax.Heun(),
        0.0,
        1.0,
        0.05,
        jnp.ones(2),
        stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-3),
        regularizers=(ndes.LocalErrorEstimate(1.0, key=key, sampling=sampling),),
    )
    assert np.isfinite(float(sol.penalty)) and float(sol.penalty) > 0
    # The extra step stays inside the Brownian path's interval.
    t_s, h = float(sol.stats["local_sample_time"]), float(sol.stats["local_step_size"])
    assert 0.0 <= t_s and t_s + h <= 1.0 + 1e-12
    if sampling == "unbiased":  # samples in the last step: the extra step is cut at t1
        steps = diffrax.diffeqsolve(
            terms,
            diffrax.Heun(),
            0.0,
            1.0,
            0.05,
            jnp.ones(2),
            stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-3),
            saveat=diffrax.SaveAt(steps=True),
        )
        ends = np.asarray(steps.ts)
        last_start = ends[np.isfinite(ends)][-2]

        def sample(k):
            s = ndes.diffeqsolve(
                terms,
                diffrax.Heun(),
                0.0,
                1.0,
                0.05,
                jnp.ones(2),
                stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-3),
                regularizers=(ndes.LocalErrorEstimate(1.0, key=k),),
            )
            return s.stats["local_sample_time"], s.stats["local_step_size"], s.penalty

        keys = jax.random.split(jax.random.key(6), 128)
        t_s, h, pen = (np.asarray(v) for v in jax.jit(jax.vmap(sample))(keys))
        last = t_s >= last_start
        assert last.any() and not last.all()
        np.testing.assert_allclose(h[last], 1.0 - t_s[last], rtol=1e-9)
        assert np.all(t_s + h <= 1.0 + 1e-12) and np.all(np.isfinite(pen))


def test_errors():
    with pytest.raises(ValueError, match="needs key="):
        ndes.LocalErrorEstimate(1.0)
    with pytest.raises(ValueError, match="needs key="):
        ndes.LocalStiffnessEstimate(1.0, sampling="biased")
    with pytest.raises(ValueError, match="sampling='uniform'"):
        ndes.LocalErrorEstimate(1.0, sampling="uniform", key=jax.random.key(0))
    with pytest.raises(ValueError, match="sampling=0.5. must be 'unbiased'"):
        ndes.LocalErrorEstimate(1.0, sampling=0.5, key=jax.random.key(0))
    with pytest.raises(ValueError, match="same sampling"):
        _solve(
            (
                ndes.LocalErrorEstimate(1.0, key=jax.random.key(0)),
                ndes.LocalStiffnessEstimate(1.0, sampling="biased", key=jax.random.key(0)),
            )
        )
    with pytest.raises(ValueError, match="LocalStiffnessEstimate"):
        ndes.diffeqsolve(
            linear_term(A),
            diffrax.Bosh3(),
            0.0,
            1.0,
            0.1,
            Y0,
            stepsize_controller=PID,
            regularizers=(ndes.LocalStiffnessEstimate(1.0, key=jax.random.key(0)),),
        )
    with pytest.raises(ValueError, match="BacksolveAdjoint"):
        ndes.diffeqsolve(
            linear_term(A),
            diffrax.Tsit5(),
            0.0,
            1.0,
            0.1,
            Y0,
            stepsize_controller=PID,
            adjoint=diffrax.BacksolveAdjoint(),
            regularizers=(ndes.LocalErrorEstimate(1.0, key=jax.random.key(0)),),
        )
