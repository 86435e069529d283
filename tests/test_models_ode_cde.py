"""NeuralODE / NeuralCDE: batch modes, per-trajectory regularizers, CDE semantics, errors."""

import os
import subprocess
import sys

import diffrax
import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg

from ndes._solve import diffeqsolve
from ndes.models._cde import NeuralCDE
from ndes.models._mlp import MLPVectorField
from ndes.models._ode import NeuralODE
from ndes.regularizers._error import ErrorEstimate
from ndes.regularizers._stiffness import StiffnessEstimate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONST = dict(stepsize_controller=diffrax.ConstantStepSize(), dt0=0.25)


def _regs():
    return (ErrorEstimate(1.0, rtol=1e-3, atol=1e-6), StiffnessEstimate(0.5))


def _ode(key, mode, **kw):
    kw = {**CONST, **kw}
    return NeuralODE.mlp(2, 16, 1, key=key, batch_mode=mode, **kw)


# ----------------------------------------------------------------------------- NeuralODE


@pytest.mark.parametrize("mode", ["joint", "vmap"])
def test_ode_shapes_and_vmap(getkey, mode):
    model = _ode(getkey(), mode)
    ts = jnp.linspace(0.0, 1.0, 4)
    y0 = jr.normal(getkey(), (5, 2))
    out = model(ts, y0, regularizers=_regs())
    assert out.ys.shape == (5, 4, 2)
    assert out.penalty.shape == ()
    np.testing.assert_allclose(out.ys[:, 0], y0, rtol=0, atol=0)
    assert jnp.ndim(out.stats["num_fevals"]) == (0 if mode == "joint" else 1)
    single = model(ts, y0[0])
    assert single.ys.shape == (4, 2)
    # The model itself composes with jax.vmap over single samples.
    ys = jax.vmap(lambda y: model(ts, y).ys)(y0)
    np.testing.assert_allclose(ys, out.ys, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["joint", "vmap"])
def test_ode_two_times_match_a_finer_ts(getkey, mode):
    # With two times NeuralODE saves t0 and t1 directly (a smaller program) instead of
    # interpolating at `ts`; the step sequence and the end state are the same.
    model = NeuralODE.mlp(3, 16, 2, key=getkey(), batch_mode=mode)
    y0 = jr.normal(getkey(), (4, 3))
    coarse = model(jnp.array([0.0, 1.0]), y0)
    fine = model(jnp.linspace(0.0, 1.0, 5), y0)
    assert coarse.ys.shape == (4, 2, 3)
    np.testing.assert_allclose(coarse.ys[:, 0], y0)
    np.testing.assert_allclose(coarse.ys[:, 1], fine.ys[:, -1], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(coarse.stats["num_fevals"], fine.stats["num_fevals"])


def test_ode_joint_equals_vmap_with_constant_steps(getkey):
    key = getkey()
    ts = jnp.linspace(0.0, 1.0, 5)
    y0 = 2.0 * jr.normal(getkey(), (6, 2))
    joint = _ode(key, "joint")(ts, y0, regularizers=_regs())
    vmap = _ode(key, "vmap")(ts, y0, regularizers=_regs())
    np.testing.assert_allclose(joint.ys, vmap.ys, rtol=1e-12, atol=1e-12)
    for name in ("ErrorEstimate", "StiffnessEstimate"):
        assert vmap.penalty_terms[name] > 0
        np.testing.assert_allclose(joint.penalty_terms[name], vmap.penalty_terms[name], rtol=1e-10)
    np.testing.assert_allclose(joint.penalty, vmap.penalty, rtol=1e-10)
    # Without batch_axis the joint state would be one trajectory: a different number.
    field = _ode(key, "joint").vector_field
    whole = diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: jax.vmap(field, in_axes=(None, 0, None))(t, y, a)),
        diffrax.Tsit5(),
        0.0,
        1.0,
        0.25,
        y0,
        regularizers=StiffnessEstimate(1.0),
    )
    assert abs(float(whole.penalty) - float(vmap.penalty_terms["StiffnessEstimate"])) > 1e-3


def test_ode_adaptive_joint_shares_steps(getkey):
    key = getkey()
    ts = jnp.linspace(0.0, 1.0, 3)
    y0 = jnp.array([[0.1, 0.0], [5.0, -5.0]])
    kw = dict(stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-8), dt0=None)
    joint = NeuralODE.mlp(2, 16, 1, key=key, batch_mode="joint", **kw)(ts, y0)
    vmap = NeuralODE.mlp(2, 16, 1, key=key, batch_mode="vmap", **kw)(ts, y0)
    assert joint.stats["num_steps"].shape == ()
    assert vmap.stats["num_steps"].shape == (2,)
    assert int(joint.stats["num_steps"]) >= int(jnp.max(vmap.stats["num_steps"]))
    np.testing.assert_allclose(joint.ys, vmap.ys, rtol=1e-4, atol=1e-5)


