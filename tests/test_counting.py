"""`stats["num_fevals"]` against a real counter, solver by solver, including rejected steps."""

import diffrax
import jax
import jax.numpy as jnp
import pytest

import ndes

from .helpers import Counter

ODE_SOLVERS = [
    diffrax.Euler,
    diffrax.Heun,
    diffrax.Midpoint,
    diffrax.Ralston,
    diffrax.Bosh3,
    diffrax.Tsit5,
    diffrax.Dopri5,
    diffrax.Dopri8,
    diffrax.ReversibleHeun,
]


def _rhs(t, y, args):
    return jnp.stack([y[1], -4.0 * y[0] - 0.3 * y[1] + jnp.sin(3 * t)])


@pytest.mark.parametrize("solver_cls", ODE_SOLVERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "dt0,adaptive",
    [(0.1, False), (None, True), (2.0, True)],  # dt0=2.0 forces rejected first attempts
    ids=["constant", "adaptive-dt0None", "adaptive-rejections"],
)
def test_ode_fevals_exact(solver_cls, dt0, adaptive):
    if adaptive and solver_cls is diffrax.Euler:
        pytest.skip("Euler has no error estimate")
    counter = Counter()
    term = diffrax.ODETerm(counter.wrap(_rhs))
    ctrl = diffrax.PIDController(rtol=1e-5, atol=1e-7) if adaptive else diffrax.ConstantStepSize()
    sol = ndes.diffeqsolve(
        term, solver_cls(), 0.0, 3.0, dt0, jnp.array([1.0, 0.0]), stepsize_controller=ctrl
    )
    assert int(sol.stats["num_fevals"]) == counter.read()
    if dt0 == 2.0:
        assert int(sol.stats["num_rejected_steps"]) > 0


def test_fevals_with_regularizers_and_jit():
    counter = Counter()
    term = diffrax.ODETerm(counter.wrap(_rhs))

    @jax.jit
    def run(y0):
        return ndes.diffeqsolve(
            term,
            diffrax.Tsit5(),
            0.0,
            3.0,
            1.5,
            y0,
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-8),
            regularizers=(ndes.ErrorEstimate(1.0), ndes.StiffnessEstimate(1.0)),
        ).stats

    stats = run(jnp.array([1.0, 0.0]))
    assert int(stats["num_fevals"]) == counter.read()
    assert int(stats["num_rejected_steps"]) > 0


def test_halfsolver_fevals_exact():
    counter = Counter()
    term = diffrax.ODETerm(counter.wrap(_rhs))
    sol = ndes.diffeqsolve(
        term,
        diffrax.HalfSolver(diffrax.Bosh3()),
        0.0,
        3.0,
        1.0,
        jnp.array([1.0, 0.0]),
        stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-7),
    )
    assert int(sol.stats["num_fevals"]) == counter.read()
    assert int(sol.stats["num_rejected_steps"]) > 0


def _sde_terms(cf, cg, key):
    bm = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1e-4, shape=(2,), key=key)
    drift = diffrax.ODETerm(cf.wrap(lambda t, y, a: -y))
    diffusion = diffrax.ControlTerm(cg.wrap(lambda t, y, a: 0.5 * jnp.diag(y)), bm)
    return diffrax.MultiTerm(drift, diffusion)


@pytest.mark.parametrize(
    "solver,adaptive",
    [
        (diffrax.Euler(), False),
        (diffrax.Heun(), False),
        (diffrax.Heun(), True),
        (diffrax.EulerHeun(), False),
        (diffrax.ReversibleHeun(), True),
    ],
    ids=["Euler", "Heun", "Heun-adaptive", "EulerHeun", "ReversibleHeun-adaptive"],
)
def test_sde_fevals_exact_per_term(solver, adaptive):
    cf, cg = Counter(), Counter()
    terms = _sde_terms(cf, cg, jax.random.key(1))
    ctrl = diffrax.PIDController(rtol=1e-2, atol=1e-2) if adaptive else diffrax.ConstantStepSize()
    sol = ndes.diffeqsolve(terms, solver, 0.0, 1.0, 0.05, jnp.ones(2), stepsize_controller=ctrl)
    per_term = sol.stats["num_fevals_per_term"]
    assert [int(per_term[0]), int(per_term[1])] == [cf.read(), cg.read()]
    assert int(sol.stats["num_fevals"]) == cf.read() + cg.read()


@pytest.mark.parametrize("solver", [diffrax.ShARK(), diffrax.SRA1()], ids=["ShARK", "SRA1"])
@pytest.mark.parametrize("adaptive", [False, True], ids=["fixed", "adaptive"])
def test_additive_srk_fevals_exact_per_term(solver, adaptive):
    cf, cg = Counter(), Counter()
    bm = diffrax.VirtualBrownianTree(
        0.0, 1.0, tol=1e-4, shape=(2,), key=jax.random.key(3), levy_area=diffrax.SpaceTimeLevyArea
    )
    drift = diffrax.ODETerm(cf.wrap(lambda t, y, a: -y + jnp.sin(4 * t)))
    # diffrax evaluates the additive diffusion at both ends of a step in one vmap over t.
    g = cg.wrap(lambda t, y, a: (0.3 + t) * jnp.eye(2), per_time=True)
    diffusion = diffrax.ControlTerm(g, bm)
    terms = diffrax.MultiTerm(drift, diffusion)
    ctrl = diffrax.PIDController(rtol=1e-3, atol=1e-3) if adaptive else diffrax.ConstantStepSize()
    sol = ndes.diffeqsolve(terms, solver, 0.0, 1.0, 0.05, jnp.ones(2), stepsize_controller=ctrl)
    per_term = sol.stats["num_fevals_per_term"]
    assert [int(per_term[0]), int(per_term[1])] == [cf.read(), cg.read()]
    if adaptive:
        assert int(sol.stats["num_rejected_steps"]) > 0


def test_general_noise_srk_has_no_feval_count():
    bm = diffrax.VirtualBrownianTree(
        0.0, 1.0, tol=1e-4, shape=(2,), key=jax.random.key(3), levy_area=diffrax.SpaceTimeLevyArea
    )
    terms = diffrax.MultiTerm(
        diffrax.ODETerm(lambda t, y, a: -y), diffrax.ControlTerm(lambda t, y, a: jnp.diag(y), bm)
    )
    assert not ndes.supports_feval_count(diffrax.SlowRK(), terms, y0=jnp.ones(2))


def test_unknown_solver_has_no_feval_count():
    term = diffrax.ODETerm(_rhs)
    solver = diffrax.Kvaerno5()
    assert not ndes.supports_feval_count(solver, term)
    sol = ndes.diffeqsolve(
        term,
        solver,
        0.0,
        1.0,
        0.1,
        jnp.array([1.0, 0.0]),
        stepsize_controller=diffrax.PIDController(rtol=1e-4, atol=1e-6),
    )
    assert "num_fevals" not in sol.stats
    assert int(sol.stats["num_accepted_steps"]) > 0
