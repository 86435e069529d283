"""KineticEnergy, JacobianFrobenius, TaylorDerivative, RandomEndTime: closed forms, step-size
control untouched by the extra state, gradients, composition and error paths."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.linalg import expm

import ndes
from ndes.regularizers._kinetic import hutchinson_probe
from ndes.regularizers._taylor import time_derivatives

from .helpers import MLPField, central_fd, flat_field, linear_term

A = jnp.array([[-0.5, 2.0], [-2.0, -0.5]])
Y0 = jnp.array([1.0, 0.5])
T1 = 2.0
PID = diffrax.PIDController(rtol=1e-8, atol=1e-10)


def _solve(regs, term=None, y0=Y0, ctrl=PID, t1=T1, dt0=0.1, saveat=None, solver=None):
    return ndes.diffeqsolve(
        linear_term(A) if term is None else term,
        diffrax.Tsit5() if solver is None else solver,
        0.0,
        t1,
        dt0,
        y0,
        stepsize_controller=ctrl,
        saveat=diffrax.SaveAt(t1=True) if saveat is None else saveat,
        regularizers=regs,
        max_steps=4096,
    )


def _quadrature(integrand, t1=T1, n=4001):
    """Simpson's rule of integrand(y(t)) on the exact solution y(t) = expm(A t) y0."""
    ts = np.linspace(0.0, t1, n)
    vals = np.array([float(integrand(expm(A * t) @ Y0)) for t in ts])
    h = ts[1] - ts[0]
    return h / 3 * (vals[0] + vals[-1] + 4 * vals[1:-1:2].sum() + 2 * vals[2:-1:2].sum())


def test_kinetic_energy_closed_form():
    sol = _solve((ndes.KineticEnergy(1.0),))
    want = _quadrature(lambda y: jnp.sum((A @ y) ** 2))
    np.testing.assert_allclose(float(sol.penalty_terms["KineticEnergy"]), want, rtol=1e-7)


def test_jacobian_frobenius_exact_for_a_fixed_probe_and_unbiased():
    key = jax.random.key(0)
    sol = _solve((ndes.JacobianFrobenius(1.0, key=key),))
    eps = hutchinson_probe(key, Y0, "gaussian")
    # The Jacobian is A everywhere: the integrand is ||eps^T A||^2, constant in time.
    want = float(jnp.sum((eps @ A) ** 2)) * T1
    np.testing.assert_allclose(float(sol.penalty_terms["JacobianFrobenius"]), want, rtol=1e-9)

    exact = float(jnp.sum(A**2)) * T1

    for probe in ("gaussian", "rademacher"):

        def one(k, probe=probe):
            reg = ndes.JacobianFrobenius(1.0, key=k, probe=probe)
            return _solve((reg,), ctrl=diffrax.ConstantStepSize(), dt0=0.5).penalty

        vals = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(1), 4000)))
        se = vals.std() / np.sqrt(len(vals))
        # Unbiased: the mean is within 4 standard errors of ||A||_F^2 (t1 - t0).
        assert abs(vals.mean() - exact) <= max(4 * se, 1e-12 * exact), (probe, vals.mean(), se)


@pytest.mark.parametrize("order", [2, 3])
def test_taylor_derivative_closed_form(order):
    sol = _solve((ndes.TaylorDerivative(1.0, order=order),))
    Ak = np.linalg.matrix_power(np.asarray(A), order)
    want = _quadrature(lambda y: jnp.sum((Ak @ y) ** 2))
    np.testing.assert_allclose(float(sol.penalty_terms["TaylorDerivative"]), want, rtol=1e-7)


def test_time_derivatives_include_explicit_time_dependence():
    # y' = t y: y'' = (1 + t^2) y, y''' = (3 t + t^3) y.
    def field(t, y, args):
        return t * y

    t, y = 0.7, jnp.array([1.3, -0.4])
    d2, d3 = time_derivatives(field, t, y, None, field(t, y, None), 3)
    np.testing.assert_allclose(d2, (1 + t**2) * y, rtol=1e-12)
    np.testing.assert_allclose(d3, (3 * t + t**3) * y, rtol=1e-12)


