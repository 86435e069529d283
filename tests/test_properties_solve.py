"""Property-based test (hypothesis): `ndes.diffeqsolve` without regularizers equals
`diffrax.diffeqsolve` on random solver / step-size controller / `SaveAt` combinations, random
initial states, horizons (forward and backward) and initial steps: the same `ts`, `ys`,
`result` and step counts bitwise, or the same error.

Both are `eqx.filter_jit`-compiled once per static combination (solver, controller, SaveAt
kind); the numbers vary from example to example without recompiling."""

import diffrax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ndes

SOLVERS = {
    "Euler": diffrax.Euler(),
    "Heun": diffrax.Heun(),
    "Midpoint": diffrax.Midpoint(),
    "Bosh3": diffrax.Bosh3(),
    "Tsit5": diffrax.Tsit5(),
    "Dopri5": diffrax.Dopri5(),
}
CONTROLLERS = {
    "constant": diffrax.ConstantStepSize(),
    "pid": diffrax.PIDController(rtol=1e-4, atol=1e-6),
    "pid_pi": diffrax.PIDController(rtol=1e-3, atol=1e-5, pcoeff=0.3, icoeff=0.3, dtmax=0.5),
}
SAVEATS = ("t1", "t0_t1", "ts", "steps")


def field(t, y, args):
    return jnp.stack([y[1], -y[0] - 0.3 * y[1] + 0.5 * jnp.sin(3 * t)])


def _saveat(kind, t0, t1):
    if kind == "t1":
        return diffrax.SaveAt(t1=True)
    if kind == "t0_t1":
        return diffrax.SaveAt(t0=True, t1=True)
    if kind == "ts":
        return diffrax.SaveAt(ts=t0 + (t1 - t0) * jnp.linspace(0.0, 1.0, 5))
    return diffrax.SaveAt(steps=True)


def _solve(fn, solver, controller, kind, y0, t1, dt0):
    t0 = jnp.asarray(0.0)
    return fn(
        diffrax.ODETerm(field),
        SOLVERS[solver],
        t0,
        t1,
        dt0,
        y0,
        saveat=_saveat(kind, t0, t1),
        stepsize_controller=CONTROLLERS[controller],
        max_steps=256,
    )


def _outcome(fn, *args):
    try:
        sol = _solve(fn, *args)
    except Exception as e:  # the error is part of the outcome
        return ("error", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    return (
        "ok",
        np.asarray(sol.ts),
        np.asarray(sol.ys),
        int(sol.result._value),
        {k: int(sol.stats[k]) for k in ("num_steps", "num_accepted_steps", "num_rejected_steps")},
    )


def _check_equal(solver, controller, kind, y0, t1, dt0):
    y0 = jnp.asarray(y0)
    t1 = jnp.asarray(t1)
    if dt0 is not None:
        dt0 = jnp.asarray(dt0 if float(t1) > 0 else -dt0)
    args = (solver, controller, kind, y0, t1, dt0)
    ours, theirs = _outcome(ndes.diffeqsolve, *args), _outcome(diffrax.diffeqsolve, *args)
    assert ours[0] == theirs[0], (ours, theirs)
    if ours[0] == "error":
        assert ours[1:] == theirs[1:], (ours, theirs)
        return
    np.testing.assert_array_equal(ours[1], theirs[1])
    np.testing.assert_array_equal(ours[2], theirs[2])
    assert ours[3:] == theirs[3:]


NUMBERS = dict(
    y0=st.lists(st.floats(-3.0, 3.0), min_size=2, max_size=2),
    t1=st.sampled_from([2.0, -1.5, 5.0]),
)
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=40, **SETTINGS)
@given(
    solver=st.sampled_from(["Heun", "Tsit5"]),
    controller=st.sampled_from(["constant", "pid"]),
    kind=st.sampled_from(["t1", "ts"]),
    dt0=st.sampled_from([None, 0.1]),
    **NUMBERS,
)
def test_diffeqsolve_equals_diffrax(solver, controller, kind, y0, t1, dt0):
    """A small space (16 static combinations, each compiled once) for `make test`."""
    _check_equal(solver, controller, kind, y0, t1, dt0)


@pytest.mark.slow
@settings(max_examples=150, **SETTINGS)
@given(
    solver=st.sampled_from(sorted(SOLVERS)),
    controller=st.sampled_from(sorted(CONTROLLERS)),
    kind=st.sampled_from(SAVEATS),
    dt0=st.sampled_from([None, 0.1, 0.37]),
    **NUMBERS,
)
def test_diffeqsolve_equals_diffrax_every_combination(solver, controller, kind, y0, t1, dt0):
    _check_equal(solver, controller, kind, y0, t1, dt0)


def test_the_property_covers_errors_and_both_directions():
    """The strategy's space includes combinations diffrax refuses (no dt0 with a constant
    step size; an adaptive controller on a solver without an error estimate), so the
    'same error' branch is exercised, not only the equal-results one."""
    y0, t1 = jnp.array([1.0, 0.0]), jnp.asarray(2.0)
    for args in (
        ("Tsit5", "constant", "t1", y0, t1, None),
        ("Euler", "pid", "t1", y0, t1, jnp.asarray(0.1)),
    ):
        ours = _outcome(ndes.diffeqsolve, *args)
        theirs = _outcome(diffrax.diffeqsolve, *args)
        assert ours[0] == theirs[0] == "error" and ours[1] == theirs[1], (ours, theirs)
    with pytest.raises(ValueError):
        _solve(ndes.diffeqsolve, "Tsit5", "constant", "t1", y0, t1, None)
