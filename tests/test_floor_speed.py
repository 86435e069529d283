"""Fixed-step solves at the floor: grid checks once at build time, exact `max_steps`,
one checkpoint per step -- and the same `ys` and gradients as diffrax's checked loop."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
import pytest

import ndes.models._common as common
from ndes._brownian import GridBrownianPath
from ndes._fixed_steps import fixed_step_count
from ndes.models._ode import NeuralODE
from ndes.models._sde import NeuralSDE
from ndes.regularizers import KineticEnergy, RandomEndTime

N = 12


def _terms(bm, mu, additive=False):
    diff = (
        (lambda t, y, a: lx.DiagonalLinearOperator(0.3 * jnp.ones_like(y)))
        if additive
        else (lambda t, y, a: lx.DiagonalLinearOperator(0.4 * jnp.sin(y)))
    )
    return diffrax.MultiTerm(
        diffrax.ODETerm(lambda t, y, a: mu * jnp.tanh(y)), diffrax.ControlTerm(diff, bm)
    )


def _path(levy=diffrax.BrownianIncrement, t0=0.0, t1=1.0):
    return GridBrownianPath(t0, t1, (3,), jr.key(1), num_steps=N, levy_area=levy)


CASES = [
    (diffrax.Euler(), diffrax.BrownianIncrement, False),
    (diffrax.Heun(), diffrax.BrownianIncrement, False),
    (diffrax.ItoMilstein(), diffrax.BrownianIncrement, False),
    (diffrax.SPaRK(), diffrax.SpaceTimeLevyArea, False),
    (diffrax.ShARK(), diffrax.SpaceTimeLevyArea, True),
]


@pytest.mark.parametrize("solver,levy,additive", CASES)
def test_trusted_path_gives_bitwise_the_checked_solve_and_its_gradient(solver, levy, additive):
    bm = _path(levy)
    fast = bm.for_solve(0.0, 1.0, 1.0 / N, diffrax.ConstantStepSize(), solver)
    assert bm.check and not fast.check
    y0 = jnp.array([0.5, -1.0, 2.0])

    def loss(mu, path, max_steps):
        sol = diffrax.diffeqsolve(
            _terms(path, mu, additive),
            solver,
            0.0,
            1.0,
            1.0 / N,
            y0,
            max_steps=max_steps,
            saveat=diffrax.SaveAt(ts=jnp.linspace(0.0, 1.0, 5)),
            adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=max_steps),
        )
        return jnp.sum(sol.ys**2), sol.ys

    (l1, ys1), g1 = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=2)(
        -0.7, bm, 4096
    )
    (l2, ys2), g2 = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=2)(-0.7, fast, N)
    np.testing.assert_array_equal(ys1, ys2)
    assert float(g1) == float(g2)


def test_trusted_backward_solve_matches_checked():
    bm = _path()
    fast = bm.for_solve(1.0, 0.0, -1.0 / N, diffrax.ConstantStepSize(), diffrax.Euler())
    assert not fast.check
    y0 = jnp.ones(3)
    out = [
        diffrax.diffeqsolve(_terms(p, -0.5), diffrax.Euler(), 1.0, 0.0, -1.0 / N, y0).ys
        for p in (bm, fast)
    ]
    np.testing.assert_array_equal(*out)


def test_for_solve_refuses_what_is_statically_off_the_grid():
    bm, c = _path(), diffrax.ConstantStepSize()
    with pytest.raises(ValueError, match="not exactly one cell.*ConstantStepSize"):
        bm.for_solve(0.0, 1.0, 0.1, diffrax.PIDController(rtol=1e-3, atol=1e-3), diffrax.Heun())
    with pytest.raises(ValueError, match="not exactly one cell"):
        bm.for_solve(0.0, 1.0, 1.0 / N, c, diffrax.HalfSolver(diffrax.Heun()))
    with pytest.raises(ValueError, match="not exactly one cell"):
        bm.for_solve(0.0, 1.0, 0.05, c, diffrax.Euler())
    with pytest.raises(ValueError, match="outside the path's interval"):
        bm.for_solve(0.0, 1.2, 0.1, c, diffrax.Euler())
    with pytest.raises(ValueError, match="outside the path's interval"):
        bm.for_solve(0.05, 1.0, 1.0 / N, c, diffrax.Euler())


def test_for_solve_keeps_the_traced_check_where_it_cannot_decide():
    bm = _path()
    step_to = diffrax.StepTo(jnp.linspace(0.0, 1.0, N + 1))
    assert bm.for_solve(0.0, 1.0, None, step_to, diffrax.Euler()).check

    @jax.jit
    def traced(t0, t1):
        p = GridBrownianPath(t0, t1, (3,), jr.key(1), num_steps=N)
        dt = (p.t1 - p.t0) / N
        vouched = p.for_solve(
            p.t0, p.t1, dt, diffrax.ConstantStepSize(), diffrax.Euler(), num_steps=N
        )
        unvouched = p.for_solve(p.t0, p.t1, dt, diffrax.ConstantStepSize(), diffrax.Euler())
        other = p.for_solve(
            t0 + 0.0, p.t1, dt, diffrax.ConstantStepSize(), diffrax.Euler(), num_steps=N
        )
        assert not vouched.check and unvouched.check and other.check
        return t0

    traced(0.0, 1.0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize(
    "t0,t1,n", [(0.0, 1.0, 50), (0.3, 7.1, 97), (-2.0, 3.0, 1000), (0.0, 1.0, 3)]
)
def test_fixed_step_count_is_the_count_diffrax_takes(dtype, t0, t1, n):
    t0a, t1a = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    dt0 = (t1a - t0a) / n
    count = fixed_step_count(diffrax.ConstantStepSize(), t0a, t1a, dt0)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: -y),
        diffrax.Euler(),
        t0a,
        t1a,
        dt0,
        jnp.ones((), dtype),
        max_steps=None,
        adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=2 * n),
    )
    assert count == int(sol.stats["num_steps"]) == n
    assert fixed_step_count(diffrax.StepTo(jnp.linspace(t0, t1, n + 1)), t0, t1, None) == n
    assert fixed_step_count(diffrax.PIDController(rtol=1e-3, atol=1e-3), t0, t1, 0.1) is None
    assert fixed_step_count(diffrax.ConstantStepSize(), t0, jnp.inf, 0.1) is None


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    real = common.diffeqsolve

    def spy(terms, *a, **kw):
        calls.append((terms, kw))
        return real(terms, *a, **kw)

    monkeypatch.setattr(common, "diffeqsolve", spy)
    return calls


@pytest.mark.parametrize("mode", ["joint", "vmap"])
def test_neural_sde_solves_at_exact_max_steps_with_the_trusted_path(recorded, mode):
    model = NeuralSDE.mlp(2, 8, 1, key=jr.key(0), num_steps=7, batch_mode=mode)
    y0 = jnp.ones((3, 2))
    ys = eqx.filter_jit(lambda m, k: m(jnp.linspace(0.0, 1.0, 4), y0, key=k).ys)(model, jr.key(2))
    assert ys.shape == (3, 4, 2) and bool(jnp.all(jnp.isfinite(ys)))
    ((terms, kw),) = recorded
    assert kw["max_steps"] == 7 and kw["adjoint"].checkpoints == 7
    assert not terms.terms[1].control.check


def test_ode_fixed_steps_at_exact_max_steps_equal_diffrax_default(recorded):
    model = NeuralODE.mlp(
        2,
        8,
        1,
        key=jr.key(0),
        stepsize_controller=diffrax.ConstantStepSize(),
        dt0=0.05,
        solver=diffrax.Heun(),
    )
    ts, y0 = jnp.linspace(0.0, 1.0, 5), jnp.array([0.3, -0.2])

    def ours(m):
        return jnp.sum(m(ts, y0).ys ** 2)

    def plain(m):  # diffrax's defaults: max_steps=4096, RecursiveCheckpointAdjoint()
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(m.vector_field),
            diffrax.Heun(),
            0.0,
            1.0,
            0.05,
            y0,
            saveat=diffrax.SaveAt(ts=ts),
        )
        return jnp.sum(sol.ys**2)

    l1, g1 = eqx.filter_jit(eqx.filter_value_and_grad(ours))(model)
    l2, g2 = eqx.filter_jit(eqx.filter_value_and_grad(plain))(model)
    assert float(l1) == float(l2)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    recorded.clear()  # (under jit `ts[0]` is traced: the count is unknown, defaults stay)
    model(ts, y0)  # concrete times: the count is known when the solve is built
    _, kw = recorded[0]
    assert kw["max_steps"] == 20 and kw["adjoint"].checkpoints == 20
    # RandomEndTime moves t1, so the stored max_steps stays; other regularizers keep the count
    recorded.clear()
    term = diffrax.ODETerm(model.vector_field)
    steer = (RandomEndTime(0.01, key=jr.key(4)),)
    model.settings.diffeqsolve(
        term, 0.0, 1.0, y0, None, saveat=diffrax.SaveAt(t1=True), regularizers=steer
    )
    assert recorded[0][1]["max_steps"] == 4096
    recorded.clear()
    model(ts, y0, regularizers=(KineticEnergy(0.1),))
    assert recorded[0][1]["max_steps"] == 20
