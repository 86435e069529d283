"""ErrorEstimate / StiffnessEstimate: formulas, gradients, the vmap NaN trap, SDEs."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

import ndes

from .helpers import MLPField, central_fd, flat_field, linear_term

RTOL, ATOL = 1e-5, 1e-7
PID = diffrax.PIDController(rtol=RTOL, atol=ATOL)


def _accepted_times(term, solver, y0, t1, dt0, ctrl):
    sol = diffrax.diffeqsolve(
        term,
        solver,
        0.0,
        t1,
        dt0,
        y0,
        stepsize_controller=ctrl,
        saveat=diffrax.SaveAt(t0=True, steps=True),
        max_steps=256,
    )
    ts = np.asarray(sol.ts)
    return ts[np.isfinite(ts)]


def test_error_estimate_matches_direct_formula():
    A = jnp.array([[-0.5, 2.0], [-2.0, -0.5]])
    term = linear_term(A)
    y0 = jnp.array([1.0, 0.5])
    solver = diffrax.Tsit5()
    ts = _accepted_times(term, solver, y0, 4.0, 1.0, PID)
    # Direct evaluation of R_E = sum_j E_j |h_j| with the controller's RMS norm.
    y, total = y0, 0.0
    for ta, tb in zip(ts[:-1], ts[1:], strict=False):
        state = solver.init(term, ta, tb, y, None)
        y1, err, _, _, _ = solver.step(term, ta, tb, y, None, state, False)
        scale = ATOL + RTOL * jnp.maximum(jnp.abs(y), jnp.abs(y1))
        total += float(optx.rms_norm(err / scale)) * (tb - ta)
        y = y1
    sol = ndes.diffeqsolve(
        term,
        solver,
        0.0,
        4.0,
        1.0,
        y0,
        stepsize_controller=PID,
        regularizers=(ndes.ErrorEstimate(1.0),),
    )
    assert int(sol.stats["num_rejected_steps"]) > 0  # rejected attempts must not count
    np.testing.assert_allclose(float(sol.penalty_terms["ErrorEstimate"]), total, rtol=1e-9)


@pytest.mark.parametrize(
    "solver", [diffrax.Tsit5(), diffrax.Dopri5(), diffrax.Dopri8()], ids=lambda s: type(s).__name__
)
def test_stiffness_recovers_dominant_eigenvalue(solver):
    lam = 200.0
    A = jnp.diag(jnp.array([-1.0, -lam]))
    h = 0.005  # |h lam| = 1: stable for all three methods
    sol = ndes.diffeqsolve(
        linear_term(A),
        solver,
        0.0,
        0.05,
        h,
        jnp.array([1.0, 1.0]),
        regularizers=(ndes.StiffnessEstimate(1.0, aggregate="mean"),),
    )
    # Per-step value is lambda_hat * |h|.
    est = float(sol.penalty_terms["StiffnessEstimate"]) / h
    assert abs(est - lam) / lam < 0.10, est


def test_stiffness_aggregates():
    A = jnp.diag(jnp.array([-1.0, -30.0]))
    kw = dict(stepsize_controller=PID)
    vals = {}
    for agg in ("max", "sum", "mean"):
        sol = ndes.diffeqsolve(
            linear_term(A),
            diffrax.Tsit5(),
            0.0,
            2.0,
            None,
            jnp.ones(2),
            regularizers=(ndes.StiffnessEstimate(1.0, aggregate=agg),),
            **kw,
        )
        vals[agg] = float(sol.penalty)
        n = int(sol.stats["num_accepted_steps"])
    np.testing.assert_allclose(vals["mean"] * n, vals["sum"], rtol=1e-12)
    assert vals["mean"] <= vals["max"] <= vals["sum"]


def _penalty_fn(field_like, solver, ctrl, regs, dt0=0.1):
    def f(flat_params, y0):
        field = field_like(flat_params)
        sol = ndes.diffeqsolve(
            diffrax.ODETerm(field),
            solver,
            0.0,
            1.0,
            dt0,
            y0,
            stepsize_controller=ctrl,
            regularizers=regs,
        )
        return sol.penalty

    return f


@pytest.mark.parametrize(
    "regs",
    [
        # rtol=0: the (gradient-stopped) error scale is a true constant, so FD must agree.
        (ndes.ErrorEstimate(1.0, rtol=0.0, atol=1e-3),),
        (ndes.StiffnessEstimate(1.0, aggregate="sum"),),
        (
            ndes.ErrorEstimate(0.3, rtol=1e-3, atol=1e-3, differentiate_scale=True),
            ndes.StiffnessEstimate(0.7, aggregate="mean"),
        ),
    ],
    ids=["error", "stiffness", "both"],
)
def test_fd_gradient_constant_steps(getkey, regs):
    flat, build = flat_field(getkey(), scale=5.0)
    y0 = jnp.array([0.5, -0.3])
    f = _penalty_fn(build, diffrax.Tsit5(), diffrax.ConstantStepSize(), regs, dt0=0.5)
    g_params, g_y0 = jax.grad(f, argnums=(0, 1))(flat, y0)
    idx = np.arange(0, flat.size, max(1, flat.size // 12))  # a spread of parameters
    fd_p = central_fd(lambda p: f(flat.at[idx].set(p), y0), flat[idx], eps=1e-5)
    np.testing.assert_allclose(np.asarray(g_params)[idx], fd_p, rtol=1e-4, atol=1e-8)
    fd_y = central_fd(lambda y: f(flat, y), y0, eps=1e-5)
    np.testing.assert_allclose(np.asarray(g_y0), fd_y, rtol=1e-4, atol=1e-8)


def test_gradient_with_pid_is_gradient_with_step_sizes_frozen(getkey):
    """Under PIDController the gradient treats the accepted steps as constants: it equals the
    gradient of the same solve on the frozen step sequence (StepTo), which in turn matches
    central finite differences."""
    flat, build = flat_field(getkey(), scale=5.0)
    y0 = jnp.array([0.5, -0.3])
    regs = (
        ndes.ErrorEstimate(1.0, differentiate_scale=True),
        ndes.StiffnessEstimate(1.0, aggregate="sum"),
    )
    ctrl = diffrax.PIDController(rtol=1e-2, atol=1e-3)
    ts = _accepted_times(diffrax.ODETerm(build(flat)), diffrax.Tsit5(), y0, 1.0, None, ctrl)
    frozen_regs = (
        ndes.ErrorEstimate(1.0, rtol=1e-2, atol=1e-3, differentiate_scale=True),
        ndes.StiffnessEstimate(1.0, aggregate="sum"),
    )
    f_pid = _penalty_fn(build, diffrax.Tsit5(), ctrl, regs, dt0=None)
    f_frozen = _penalty_fn(
        build, diffrax.Tsit5(), diffrax.StepTo(ts=jnp.asarray(ts)), frozen_regs, dt0=None
    )
    np.testing.assert_allclose(float(f_pid(flat, y0)), float(f_frozen(flat, y0)), rtol=1e-12)
    g_pid = jax.grad(f_pid)(flat, y0)
    g_frozen = jax.grad(f_frozen)(flat, y0)
    np.testing.assert_allclose(g_pid, g_frozen, rtol=1e-9, atol=1e-12)
    idx = np.arange(0, flat.size, max(1, flat.size // 8))
    fd = central_fd(lambda p: f_frozen(flat.at[idx].set(p), y0), flat[idx], eps=1e-5)
    np.testing.assert_allclose(np.asarray(g_frozen)[idx], fd, rtol=1e-3, atol=1e-6)


def test_vmap_grad_matches_per_sample(getkey):
    flat, build = flat_field(getkey(), scale=5.0)
    y0s = jnp.array([[0.5, -0.3], [2.0, 1.0], [-1.0, 0.1]])
    f = _penalty_fn(build, diffrax.Tsit5(), PID, (ndes.ErrorEstimate(1.0),), dt0=None)
    batched = jax.vmap(jax.grad(f), in_axes=(None, 0))(flat, y0s)
    for i in range(3):
        # Batched kernels round differently, which can nudge adaptive step sizes.
        np.testing.assert_allclose(batched[i], jax.grad(f)(flat, y0s[i]), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_batch_mean_penalty_gradient_has_no_nan(getkey, dtype):
    """Trajectories with very different step counts: finished ones take masked zero-length
    steps under vmap, whose zero error must not turn the gradient into NaN."""
    field = MLPField(2, 16, getkey(), dtype=dtype, scale=3.0)
    y0s = jnp.array([[0.01, 0.0], [3.0, -3.0], [0.5, 0.5], [10.0, 4.0]], dtype=dtype)

    def loss(f):
        def one(y0):
            sol = ndes.diffeqsolve(
                diffrax.ODETerm(f),
                diffrax.Tsit5(),
                0.0,
                3.0,
                None,
                y0,
                stepsize_controller=diffrax.PIDController(rtol=1e-4, atol=1e-6),
                regularizers=(ndes.ErrorEstimate(1.0), ndes.StiffnessEstimate(1.0)),
            )
            return sol.penalty, sol.stats["num_accepted_steps"]

        pens, steps = jax.vmap(one)(y0s)
        return jnp.mean(pens), steps

    (val, steps), grads = eqx.filter_value_and_grad(loss, has_aux=True)(field)
    assert len(set(np.asarray(steps).tolist())) > 1, "want different step counts"
    assert np.isfinite(float(val))
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_scale_gradient_choice():
    """Default: the error scale is a constant, so scaling the state by c scales the penalty's
    sensitivity by exactly E (degree-1 homogeneity, no reward for inflating the state).
    differentiate_scale=True (Pal's reference code) makes the rtol-dominated penalty nearly
    scale-invariant, i.e. it gives a much weaker push against large states."""
    A = jnp.array([[-0.5, 2.0], [-2.0, -0.5]])
    y0 = jnp.array([1.0, 0.5])

    def pen(c, differentiate_scale):
        return ndes.diffeqsolve(
            linear_term(A),
            diffrax.Tsit5(),
            0.0,
            2.0,
            0.2,
            c * y0,
            regularizers=(
                ndes.ErrorEstimate(
                    1.0, rtol=1e-3, atol=1e-12, differentiate_scale=differentiate_scale
                ),
            ),
        ).penalty

    p = float(pen(1.0, False))
    d_const = float(jax.grad(pen)(1.0, False))
    d_diff = float(jax.grad(pen)(1.0, True))
    np.testing.assert_allclose(d_const, p, rtol=1e-8)
    assert abs(d_diff) < 1e-3 * abs(d_const)


@pytest.mark.parametrize(
    "solver", [diffrax.Heun(), diffrax.ShARK(), diffrax.SPaRK()], ids=["Heun", "ShARK", "SPaRK"]
)
def test_error_estimate_on_adaptive_sde(getkey, solver):
    # ShARK and SPaRK are not diffrax.AbstractAdaptiveSolver but return an embedded error
    # estimate that the controller (and so ErrorEstimate) uses.
    key = getkey()
    field = MLPField(2, 8, getkey())
    srk = isinstance(solver, diffrax.AbstractSRK)
    levy = diffrax.SpaceTimeLevyArea if srk else diffrax.BrownianIncrement

    def pen(f):
        bm = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1e-3, shape=(2,), key=key, levy_area=levy)
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(f), diffrax.ControlTerm(lambda t, y, a: 0.2 * jnp.eye(2), bm)
        )
        sol = ndes.diffeqsolve(
            terms,
            solver,
            0.0,
            1.0,
            0.05,
            jnp.ones(2),
            stepsize_controller=diffrax.PIDController(rtol=1e-2, atol=1e-2),
            regularizers=(ndes.ErrorEstimate(1.0),),
        )
        return sol.penalty

    val, grads = eqx.filter_value_and_grad(pen)(field)
    assert float(val) > 0
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_stiffness_default_is_total_stiffness_and_grows_with_stiffness():
    """y' = -lam (y - cos t): Shampine's estimate is exactly lam on every step, so the
    default penalty (the paper's total stiffness, sum_j lam_j |h_j|) is lam * T, ten times
    larger for every tenfold lam; the per-step maximum saturates near the stability bound."""
    T = 4.0

    def pens(lam):
        def field(t, y, args):
            return -lam * (y - jnp.cos(t))

        out = {}
        for name, reg in (
            ("default", ndes.StiffnessEstimate(1.0)),
            ("max", ndes.StiffnessEstimate(1.0, aggregate="max")),
        ):
            sol = ndes.diffeqsolve(
                diffrax.ODETerm(field),
                diffrax.Tsit5(),
                0.0,
                T,
                None,
                jnp.array([1.0]),
                stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6),
                regularizers=(reg,),
                max_steps=16384,
            )
            out[name] = float(sol.penalty)
        return out

    vals = {lam: pens(lam) for lam in (5.0, 50.0, 500.0)}
    for lam, v in vals.items():
        np.testing.assert_allclose(v["default"], lam * T, rtol=1e-6)
    assert vals[500.0]["max"] < 3 * vals[5.0]["max"]  # the maximum barely moves


def test_error_estimate_on_fixed_steps_needs_explicit_tolerances():
    term = diffrax.ODETerm(lambda t, y, args: -y)
    kw = dict(stepsize_controller=diffrax.ConstantStepSize(), saveat=diffrax.SaveAt(t1=True))
    with pytest.raises(ValueError, match=r"controller is ConstantStepSize.*cut the NFE, solve"):
        ndes.diffeqsolve(
            term, diffrax.Bosh3(), 0.0, 1.0, 0.1, jnp.ones(2),
            regularizers=[ndes.ErrorEstimate(1.0)], **kw,
        )  # fmt: skip
    sol = ndes.diffeqsolve(
        term, diffrax.Bosh3(), 0.0, 1.0, 0.1, jnp.ones(2),
        regularizers=[ndes.ErrorEstimate(1.0, rtol=1e-3, atol=1e-6)], **kw,
    )  # fmt: skip
    assert float(sol.penalty_terms["ErrorEstimate"]) > 0 and sol.stats["num_steps"] == 10