def test_time_derivatives_of_a_nonlinear_ode():
    # y' = y^2: y'' = 2 y^3, y''' = 6 y^4 (each y^(k) = k! y^(k+1)).
    def field(t, y, args):
        return y**2

    y = jnp.array([0.5, -1.3, 2.0])
    d2, d3 = time_derivatives(field, 0.0, y, None, field(0.0, y, None), 3)
    np.testing.assert_allclose(d2, 2 * y**3, rtol=1e-14)
    np.testing.assert_allclose(d3, 6 * y**4, rtol=1e-14)
    (only2,) = time_derivatives(field, 0.0, y, None, field(0.0, y, None), 2)
    np.testing.assert_allclose(only2, 2 * y**3, rtol=1e-14)
    with pytest.raises(ValueError, match="order=4"):
        time_derivatives(field, 0.0, y, None, field(0.0, y, None), 4)


@pytest.mark.parametrize("order", [2, 3])
def test_taylor_derivative_closed_form_nonlinear(order):
    """y' = y^2 from y0 = 1/2 on [0, 1] (y = y0 / (1 - y0 t) reaches 1): with dt = dy / y^2,
    int (2 y^3)^2 dt = 4/5 (y1^5 - y0^5) and int (6 y^4)^2 dt = 36/7 (y1^7 - y0^7)."""
    sol = _solve(
        (ndes.TaylorDerivative(1.0, order=order),),
        term=diffrax.ODETerm(lambda t, y, args: y**2),
        y0=jnp.array(0.5),
        t1=1.0,
    )
    np.testing.assert_allclose(float(sol.ys[-1]), 1.0, rtol=1e-7)
    want = 4 / 5 * (1 - 0.5**5) if order == 2 else 36 / 7 * (1 - 0.5**7)
    # The penalty state is outside step-size control: its quadrature error (~2e-7 here) is
    # not held to rtol.
    np.testing.assert_allclose(float(sol.penalty_terms["TaylorDerivative"]), want, rtol=1e-6)


def _jet_time_derivatives(field, t, y, fy, order):
    """Reference: one `jax.experimental.jet` per order (the former implementation)."""
    from jax.experimental import jet

    derivs = [fy]
    for k in range(1, order):
        t_series = [jnp.ones(())] + [jnp.zeros(())] * (k - 1)
        _, out = jet.jet(lambda tt, yy: field(tt, yy, None), (t, y), (t_series, derivs[:k]))
        derivs.append(out[-1])
    return derivs[1:]


