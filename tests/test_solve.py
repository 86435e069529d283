"""`ndes.diffeqsolve` is a drop-in for `diffrax.diffeqsolve`: neutrality, transforms, errors."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ndes

from .helpers import MLPField

PID = diffrax.PIDController(rtol=1e-4, atol=1e-6)


def _field(key):
    return MLPField(2, 16, key)


def _solve_both(term, solver, dt0, ctrl, regs, y0, saveat=diffrax.SaveAt(t1=True)):
    kw = dict(stepsize_controller=ctrl, saveat=saveat)
    ref = diffrax.diffeqsolve(term, solver, 0.0, 2.0, dt0, y0, **kw)
    got = ndes.diffeqsolve(term, solver, 0.0, 2.0, dt0, y0, regularizers=regs, **kw)
    return ref, got


@pytest.mark.parametrize(
    "solver",
    [diffrax.Tsit5(), diffrax.Dopri5(), diffrax.Dopri8(), diffrax.Bosh3()],
    ids=lambda s: type(s).__name__,
)
@pytest.mark.parametrize("dt0,ctrl", [(None, PID), (1.0, PID), (0.05, diffrax.ConstantStepSize())])
@pytest.mark.parametrize("with_regs", [False, True])
def test_neutrality_bitwise(getkey, solver, dt0, ctrl, with_regs):
    term = diffrax.ODETerm(_field(getkey()))
    y0 = jnp.array([0.7, -1.2])
    regs = ()
    if with_regs:
        regs = (ndes.ErrorEstimate(0.1, rtol=1e-4, atol=1e-6),)
        if ndes.regularizers.supports_stiffness_estimate(solver):
            regs += (ndes.StiffnessEstimate(0.1),)
    saveat = diffrax.SaveAt(ts=jnp.linspace(0.0, 2.0, 7))
    ref, got = _solve_both(term, solver, dt0, ctrl, regs, y0, saveat)
    np.testing.assert_array_equal(np.asarray(got.ys), np.asarray(ref.ys))
    np.testing.assert_array_equal(np.asarray(got.ts), np.asarray(ref.ts))
    for k in ("num_steps", "num_accepted_steps", "num_rejected_steps"):
        assert int(got.stats[k]) == int(ref.stats[k])
    assert isinstance(got, diffrax.Solution)
    if not with_regs:
        assert float(got.penalty) == 0.0 and got.penalty_terms == {}


def test_weight_zero_changes_nothing(getkey):
    term = diffrax.ODETerm(_field(getkey()))
    y0 = jnp.array([0.7, -1.2])
    base = ndes.diffeqsolve(term, diffrax.Tsit5(), 0.0, 2.0, None, y0, stepsize_controller=PID)
    reg = ndes.diffeqsolve(
        term,
        diffrax.Tsit5(),
        0.0,
        2.0,
        None,
        y0,
        stepsize_controller=PID,
        regularizers=(ndes.ErrorEstimate(0.0), ndes.StiffnessEstimate(0.0)),
    )
    np.testing.assert_array_equal(np.asarray(base.ys), np.asarray(reg.ys))
    assert float(reg.penalty) == 0.0
    assert float(reg.penalty_terms["ErrorEstimate"]) > 0.0
    g = jax.grad(
        lambda y: (
            ndes.diffeqsolve(
                term,
                diffrax.Tsit5(),
                0.0,
                2.0,
                None,
                y,
                stepsize_controller=PID,
                regularizers=(ndes.ErrorEstimate(0.0),),
            ).penalty
        )
    )(y0)
    np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_schedule_weight_and_unique_names(getkey):
    term = diffrax.ODETerm(_field(getkey()))
    sched = optax.exponential_decay(1.0, transition_steps=10, decay_rate=0.5)
    regs = (ndes.ErrorEstimate(sched), ndes.ErrorEstimate(2.0, aggregate="max"))
    sol = ndes.diffeqsolve(
        term,
        diffrax.Tsit5(),
        0.0,
        2.0,
        None,
        jnp.ones(2),
        stepsize_controller=PID,
        regularizers=regs,
        train_step=10,
    )
    terms = sol.penalty_terms
    assert set(terms) == {"ErrorEstimate", "ErrorEstimate_1"}
    expected = 0.5 * terms["ErrorEstimate"] + 2.0 * terms["ErrorEstimate_1"]
    np.testing.assert_allclose(float(sol.penalty), float(expected), rtol=1e-12)


def test_jit_vmap_and_dense_output(getkey):
    term = diffrax.ODETerm(_field(getkey()))
    y0s = jnp.array([[0.1, 0.2], [2.0, -1.0], [0.0, 0.5]])

    @jax.jit
    @jax.vmap
    def run(y0):
        sol = ndes.diffeqsolve(
            term,
            diffrax.Tsit5(),
            0.0,
            2.0,
            None,
            y0,
            stepsize_controller=PID,
            saveat=diffrax.SaveAt(t1=True, dense=True),
            regularizers=(ndes.ErrorEstimate(1.0),),
        )
        return sol.ys[-1], sol.evaluate(1.0), sol.derivative(1.0), sol.penalty

    y1, ymid, dymid, pen = run(y0s)
    for i in range(3):
        ref = diffrax.diffeqsolve(
            term,
            diffrax.Tsit5(),
            0.0,
            2.0,
            None,
            y0s[i],
            stepsize_controller=PID,
            saveat=diffrax.SaveAt(t1=True, dense=True),
        )
        np.testing.assert_allclose(y1[i], ref.ys[-1], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ymid[i], ref.evaluate(1.0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dymid[i], ref.derivative(1.0), rtol=1e-10, atol=1e-12)
    assert pen.shape == (3,) and bool(jnp.all(pen > 0))


@pytest.mark.parametrize(
    "adjoint",
    [diffrax.RecursiveCheckpointAdjoint(), diffrax.DirectAdjoint()],
    ids=["RecursiveCheckpoint", "Direct"],
)
def test_adjoints_agree(getkey, adjoint):
    field = _field(getkey())
    y0 = jnp.array([0.3, -0.4])

    def loss(f, adj):
        sol = ndes.diffeqsolve(
            diffrax.ODETerm(f),
            diffrax.Tsit5(),
            0.0,
            2.0,
            0.1,
            y0,
            stepsize_controller=PID,
            adjoint=adj,
            regularizers=(ndes.ErrorEstimate(1.0),),
        )
        return jnp.sum(sol.ys**2) + sol.penalty

    import equinox as eqx

    g_ref = eqx.filter_grad(lambda f: loss(f, diffrax.RecursiveCheckpointAdjoint()))(field)
    g = eqx.filter_grad(lambda f: loss(f, adjoint))(field)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)


def test_backsolve_without_regularizers_works_and_with_is_refused(getkey):
    import equinox as eqx

    field = _field(getkey())
    y0 = jnp.array([0.3, -0.4])

    def loss(f, adj, regs=()):
        sol = ndes.diffeqsolve(
            diffrax.ODETerm(f),
            diffrax.Tsit5(),
            0.0,
            1.0,
            0.1,
            y0,
            stepsize_controller=PID,
            adjoint=adj,
            regularizers=regs,
        )
        return jnp.sum(sol.ys**2)

    g_back = eqx.filter_grad(lambda f: loss(f, diffrax.BacksolveAdjoint()))(field)
    g_ref = eqx.filter_grad(lambda f: loss(f, diffrax.RecursiveCheckpointAdjoint()))(field)
    for a, b in zip(jax.tree.leaves(g_back), jax.tree.leaves(g_ref), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-5)
    with pytest.raises(ValueError, match="BacksolveAdjoint"):
        loss(field, diffrax.BacksolveAdjoint(), (ndes.ErrorEstimate(1.0),))


def test_user_solver_and_controller_state_pass_through(getkey):
    term = diffrax.ODETerm(_field(getkey()))
    saveat = diffrax.SaveAt(t1=True, solver_state=True, controller_state=True)
    ref = diffrax.diffeqsolve(
        term, diffrax.Tsit5(), 0.0, 1.0, None, jnp.ones(2), stepsize_controller=PID, saveat=saveat
    )
    got = ndes.diffeqsolve(
        term,
        diffrax.Tsit5(),
        0.0,
        1.0,
        None,
        jnp.ones(2),
        stepsize_controller=PID,
        saveat=saveat,
        regularizers=(ndes.ErrorEstimate(1.0),),
    )
    assert jax.tree.structure(got.solver_state) == jax.tree.structure(ref.solver_state)
    assert jax.tree.structure(got.controller_state) == jax.tree.structure(ref.controller_state)
    # Continue from the saved state, as one would with diffrax.
    cont_ref = diffrax.diffeqsolve(
        term,
        diffrax.Tsit5(),
        1.0,
        2.0,
        None,
        ref.ys[-1],
        stepsize_controller=PID,
        solver_state=ref.solver_state,
        controller_state=ref.controller_state,
        made_jump=False,
    )
    cont = ndes.diffeqsolve(
        term,
        diffrax.Tsit5(),
        1.0,
        2.0,
        None,
        got.ys[-1],
        stepsize_controller=PID,
        solver_state=got.solver_state,
        controller_state=got.controller_state,
        made_jump=False,
        regularizers=(ndes.ErrorEstimate(1.0),),
    )
    np.testing.assert_array_equal(np.asarray(cont.ys), np.asarray(cont_ref.ys))
    # A continued FSAL solve re-uses the stored first stage: 6 evaluations per attempt.
    assert int(cont.stats["num_fevals"]) == 6 * int(cont.stats["num_steps"])


# --- error paths -------------------------------------------------------------------------


def test_error_no_error_estimate():
    term = diffrax.ODETerm(lambda t, y, a: -y)
    with pytest.raises(ValueError, match="HalfSolver"):
        ndes.diffeqsolve(
            term,
            diffrax.Euler(),
            0.0,
            1.0,
            0.1,
            jnp.ones(2),
            regularizers=(ndes.ErrorEstimate(1.0, rtol=1e-3, atol=1e-6),),
        )


def test_error_estimate_needs_tolerances_with_constant_steps():
    term = diffrax.ODETerm(lambda t, y, a: -y)
    with pytest.raises(ValueError, match="rtol=1e-3, atol=1e-6"):
        ndes.diffeqsolve(
            term,
            diffrax.Tsit5(),
            0.0,
            1.0,
            0.1,
            jnp.ones(2),
            regularizers=(ndes.ErrorEstimate(1.0),),
        )


@pytest.mark.parametrize("solver", [diffrax.Bosh3(), diffrax.Heun(), diffrax.Euler()])
def test_error_stiffness_unsupported_tableau(solver):
    term = diffrax.ODETerm(lambda t, y, a: -y)
    with pytest.raises(ValueError, match="Tsit5, diffrax.Dopri5, diffrax.Dopri8"):
        ndes.diffeqsolve(
            term, solver, 0.0, 1.0, 0.1, jnp.ones(2), regularizers=(ndes.StiffnessEstimate(1.0),)
        )


def test_error_unknown_keyword():
    term = diffrax.ODETerm(lambda t, y, a: -y)
    with pytest.raises(TypeError, match="unexpected keyword argument 'regularisers'"):
        ndes.diffeqsolve(term, diffrax.Tsit5(), 0.0, 1.0, 0.1, jnp.ones(2), regularisers=())


def test_error_dt0_sign():
    term = diffrax.ODETerm(lambda t, y, a: -y)
    with pytest.raises(ValueError, match=r"dt0=0.1 points away from t1.*dt0=-0.1"):
        ndes.diffeqsolve(term, diffrax.Tsit5(), 1.0, 0.0, 0.1, jnp.ones(2))


def test_backwards_in_time_works():
    term = diffrax.ODETerm(lambda t, y, a: -y)
    sol = ndes.diffeqsolve(
        term,
        diffrax.Tsit5(),
        1.0,
        0.0,
        -0.1,
        jnp.ones(2),
        stepsize_controller=PID,
        regularizers=(ndes.ErrorEstimate(1.0), ndes.StiffnessEstimate(1.0)),
    )
    np.testing.assert_allclose(sol.ys[-1], jnp.exp(1.0) * jnp.ones(2), rtol=1e-4)
    assert float(sol.penalty) > 0


def test_error_bad_regularizer_arguments():
    with pytest.raises(ValueError, match="aggregate='median'"):
        ndes.ErrorEstimate(1.0, aggregate="median")
    with pytest.raises(ValueError, match="non-negative"):
        ndes.StiffnessEstimate(-1.0)
    term = diffrax.ODETerm(lambda t, y, a: -y)
    with pytest.raises(TypeError, match="ndes regularizers"):
        ndes.diffeqsolve(term, diffrax.Tsit5(), 0.0, 1.0, 0.1, jnp.ones(2), regularizers=("err",))
    with pytest.raises(ValueError, match="train_step="):
        ndes.diffeqsolve(
            term,
            diffrax.Tsit5(),
            0.0,
            1.0,
            None,
            jnp.ones(2),
            stepsize_controller=PID,
            regularizers=(ndes.ErrorEstimate(optax.constant_schedule(1.0)),),
        )


def test_error_implicit_solver_with_regularizers():
    term = diffrax.ODETerm(lambda t, y, a: -y)
    with pytest.raises(ValueError, match="explicit solvers"):
        ndes.diffeqsolve(
            term,
            diffrax.Kvaerno5(),
            0.0,
            1.0,
            None,
            jnp.ones(2),
            stepsize_controller=PID,
            regularizers=(ndes.ErrorEstimate(1.0),),
        )