def test_regularizer_batch_axis_direct(getkey):
    """ErrorEstimate(batch_axis=0) on a joint state = batch mean of per-sample solves."""
    A = jnp.array([[-1.0, 3.0], [-3.0, -1.0]])
    y0 = jr.normal(getkey(), (3, 2))
    solve = lambda y, reg: diffeqsolve(  # noqa: E731
        diffrax.ODETerm(lambda t, y, a: y @ A.T),
        diffrax.Tsit5(),
        0.0,
        1.0,
        0.2,
        y,
        regularizers=reg,
    )
    for agg, size in (("sum", None), ("mean", None), ("max", 3)):
        reg = ErrorEstimate(1.0, rtol=1e-3, atol=1e-6, aggregate=agg)
        per = jnp.mean(jax.vmap(lambda y, r=reg: solve(y, r).penalty)(y0))
        joint = solve(
            y0,
            ErrorEstimate(1.0, rtol=1e-3, atol=1e-6, aggregate=agg, batch_axis=0, batch_size=size),
        ).penalty
        np.testing.assert_allclose(joint, per, rtol=1e-10)
        assert per > 0
    with pytest.raises(ValueError, match="needs batch_size"):
        StiffnessEstimate(1.0, batch_axis=0, aggregate="max")
    with pytest.raises(ValueError, match="only meaningful with batch_axis"):
        ErrorEstimate(1.0, batch_size=3)
    with pytest.raises(ValueError, match="does not match"):
        solve(y0, StiffnessEstimate(1.0, batch_axis=0, batch_size=4))


@pytest.mark.parametrize("mode", ["vmap"])
def test_ode_gradients_finite(getkey, mode):
    model = _ode(
        getkey(), mode, stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6), dt0=None
    )
    ts = jnp.linspace(0.0, 1.0, 3)
    y0 = jr.normal(getkey(), (4, 2))

    @eqx.filter_grad
    def grad(m):
        out = m(ts, y0, regularizers=(ErrorEstimate(1.0), StiffnessEstimate(1.0)))
        return jnp.sum(out.ys**2) + out.penalty

    leaves = jax.tree_util.tree_leaves(eqx.filter(grad(model), eqx.is_inexact_array))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


@pytest.mark.parametrize("mode", ["joint", "vmap"])
def test_ode_finite_difference_gradient(getkey, mode):
    # Large steps of a fast field so that the error estimate is far above rounding.
    field = MLPVectorField(2, 4, 1, key=getkey(), scale=3.0)
    model = NeuralODE(
        field, batch_mode=mode, stepsize_controller=diffrax.ConstantStepSize(), dt0=0.5
    )
    ts = jnp.array([0.0, 1.0])
    y0 = jr.normal(getkey(), (3, 2))
    regs = (ErrorEstimate(1e-3, rtol=1e-6, atol=1e-9), StiffnessEstimate(0.1, aggregate="sum"))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    @jax.jit
    def loss(x):
        out = eqx.combine(unravel(x), static)(ts, y0, regularizers=regs)
        return jnp.sum(out.ys[:, -1] ** 2) + out.penalty

    assert (
        float(
            eqx.combine(unravel(flat), static)(ts, y0, regularizers=regs).penalty_terms[
                "ErrorEstimate"
            ]
        )
        > 1e-3
    )
    g = jax.grad(loss)(flat)
    v = jr.normal(getkey(), flat.shape)
    eps = 1e-6
    fd = (loss(flat + eps * v) - loss(flat - eps * v)) / (2 * eps)
    np.testing.assert_allclose(jnp.dot(g, v), fd, rtol=1e-5)