def test_time_derivatives_equal_jet_on_a_time_dependent_mlp(getkey):
    k1, k2, k3 = jax.random.split(getkey(), 3)
    w1 = jax.random.normal(k1, (8, 3))
    b1 = jax.random.normal(k2, (8,))
    w2 = jax.random.normal(k3, (3, 8))

    def field(t, y, args):
        return w2 @ jnp.tanh(w1 @ y + jnp.sin(t) * b1)

    t, y = jnp.asarray(0.3), jnp.array([0.2, -0.5, 0.9])
    fy = field(t, y, None)
    ours = time_derivatives(field, t, y, None, fy, 3)
    ref = _jet_time_derivatives(field, t, y, fy, 3)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "reg",
    [
        ndes.KineticEnergy(1.0),
        ndes.JacobianFrobenius(1.0, key=jax.random.key(0)),
        ndes.TaylorDerivative(1.0, order=2),
    ],
    ids=["kinetic", "jacobian", "taylor"],
)
def test_extra_state_does_not_touch_step_size_control(getkey, reg):
    """The penalty state is left out of the controller's norm: same steps, same ys, even when
    the penalty integrand is huge and fast-changing."""
    field = MLPField(2, 16, getkey(), scale=4.0)
    term = diffrax.ODETerm(field)
    ctrl = diffrax.PIDController(rtol=1e-4, atol=1e-6)
    saveat = diffrax.SaveAt(ts=jnp.linspace(0.0, 1.0, 7), dense=True)
    base = _solve((), term=term, ctrl=ctrl, t1=1.0, saveat=saveat)
    sol = _solve((reg,), term=term, ctrl=ctrl, t1=1.0, saveat=saveat)
    for k in ("num_steps", "num_accepted_steps", "num_rejected_steps", "num_fevals"):
        assert int(sol.stats[k]) == int(base.stats[k]), k
    np.testing.assert_allclose(np.asarray(sol.ys), np.asarray(base.ys), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(sol.evaluate(0.33), base.evaluate(0.33), rtol=1e-13, atol=1e-14)
    assert float(sol.penalty) > 0
    # The clipped PID controller is projected too.
    clipped = diffrax.ClipStepSizeController(ctrl, step_ts=jnp.linspace(0.0, 1.0, 4))
    b2 = _solve((), term=term, ctrl=clipped, t1=1.0, saveat=saveat)
    s2 = _solve((reg,), term=term, ctrl=clipped, t1=1.0, saveat=saveat)
    assert int(s2.stats["num_steps"]) == int(b2.stats["num_steps"])


@pytest.mark.parametrize(
    "reg",
    [
        ndes.KineticEnergy(1.0),
        ndes.JacobianFrobenius(1.0, key=jax.random.key(3), probe="rademacher"),
        ndes.TaylorDerivative(1.0, order=2),
        ndes.TaylorDerivative(1.0, order=3),
    ],
    ids=["kinetic", "jacobian", "taylor2", "taylor3"],
)
def test_fd_gradient(getkey, reg):
    flat, build = flat_field(getkey(), scale=2.0)
    y0 = jnp.array([0.5, -0.3])

    def f(p, y):
        sol = _solve(
            (reg,),
            term=diffrax.ODETerm(build(p)),
            y0=y,
            ctrl=diffrax.ConstantStepSize(),
            t1=1.0,
            dt0=0.25,
        )
        return sol.penalty + jnp.sum(sol.ys**2)

    g_p, g_y = jax.grad(f, argnums=(0, 1))(flat, y0)
    idx = np.arange(0, flat.size, max(1, flat.size // 10))
    fd_p = central_fd(lambda q: f(flat.at[idx].set(q), y0), flat[idx], eps=1e-5)
    np.testing.assert_allclose(np.asarray(g_p)[idx], fd_p, rtol=1e-5, atol=1e-9)
    fd_y = central_fd(lambda y: f(flat, y), y0, eps=1e-5)
    np.testing.assert_allclose(np.asarray(g_y), fd_y, rtol=1e-5, atol=1e-9)


def test_random_end_time_gradient_and_distribution(getkey):
    flat, build = flat_field(getkey(), scale=2.0)
    y0 = jnp.array([0.5, -0.3])
    reg = ndes.RandomEndTime(0.3, key=jax.random.key(4))

    def f(p):
        sol = _solve(
            (reg,),
            term=diffrax.ODETerm(build(p)),
            y0=y0,
            ctrl=diffrax.PIDController(rtol=1e-10, atol=1e-12),
            t1=1.0,
        )
        return jnp.sum(sol.ys**2)

    g = np.asarray(jax.grad(f)(flat))
    idx = np.arange(0, flat.size, max(1, flat.size // 8))
    fd = central_fd(lambda q: f(flat.at[idx].set(q)), flat[idx], eps=1e-5)
    np.testing.assert_allclose(g[idx], fd, rtol=1e-4, atol=1e-8)

    def end(k):
        return _solve((ndes.RandomEndTime(0.3, key=k),), t1=1.0).t1

    t1s = np.asarray(jax.jit(jax.vmap(end))(jax.random.split(jax.random.key(5), 2000)))
    assert t1s.min() >= 0.7 and t1s.max() <= 1.3
    assert abs(t1s.mean() - 1.0) < 0.02 and t1s.std() > 0.15  # U(0.7, 1.3): sd 0.173
    # ys is the state at the sampled end time.
    sol = _solve((ndes.RandomEndTime(0.3, key=jax.random.key(6)),), t1=1.0)
    want = expm(A * float(sol.t1)) @ Y0
    np.testing.assert_allclose(np.asarray(sol.ys[-1]), np.asarray(want), rtol=1e-6)
    assert sol.penalty_terms == {} and float(sol.penalty) == 0.0


def test_composition_and_weight_zero_neutrality(getkey):
    flat, build = flat_field(getkey(), scale=2.0)
    key = jax.random.key(8)

    def regs(w):
        return (
            ndes.ErrorEstimate(w),
            ndes.StiffnessEstimate(w),
            ndes.LocalErrorEstimate(w, key=key),
            ndes.LocalStiffnessEstimate(w, key=key),
            ndes.KineticEnergy(w),
            ndes.JacobianFrobenius(w, key=key),
            ndes.TaylorDerivative(w, order=2),
        )

    ctrl = diffrax.PIDController(rtol=1e-4, atol=1e-6)

    def loss(p, rs):
        sol = _solve(rs, term=diffrax.ODETerm(build(p)), ctrl=ctrl, t1=1.0)
        return jnp.sum(sol.ys**2) + sol.penalty, sol

    # Weights as arrays: the weight-0.5 and weight-0 solves below share one compilation.
    value_and_grad = eqx.filter_jit(jax.value_and_grad(loss, has_aux=True))
    (_, sol), _ = value_and_grad(flat, regs(jnp.asarray(0.5)))
    names = [
        "ErrorEstimate",
        "StiffnessEstimate",
        "LocalErrorEstimate",
        "LocalStiffnessEstimate",
        "KineticEnergy",
        "JacobianFrobenius",
        "TaylorDerivative",
    ]
    assert sorted(sol.penalty_terms) == sorted(names)
    # Each term equals its value in a solve of its own.
    for name, r in zip(names, regs(0.5), strict=True):
        alone = _solve((r,), term=diffrax.ODETerm(build(flat)), ctrl=ctrl, t1=1.0)
        np.testing.assert_allclose(
            float(sol.penalty_terms[name]), float(alone.penalty_terms[name]), rtol=1e-10
        )
    total = sum(0.5 * float(v) for v in sol.penalty_terms.values())
    np.testing.assert_allclose(float(sol.penalty), total, rtol=1e-12)
    # Weight 0: the loss and its gradient are those of the unregularized solve.
    (l0, _), g0 = value_and_grad(flat, regs(jnp.asarray(0.0)))
    (lb, _), gb = value_and_grad(flat, ())
    np.testing.assert_allclose(float(l0), float(lb), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(g0), np.asarray(gb), rtol=1e-10, atol=1e-14)


def test_joint_batch_mean_equals_per_trajectory_mean(getkey):
    field = MLPField(2, 8, getkey())
    y0s = jnp.array([[0.5, -0.3], [2.0, 1.0], [-1.0, 0.1]])
    term = diffrax.ODETerm(field)
    joint_field = diffrax.ODETerm(
        lambda t, y, args: jax.vmap(field, in_axes=(None, 0, None))(t, y, args)
    )
    for make in (
        lambda **kw: ndes.KineticEnergy(1.0, **kw),
        lambda **kw: ndes.TaylorDerivative(1.0, order=2, **kw),
    ):
        per = [
            float(
                _solve(
                    (make(),), term=term, y0=y, ctrl=diffrax.ConstantStepSize(), t1=1.0, dt0=0.1
                ).penalty
            )
            for y in y0s
        ]
        joint = _solve(
            (make(batch_axis=0),),
            term=joint_field,
            y0=y0s,
            ctrl=diffrax.ConstantStepSize(),
            t1=1.0,
            dt0=0.1,
        )
        np.testing.assert_allclose(float(joint.penalty), np.mean(per), rtol=1e-10)


def test_vmap_grad(getkey):
    flat, build = flat_field(getkey(), scale=2.0)
    y0s = jnp.array([[0.5, -0.3], [2.0, 1.0]])
    keys = jax.random.split(jax.random.key(9), 2)

    def f(p, y, k):
        regs = (
            ndes.KineticEnergy(0.1),
            ndes.JacobianFrobenius(0.1, key=k),
            ndes.TaylorDerivative(0.1),
            ndes.RandomEndTime(0.1, key=k),
        )
        sol = _solve(
            regs,
            term=diffrax.ODETerm(build(p)),
            y0=y,
            ctrl=diffrax.PIDController(rtol=1e-4, atol=1e-6),
            t1=1.0,
        )
        return jnp.sum(sol.ys**2) + sol.penalty

    gs = jax.jit(jax.vmap(jax.grad(f), in_axes=(None, 0, 0)))(flat, y0s, keys)
    grad_one = jax.jit(jax.grad(f))
    for i in range(2):
        np.testing.assert_allclose(gs[i], grad_one(flat, y0s[i], keys[i]), rtol=1e-6, atol=1e-10)


def test_errors():
    k = jax.random.key(0)
    with pytest.raises(ValueError, match=r"order=4\) must be 2 or 3"):
        ndes.TaylorDerivative(1.0, order=4)
    with pytest.raises(ValueError, match="needs key="):
        ndes.JacobianFrobenius(1.0)
    with pytest.raises(ValueError, match="probe='sphere'"):
        ndes.JacobianFrobenius(1.0, key=k, probe="sphere")
    with pytest.raises(ValueError, match="needs key="):
        ndes.RandomEndTime(0.1)
    with pytest.raises(ValueError, match="must be >= 0"):
        ndes.RandomEndTime(-0.1, key=k)
    with pytest.raises(ValueError, match="smaller than"):
        _solve((ndes.RandomEndTime(2.0, key=k),), t1=2.0)
    with pytest.raises(ValueError, match="more than one RandomEndTime"):
        _solve((ndes.RandomEndTime(0.1, key=k), ndes.RandomEndTime(0.2, key=k)))
    with pytest.raises(ValueError, match="StepTo"):
        _solve(
            (ndes.RandomEndTime(0.1, key=k),),
            ctrl=diffrax.StepTo(ts=jnp.linspace(0, T1, 5)),
            dt0=None,
        )
    with pytest.raises(ValueError, match="beyond t1 - b"):
        _solve((ndes.RandomEndTime(0.5, key=k),), saveat=diffrax.SaveAt(ts=jnp.linspace(0, T1, 5)))
    with pytest.raises(ValueError, match="batch_axis=-1"):
        ndes.KineticEnergy(1.0, batch_axis=-1)
    bm = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1e-3, shape=(2,), key=k)
    sde = diffrax.MultiTerm(linear_term(A), diffrax.ControlTerm(lambda t, y, a: jnp.eye(2), bm))
    with pytest.raises(ValueError, match="need terms=diffrax.ODETerm"):
        _solve((ndes.KineticEnergy(1.0),), term=sde, t1=1.0, solver=diffrax.Heun())
    with pytest.raises(ValueError, match="not for"):
        _solve((ndes.KineticEnergy(1.0),), ctrl=_OtherAdaptive(PID))
    with pytest.raises(ValueError, match="event="):
        ndes.diffeqsolve(
            linear_term(A),
            diffrax.Tsit5(),
            0.0,
            1.0,
            0.1,
            Y0,
            event=diffrax.Event(lambda t, y, args, **kw: y[0] < -10.0),
            regularizers=(ndes.KineticEnergy(1.0),),
        )


class _OtherAdaptive(diffrax.AbstractAdaptiveStepSizeController):
    """Stands for a user's own adaptive controller, whose norm ndes cannot reach."""

    inner: diffrax.PIDController
    rtol = 1e-3
    atol = 1e-3
    norm = staticmethod(jnp.linalg.norm)

    def wrap(self, direction):
        return _OtherAdaptive(self.inner.wrap(direction))

    def wrap_solver(self, solver):
        return self.inner.wrap_solver(solver)

    def init(self, *args):
        return self.inner.init(*args)

    def adapt_step_size(self, *args):
        return self.inner.adapt_step_size(*args)


def _regularizer_cost(*flags):
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "benchmarks", "regularizer_cost.py")
    return subprocess.run(
        [sys.executable, script, "--quick", *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )


@pytest.mark.slow  # one compile per regularizer row in a subprocess: ~1-2 CPU minutes
def test_regularizer_cost_benchmark_quick_runs():
    """The benchmark's quick mode prints one row per regularizer (timings are not checked)."""
    r = _regularizer_cost()
    assert r.returncode == 0, r.stderr
    for name in (
        "none",
        "ErrorEstimate",
        "LocalErrorEstimate biased",
        "JacobianFrobenius",
        "TaylorDerivative K=3",
        "RandomEndTime",
    ):
        assert name in r.stdout
    assert "nan" not in r.stdout.lower()


def test_regularizer_cost_benchmark_only_selects_rows():
    """`--only Kinetic,RandomEnd` runs the baseline and those two rows alone (the script runs
    in the fast suite through this test, on two of its cheapest rows to compile; every row,
    Taylor's included, in the slow one above)."""
    only = _regularizer_cost("--only", "Kinetic,RandomEnd")
    assert only.returncode == 0, only.stderr
    assert "nan" not in only.stdout.lower()
    timed = [ln.split()[0] for ln in only.stdout.splitlines()[4:] if ln.strip()]
    assert timed == ["none", "KineticEnergy", "RandomEndTime"], only.stdout
