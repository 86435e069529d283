"""Regression tests for defects in solves and regularizers (docs/reliability.md, "Solves and
regularizers"): backward-solve integral penalties, float32 states under x64, failed solves,
weight validation and `dt0=0`."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ndes

from .helpers import central_fd, flat_field

PID = diffrax.PIDController(rtol=1e-3, atol=1e-6)


# One term object per field, so that diffrax's compilation cache is shared between tests.
DECAY = diffrax.ODETerm(lambda t, y, args: -y)
SCALED = diffrax.ODETerm(lambda t, y, rate: rate * y)


# --- 1. penalties on a backward solve -----------------------------------------------------


def test_backward_penalties_equal_forward_mirror():
    # dy/dt = -y from t=1 back to t=0 is the mirror of dy/ds = y from s=0 to s=1: every
    # penalty (integral and per-step) must be the same non-negative number.
    key = jax.random.key(0)
    regs = (
        ndes.KineticEnergy(1.0),
        ndes.JacobianFrobenius(1.0, key=key),
        ndes.TaylorDerivative(1.0),
        ndes.ErrorEstimate(1.0),
        ndes.StiffnessEstimate(1.0),
        ndes.LocalErrorEstimate(1.0, key=key),
    )

    @eqx.filter_jit
    def solve(rate, t0, t1, dt0):  # traced times and rate: one compilation for both solves
        return ndes.diffeqsolve(
            SCALED,
            diffrax.Tsit5(),
            t0,
            t1,
            dt0,
            jnp.ones(2),
            rate,
            stepsize_controller=PID,
            regularizers=regs,
        )

    back = solve(*map(jnp.asarray, (-1.0, 1.0, 0.0, -0.1)))
    fwd = solve(*map(jnp.asarray, (1.0, 0.0, 1.0, 0.1)))
    assert back.penalty.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(back.ys), np.asarray(fwd.ys), rtol=1e-12)
    for name, v in back.penalty_terms.items():
        assert float(v) > 0, name
        np.testing.assert_allclose(float(v), float(fwd.penalty_terms[name]), rtol=1e-12)
    np.testing.assert_allclose(float(back.penalty), float(fwd.penalty), rtol=1e-12)
    # int_0^1 ||y||^2 ds with y = e^s (1, 1) is e^2 - 1.
    np.testing.assert_allclose(float(back.penalty_terms["KineticEnergy"]), np.e**2 - 1, rtol=1e-3)


def test_backward_integral_penalty_fd_gradient(getkey):
    flat, build = flat_field(getkey(), scale=2.0)
    y0 = jnp.array([0.5, -0.3])
    regs = (ndes.KineticEnergy(1.0),)

    @eqx.filter_jit
    def f(p):
        sol = ndes.diffeqsolve(
            diffrax.ODETerm(build(p)),
            diffrax.Tsit5(),
            1.0,
            0.0,
            -0.25,
            y0,
            regularizers=regs,
            max_steps=4,
        )
        return sol.penalty

    assert float(f(flat)) > 0
    g = np.asarray(eqx.filter_jit(jax.grad(f))(flat))
    idx = np.arange(0, flat.size, max(1, flat.size // 10))
    fd = central_fd(lambda q: f(flat.at[idx].set(q)), flat[idx], eps=1e-5)
    np.testing.assert_allclose(g[idx], fd, rtol=1e-5, atol=1e-9)


# --- 2. float32 state with jax_enable_x64 -------------------------------------------------


def test_local_regularizers_float32_state_under_x64():
    key = jax.random.key(0)
    regs = (ndes.LocalErrorEstimate(1.0, key=key), ndes.LocalStiffnessEstimate(1.0, key=key))

    def solve(y0):
        return ndes.diffeqsolve(
            DECAY,
            diffrax.Tsit5(),
            0.0,
            1.0,
            0.1,
            y0,
            stepsize_controller=PID,
            regularizers=regs,
        )

    sol32 = solve(jnp.ones(2, jnp.float32))
    sol64 = solve(jnp.ones(2, jnp.float64))
    # diffrax solves a float32 y0 with float64 times in float64: the values agree.
    for name in sol64.penalty_terms:
        np.testing.assert_allclose(
            float(sol32.penalty_terms[name]), float(sol64.penalty_terms[name]), rtol=1e-6
        )
    assert np.isfinite(float(sol32.penalty)) and float(sol32.penalty) > 0


# --- 3. a failed solve has a NaN penalty --------------------------------------------------


@eqx.filter_jit
def _adaptive_solve(y0, rate, t1):
    # Traced y0, rate and t1: one compilation for the tests of failed adaptive solves.
    return ndes.diffeqsolve(
        SCALED,
        diffrax.Tsit5(),
        0.0,
        t1,
        0.1,
        y0,
        rate,
        stepsize_controller=PID,
        regularizers=(ndes.ErrorEstimate(1.0), ndes.LocalErrorEstimate(1.0, key=jax.random.key(0))),
        throw=False,
        max_steps=64,
    )


def test_nan_y0_gives_nan_penalty():
    # Every step is rejected (NaN error), so no step contributed and the sum was 0.
    sol = _adaptive_solve(jnp.array([jnp.nan, 1.0]), jnp.asarray(-1.0), jnp.asarray(1.0))
    assert sol.result == diffrax.RESULTS.max_steps_reached
    assert np.isnan(float(sol.penalty))
    assert all(np.isnan(float(v)) for v in sol.penalty_terms.values())
    ok = _adaptive_solve(jnp.ones(2), jnp.asarray(-1.0), jnp.asarray(1.0))
    assert diffrax.is_successful(ok.result)
    assert all(np.isfinite(float(v)) and float(v) > 0 for v in ok.penalty_terms.values())


def test_max_steps_failure_gives_nan_penalty():
    # 64 steps of dy/dt = y reach t ~ 20 of 1e3: the state is finite, the penalty partial.
    sol = _adaptive_solve(jnp.ones(2), jnp.asarray(1.0), jnp.asarray(1e3))
    assert sol.result == diffrax.RESULTS.max_steps_reached
    assert np.isfinite(np.asarray(sol.ys)).all()
    assert np.isnan(float(sol.penalty))


def test_nan_state_with_constant_steps_gives_nan_penalty():
    # A constant step size accepts every step: the result is "successful", ys is NaN, and the
    # error estimate's non-finite entries (zeroed, as for a rejected step) gave a penalty of 0.
    sol = ndes.diffeqsolve(
        DECAY,
        diffrax.Tsit5(),
        0.0,
        1.0,
        0.1,
        jnp.array([jnp.nan, 1.0]),
        regularizers=(ndes.ErrorEstimate(1.0, rtol=1e-3, atol=1e-6),),
    )
    assert diffrax.is_successful(sol.result)
    assert np.isnan(float(sol.penalty))
    assert np.isnan(float(sol.penalty_terms["ErrorEstimate"]))


def test_event_termination_keeps_finite_penalty():
    # SaveAt(ts=...) past the event time is filled with inf, not NaN: not a failure.
    event = diffrax.Event(lambda t, y, args, **kw: y[0] - 0.5)
    sol = ndes.diffeqsolve(
        DECAY,
        diffrax.Tsit5(),
        0.0,
        2.0,
        0.1,
        jnp.ones(2),
        saveat=diffrax.SaveAt(ts=jnp.linspace(0.0, 2.0, 5)),
        stepsize_controller=PID,
        regularizers=(ndes.ErrorEstimate(1.0),),
        event=event,
    )
    assert diffrax.is_event(sol.result)
    assert np.isfinite(float(sol.penalty)) and float(sol.penalty) > 0


# --- 4./5. weights ------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [float("inf"), float("nan"), -1.0, "1", None, [1.0], True])
@pytest.mark.parametrize(
    "cls",
    [
        ndes.ErrorEstimate,
        ndes.StiffnessEstimate,
        ndes.KineticEnergy,
        lambda weight: ndes.LocalErrorEstimate(weight, key=jax.random.key(0)),
    ],
    ids=["error", "stiffness", "kinetic", "local"],
)
def test_bad_float_weight_is_refused(cls, weight):
    with pytest.raises(ValueError, match=r"weight=.* must be a finite non-negative number"):
        cls(weight=weight)


def test_good_weights_are_accepted():
    for w in (0, 0.0, 1e-2, 3, np.float32(0.5), jnp.asarray(2.0)):
        ndes.ErrorEstimate(weight=w)


def _schedule(step):
    return jnp.where(step < 3, 1.0, jnp.where(step < 6, jnp.nan, -1.0))


@eqx.filter_jit
def _schedule_solve(train_step):
    return ndes.diffeqsolve(
        DECAY,
        diffrax.Tsit5(),
        0.0,
        1.0,
        0.1,
        jnp.ones(2),
        stepsize_controller=PID,
        regularizers=(ndes.ErrorEstimate(_schedule),),
        train_step=train_step,
    ).penalty


def test_schedule_returning_nan_or_negative_raises_at_run_time():
    assert np.isfinite(float(_schedule_solve(jnp.asarray(1))))
    for step in (4, 7):  # NaN, then negative
        with pytest.raises(Exception, match="returned a negative or non-finite"):
            jax.block_until_ready(_schedule_solve(jnp.asarray(step)))


# --- 6. dt0 = 0 ---------------------------------------------------------------------------


@pytest.mark.parametrize("dt0", [0.0, -0.0, 0, np.float64(0.0), jnp.asarray(0.0), float("nan")])
def test_zero_dt0_is_refused(dt0):
    with pytest.raises(ValueError, match=r"dt0=.* must be a finite, non-zero"):
        ndes.diffeqsolve(
            DECAY,
            diffrax.Tsit5(),
            0.0,
            1.0,
            dt0,
            jnp.ones(2),
            stepsize_controller=PID,
        )


def test_traced_zero_dt0_raises_at_run_time():
    @eqx.filter_jit
    def solve(dt0):
        return ndes.diffeqsolve(
            DECAY,
            diffrax.Tsit5(),
            0.0,
            1.0,
            dt0,
            jnp.ones(2),
            stepsize_controller=PID,
        ).ys

    np.testing.assert_allclose(np.asarray(solve(jnp.asarray(0.1)))[-1], np.exp(-1.0), rtol=1e-3)
    with pytest.raises(Exception, match="dt0 is 0"):
        jax.block_until_ready(solve(jnp.asarray(0.0)))