def test_ode_errors(getkey):
    model = _ode(getkey(), "joint")
    y0 = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match="`ts` must be strictly increasing"):
        model(jnp.array([0.0, 1.0, 0.5]), y0)
    with pytest.raises(Exception, match="`ts` must be strictly increasing"):
        jax.jit(lambda t: model(t, y0).ys)(jnp.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="`y0` must have shape"):
        model(jnp.linspace(0, 1, 3), jnp.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="`ts` must have shape"):
        model(jnp.zeros((2, 3)), y0)
    with pytest.raises(ValueError, match="batch_mode="):
        NeuralODE(model.vector_field, batch_mode="batched")
    with pytest.raises(ValueError, match="dt0=None needs an adaptive"):
        NeuralODE(model.vector_field, stepsize_controller=diffrax.ConstantStepSize())

    class NoAxis(eqx.Module):
        weight: float = 1.0

    with pytest.raises(ValueError, match="use batch_mode='vmap'"):
        model(jnp.linspace(0, 1, 3), y0, regularizers=(NoAxis(),))


# ----------------------------------------------------------------------------- NeuralCDE


def _cde(key, mode, channels=3, **kw):
    kw = {
        **dict(solver=diffrax.Midpoint(), stepsize_controller=diffrax.ConstantStepSize(), dt0=0.1),
        **kw,
    }
    return NeuralCDE(channels, 4, 2, 8, 1, key=key, batch_mode=mode, **kw)


@pytest.mark.parametrize(
    "mode,interp",
    [("joint", diffrax.CubicInterpolation), ("vmap", diffrax.LinearInterpolation)],
)
def test_cde_shapes_and_gradients(getkey, mode, interp):
    model = _cde(getkey(), mode, interpolation=interp, initial_depth=1)
    ts = jnp.linspace(0.0, 2.0, 7)
    xs = jr.normal(getkey(), (5, 7, 3))
    coeffs = model.coefficients(ts, xs)
    regs = (ErrorEstimate(1.0, rtol=1e-3, atol=1e-6),)

    @eqx.filter_value_and_grad(has_aux=True)
    def loss(m):
        o = m(ts, coeffs, regularizers=regs)
        return jnp.sum(o.ys**2) + o.penalty, o

    (_, out), grads = loss(model)
    assert out.ys.shape == (5, 2) and out.final_state.shape == (5, 4)
    assert float(out.penalty) > 0
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    # One series at a time (the model under jax.vmap) gives the batch's outputs.
    np.testing.assert_allclose(
        jax.vmap(lambda c: model(ts, c).ys)(coeffs), out.ys, rtol=1e-12, atol=1e-12
    )


def test_cde_joint_equals_vmap_constant_steps(getkey):
    key = getkey()
    ts = jnp.sort(jr.uniform(getkey(), (4, 9)), axis=1) + jnp.arange(9.0)
    xs = jr.normal(getkey(), (4, 9, 3))
    regs = (ErrorEstimate(1.0, rtol=1e-3, atol=1e-6), StiffnessEstimate(1.0))
    kw = dict(solver=diffrax.Tsit5())
    joint, vmap = _cde(key, "joint", **kw), _cde(key, "vmap", **kw)
    coeffs = joint.coefficients(ts, xs)
    t1 = ts[jnp.arange(4), jnp.array([8, 3, 5, 1])]
    a = joint(ts, coeffs, t1=t1, regularizers=regs)
    b = vmap(ts, coeffs, t1=t1, regularizers=regs)
    np.testing.assert_allclose(a.final_state, b.final_state, rtol=1e-12, atol=1e-12)
    for name in ("ErrorEstimate", "StiffnessEstimate"):
        assert b.penalty_terms[name] > 0
        np.testing.assert_allclose(a.penalty_terms[name], b.penalty_terms[name], rtol=1e-10)


def test_cde_constant_step_without_dt0_steps_once_per_interval(getkey):
    """`dt0=None` with a constant step: one step per interval of the padded grid, the same
    solve as `dt0 = 1/(L-1)`, at an exactly known cost (Midpoint: 2 evaluations a step)."""
    key = getkey()
    L = 9
    ts = jnp.arange(float(L))
    xs = jr.normal(getkey(), (3, L, 3))
    per_knot = _cde(key, "joint", dt0=None)
    explicit = _cde(key, "joint", dt0=1.0 / (L - 1))
    coeffs = per_knot.coefficients(ts, xs)
    a, b = per_knot(ts, coeffs), explicit(ts, coeffs)
    np.testing.assert_array_equal(a.final_state, b.final_state)
    assert int(a.stats["num_steps"]) == L - 1
    assert int(a.stats["num_fevals"]) == 2 * (L - 1)


class _LinearField(eqx.Module):
    A: jax.Array  # (C, H, H)

    def __call__(self, t, z, args=None):
        return jnp.einsum("chk,k->hc", self.A, z)


@pytest.mark.parametrize("interp", [diffrax.CubicInterpolation, diffrax.LinearInterpolation])
def test_cde_linear_control_closed_form(getkey, interp):
    """X(t) = a + b t and f(z) = [A_1 z, ..., A_C z]: z(t) = expm((t - t0) sum_c b_c A_c) z0."""
    model = NeuralCDE(
        2,
        3,
        1,
        4,
        1,
        key=getkey(),
        interpolation=interp,
        dt0=None,
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
    )
    A = 0.5 * jr.normal(getkey(), (2, 3, 3))
    model = eqx.tree_at(lambda m: m.field, model, _LinearField(A))
    a, b = jnp.array([0.3, -1.0]), jnp.array([0.7, -0.4])
    ts = jnp.linspace(0.5, 2.5, 6)
    xs = a + ts[:, None] * b
    out = model(ts, model.coefficients(ts, xs), t1=2.0)
    z0 = model.initial(a + 0.5 * b)
    expected = scipy.linalg.expm(np.asarray(1.5 * jnp.einsum("c,chk->hk", b, A))) @ np.asarray(z0)
    np.testing.assert_allclose(out.final_state, expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("mode", ["joint", "vmap"])
def test_cde_variable_length(getkey, mode):
    model = _cde(getkey(), mode)
    L = 10
    ts = jnp.linspace(0.0, 3.0, L)
    lengths = [10, 4, 7]
    xs = np.array(jr.normal(getkey(), (3, L, 3)))
    for i, n in enumerate(lengths):
        xs[i, n:] = xs[i, n - 1]  # pad by filling forward
    coeffs = model.coefficients(ts, jnp.asarray(xs))
    t1 = ts[jnp.array(lengths) - 1]
    out = model(ts, coeffs, t1=t1)
    for i, n in enumerate(lengths):
        alone = model(ts[:n], model.coefficients(ts[:n], jnp.asarray(xs[i, :n])))
        np.testing.assert_allclose(out.final_state[i], alone.final_state, rtol=1e-12, atol=1e-12)
    # The padding really is ignored: change it and nothing moves.
    xs2 = xs.copy()
    xs2[1, 4:] += 5.0
    out2 = model(ts, model.coefficients(ts, jnp.asarray(xs2)), t1=t1)
    np.testing.assert_allclose(out2.final_state, out.final_state, rtol=1e-12, atol=1e-12)
    # A plain diffrax solve of series 1 in real time with N = 1/dt0 steps agrees.
    path = diffrax.CubicInterpolation(
        ts[:4], diffrax.backward_hermite_coefficients(ts[:4], jnp.asarray(xs[1, :4]))
    )
    term = diffrax.ODETerm(lambda t, z, _: model.field(t, z) @ path.derivative(t))
    z0 = model.initial(jnp.asarray(xs[1, 0]))
    ref = diffrax.diffeqsolve(term, diffrax.Midpoint(), ts[0], ts[3], (ts[3] - ts[0]) / 10, z0)
    np.testing.assert_allclose(out.final_state[1], ref.ys[-1], rtol=1e-10, atol=1e-12)


def test_cde_missing_data_no_nan(getkey):
    rng = np.random.default_rng(0)
    B, L, C = 4, 12, 2
    ts = np.sort(rng.uniform(0, 5, (B, L)), axis=1) + np.arange(L) * 1e-3
    vals = rng.normal(size=(B, L, C))
    vals[rng.uniform(size=vals.shape) < 0.3] = np.nan
    vals[:, 0] = np.where(np.isnan(vals[:, 0]), 0.0, vals[:, 0])
    observed = np.cumsum(~np.isnan(vals), axis=1).astype(float)  # intensity channels
    for i in range(1, L):  # fill forward
        vals[:, i] = np.where(np.isnan(vals[:, i]), vals[:, i - 1], vals[:, i])
    xs = np.concatenate([ts[..., None], vals, observed], -1)
    # vmap mode: finished series take masked zero-length steps, the classic NaN source.
    model = _cde(
        getkey(),
        "vmap",
        channels=1 + 2 * C,
        solver=diffrax.Tsit5(),
        dt0=None,
        stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6),
    )
    coeffs = model.coefficients(jnp.asarray(ts), jnp.asarray(xs))
    assert all(bool(jnp.all(jnp.isfinite(c))) for c in coeffs)

    @eqx.filter_value_and_grad(has_aux=True)
    def loss(m):
        o = m(jnp.asarray(ts), coeffs, regularizers=ErrorEstimate(1.0))
        return jnp.sum(o.ys) + o.penalty, o

    (value, out), g = loss(model)
    assert bool(jnp.all(jnp.isfinite(out.ys))) and bool(jnp.isfinite(value))
    assert all(
        bool(jnp.all(jnp.isfinite(x)))
        for x in jax.tree_util.tree_leaves(eqx.filter(g, eqx.is_inexact_array))
    )


def test_cde_errors(getkey):
    model = _cde(getkey(), "joint")
    ts = jnp.linspace(0.0, 1.0, 5)
    xs = jr.normal(getkey(), (2, 5, 3))
    coeffs = model.coefficients(ts, xs)
    with pytest.raises(ValueError, match="built with channels=2"):
        _cde(getkey(), "joint", channels=2)(ts, coeffs)
    with pytest.raises(ValueError, match="does not match coefficients"):
        model(jnp.linspace(0.0, 1.0, 6), coeffs)
    with pytest.raises(ValueError, match="strictly increasing"):
        model(jnp.array([0.0, 0.5, 0.4, 0.8, 1.0]), coeffs)
    with pytest.raises(ValueError, match="4-tuple"):
        model(ts, xs)
    with pytest.raises(ValueError, match="not a tuple"):
        _cde(getkey(), "joint", interpolation=diffrax.LinearInterpolation)(ts, coeffs)
    with pytest.raises(ValueError, match=r"`t1` must be a scalar or have shape \(2,\)"):
        model(ts, coeffs, t1=jnp.ones(3))
    with pytest.raises(Exception, match="each `t1` must lie in"):
        model(ts, coeffs, t1=jnp.array([1.0, 2.0]))
    bad = tuple(c.at[0, 1, 0].set(jnp.nan) for c in coeffs)
    with pytest.raises(Exception, match="fill missing values forward"):
        model(ts, bad)
    with pytest.raises(ValueError, match="interpolation="):
        NeuralCDE(3, 4, 2, 8, 1, key=getkey(), interpolation="cubic")


# ----------------------------------------------------------------------------- benchmarks


# Slow (80-160 s of compilation on 2 cores): kept out of `make test` for the CI budget;
# `make test-slow` runs it.
@pytest.mark.slow
def test_quick_benchmarks_print_tables():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
    procs = {
        name: subprocess.Popen(
            [sys.executable, os.path.join(REPO, "benchmarks", name), "--quick"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        for name in ("cde_speed.py", "node_batching.py")
    }
    outs = {name: p.communicate(timeout=300) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, outs[name][1][-2000:]
    cde = outs["cde_speed.py"][0]
    assert "step ms" in cde and "ndes joint" in cde and "ndes vmap" in cde
    assert "jax scan floor" in cde
    node = outs["node_batching.py"][0]
    assert "ndes joint" in node and "ndes vmap" in node and "1.00x" in node and "fwd NFE" in node
    assert "jax scan floor" in node


def test_cde_speed_scan_floor_is_the_same_model(monkeypatch):
    """The benchmark's hand-written floor computes the joint Midpoint model's logits."""
    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
    import cde_speed

    ts, xs, _ = cde_speed.make_data(6, 12)
    model = cde_speed._model("joint", diffrax.Midpoint(), False, 8, 3, 11)
    want = model(jnp.asarray(ts), model.coefficients(jnp.asarray(ts), jnp.asarray(xs))).ys
    for build in (cde_speed.scan_floor_predict, cde_speed.scan_step_predict):
        got = build(model, ts, xs, 11)(model)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_solver_settings_module_equals_flat_keywords(getkey):
    from ndes.models import SolverSettings

    field = MLPVectorField(2, 4, 1, key=getkey())
    flat = NeuralODE(field, stepsize_controller=diffrax.ConstantStepSize(), dt0=0.25)
    settings = SolverSettings(
        diffrax.Tsit5(),
        diffrax.ConstantStepSize(),
        diffrax.RecursiveCheckpointAdjoint(),
        0.25,
        64,
        "vmap",
    )
    module = NeuralODE(field, settings=settings, batch_mode="joint", max_steps=4096)
    y0 = jr.normal(getkey(), (3, 2))
    ts = jnp.array([0.0, 0.5, 1.0])
    assert module.settings.batch_mode == "joint" and module.settings.max_steps == 4096
    a, b = flat(ts, y0), module(ts, y0)
    np.testing.assert_array_equal(a.ys, b.ys)
    with pytest.raises(TypeError, match="unexpected keyword argument.*solvr"):
        NeuralODE(field, solvr=diffrax.Euler())
