"""NeuralSDE and the stable neural SDE classes (Oh, Lee & Park 2024)."""

import dataclasses
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

from ndes._brownian import GridBrownianPath
from ndes.models._sde import NeuralSDE
from ndes.models._sde_solve import default_tree_tol
from ndes.models._stable_classes import NeuralGSDE, NeuralLNSDE, NeuralLSDE
from ndes.regularizers import ErrorEstimate, LocalErrorEstimate

from .helpers import central_fd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TS = jnp.linspace(0.0, 1.0, 6)
STABLE = (NeuralLSDE, NeuralLNSDE, NeuralGSDE)


def _control(B=None, C=3, L=11, key=jr.key(5)):
    ts = jnp.linspace(0.0, 1.0, L)
    if B is None:
        x = jr.normal(key, (L, C))
        return ts, diffrax.CubicInterpolation(ts, diffrax.backward_hermite_coefficients(ts, x))
    x = jr.normal(key, (B, L, C))
    coeffs = jax.vmap(lambda xx: diffrax.backward_hermite_coefficients(ts, xx))(x)
    return ts, jax.vmap(lambda c: diffrax.CubicInterpolation(ts, c))(coeffs)


# --- shapes, batch modes, determinism -----------------------------------------------


def test_neural_sde_joint_and_vmap_agree_under_jit(getkey):
    """Same increments in both modes (sample b: column b of one (B, m) grid path), so the
    same ys to rounding; general noise (diagonal: the stable-class test below); traced
    `ts` inside jit with a static num_steps."""
    y0 = jr.normal(getkey(), (5, 4))
    key = getkey()
    model = NeuralSDE.mlp(4, 8, 1, key=jr.key(0), noise="general", noise_size=3, num_steps=20)

    @eqx.filter_jit
    def run(mdl, ts):
        return mdl(ts, y0, key=key)

    joint = run(model, TS)
    vmap = run(dataclasses.replace(model, batch_mode="vmap"), TS)
    assert joint.ys.shape == vmap.ys.shape == (5, 6, 4)
    np.testing.assert_allclose(joint.ys, vmap.ys, rtol=1e-12, atol=1e-12)
    assert int(joint.stats["num_steps"]) == 20
    np.testing.assert_array_equal(vmap.stats["num_steps"], 20)


def _dt0_model(key):
    # Shared by two tests so that they share one compilation.
    return NeuralSDE.mlp(2, 4, 1, key=key, dt0=0.2)


def test_single_trajectory_and_determinism(getkey):
    model = _dt0_model(getkey())
    y0 = jnp.ones(2)
    k = getkey()
    a = model(TS, y0, key=k).ys
    assert a.shape == (6, 2)
    np.testing.assert_array_equal(a, model(TS, y0, key=k).ys)
    assert not np.allclose(a, model(TS, y0, key=getkey()).ys)


@pytest.mark.parametrize("mode", ["joint", pytest.param("vmap", marks=pytest.mark.slow)])
def test_adaptive_uses_tree_and_error_estimate_regularizer(mode, getkey):
    model = NeuralSDE.mlp(
        2,
        8,
        1,
        key=jr.key(1),
        batch_mode=mode,
        solver=diffrax.Heun(),
        sde_type="stratonovich",
        stepsize_controller=diffrax.PIDController(rtol=1e-2, atol=1e-2),
        dt0=0.05,
    )
    out = model(TS, jr.normal(getkey(), (3, 2)), key=getkey(), regularizers=(ErrorEstimate(1.0),))
    assert out.ys.shape == (3, 6, 2)
    assert np.isfinite(float(out.penalty)) and float(out.penalty) > 0
    assert np.all(np.asarray(out.stats["num_steps"]) > 0)


def test_lsde_adaptive_shark_counts_and_regularizes(getkey):
    """NeuralLSDE (additive noise) with ShARK + PID: the tree gets the space-time Levy area,
    the evaluations are counted, ErrorEstimate has a finite, nonzero gradient, and the
    regularized solve is the same solve (same ys, same steps)."""
    ts, ctrl = _control(B=3)
    model = NeuralLSDE(
        4,
        8,
        1,
        key=jr.key(2),
        input_channels=3,
        out_size=2,
        solver=diffrax.ShARK(),
        sde_type="stratonovich",
        stepsize_controller=diffrax.PIDController(rtol=1e-2, atol=1e-3),
    )
    k = getkey()
    plain = model(ts, ctrl, key=k)
    steps = int(plain.stats["num_steps"])
    assert steps > 0
    # Per attempted step: two drift and two diffusion evaluations, plus one diffusion
    # evaluation at init; the PID's initial-step heuristic does not evaluate (WrapTerm).
    # num_steps counts attempts (accepted + rejected).
    assert int(plain.stats["num_rejected_steps"]) > 0
    assert int(plain.stats["num_fevals"]) == 4 * steps + 1

    def loss(m):
        out = m(ts, ctrl, key=k, regularizers=(ErrorEstimate(1.0),))
        return out.penalty, out

    (pen, out), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model)
    assert float(pen) > 0
    np.testing.assert_array_equal(out.ys, plain.ys)
    assert int(out.stats["num_steps"]) == steps
    leaves = jax.tree.leaves(eqx.filter(grads.drift_mlp, eqx.is_array))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)


def test_default_tree_tol_follows_rtol_dt0_and_dtmin():
    pid = diffrax.PIDController(rtol=1e-2, atol=1e-4)
    assert float(default_tree_tol(pid, None, 2.0)) == pytest.approx(2.0 * 1e-2 / 4)
    assert float(default_tree_tol(pid, 1e-3, 2.0)) == pytest.approx(1e-3 / 4)
    pid_min = diffrax.PIDController(rtol=1e-1, atol=1e-4, dtmin=1e-3)
    assert float(default_tree_tol(pid_min, None, 1.0)) == pytest.approx(5e-4)
    tiny = diffrax.PIDController(rtol=1e-9, atol=1e-9)
    assert float(default_tree_tol(tiny, None, 1.0)) == pytest.approx(2.0**-20)


# --- gradients ----------------------------------------------------------------------


def _value_and_grad(model, call):
    """Flat parameters and a jitted `x -> ((loss, aux), grad)` for `call(model) -> (loss,
    aux)`; one compilation serves the gradient, the finite differences and the shapes."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def loss(x):
        return call(eqx.combine(unravel(x), static))

    return flat, jax.jit(jax.value_and_grad(loss, has_aux=True))


def test_neural_sde_gradient_matches_finite_differences(getkey):
    model = NeuralSDE.mlp(2, 3, 1, key=getkey(), num_steps=8, activation=jnp.tanh)
    y0, k = jr.normal(getkey(), (2, 2)), getkey()

    def call(m):
        ys = m(TS, y0, key=k).ys
        return jnp.sum(jnp.sin(ys)), ys

    flat, vg = _value_and_grad(model, call)
    (_, ys), g = vg(flat)
    assert ys.shape == (2, 6, 2)
    fd = central_fd(lambda x: vg(x)[0][0], flat)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)


def test_stable_gradients_match_fd_on_a_few_params(getkey):
    ts, ctrl = _control(B=3)
    model = NeuralGSDE(3, 4, 1, key=getkey(), input_channels=3, out_size=2, num_steps=10)
    k = getkey()

    def call(m):
        out = m(ts, ctrl, key=k)
        return jnp.sum(out.ys**2), (out.ys, out.final_state)

    flat, vg = _value_and_grad(model, call)
    (_, (ys, final)), g = vg(flat)
    assert ys.shape == (3, 2) and final.shape == (3, 3)
    assert np.all(np.isfinite(g)) and np.any(g != 0)
    idx = np.asarray(jr.choice(getkey(), flat.size, (6,), replace=False))
    fd = central_fd(lambda v: vg(flat.at[idx].set(v))[0][0], flat[idx])
    np.testing.assert_allclose(g[idx], fd, rtol=1e-5, atol=1e-8)


# --- strong order through the model -------------------------------------------------


def test_strong_order_through_model_wrapper():
    """Geometric Brownian motion dy = mu y dt + s y dW (Itô), Euler--Maruyama through
    NeuralSDE: strong error ~ N^-1/2. The exact solution uses W(T) of the path the model
    draws (one GridBrownianPath of noise shape (B, 1) from `key`; sample b is column b)."""
    mu, s, B = 0.5, 0.8, 2000
    key = jr.key(3)
    y0 = jnp.ones((B, 1))
    ts = jnp.array([0.0, 1.0])
    errs = []
    ns = [8, 64]
    for n in ns:
        model = NeuralSDE(
            lambda t, y, a: mu * y, lambda t, y, a: s * y, num_steps=n, max_steps=n + 1
        )
        yT = model(ts, y0, key=key).ys[:, -1, 0]
        w_T = jnp.sum(GridBrownianPath(0.0, 1.0, (B, 1), key, num_steps=n).increments, 0)[:, 0]
        exact = jnp.exp((mu - 0.5 * s**2) + s * w_T)
        errs.append(float(jnp.mean(jnp.abs(yT - exact))))
    slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert 0.35 < slope < 0.7, (slope, errs)


# --- stable classes -----------------------------------------------------------------


def test_stable_joint_equals_vmap_with_control(getkey):
    ts, ctrl = _control(B=4)
    k = getkey()
    outs = {}
    for mode in ("joint", "vmap"):
        model = NeuralLNSDE(
            6, 8, 2, key=jr.key(0), input_channels=3, out_size=5, num_steps=20, batch_mode=mode
        )
        out = model(ts, ctrl, key=k)
        assert out.ys.shape == (4, 5) and out.final_state.shape == (4, 6)
        outs[mode] = out
    np.testing.assert_allclose(outs["joint"].ys, outs["vmap"].ys, rtol=1e-11, atol=1e-12)


def test_stable_single_series_and_jax_vmap(getkey):
    """One series (unbatched control, z0 = xi(X(t0))) under the user's own jax.vmap."""
    ts, cb = _control(B=2)
    model = NeuralLSDE(6, 8, 1, key=jr.key(0), input_channels=3, out_size=5, num_steps=10)
    k = getkey()
    out = eqx.filter_vmap(lambda c: model(ts, c, key=k))(cb)
    assert out.ys.shape == (2, 5) and out.final_state.shape == (2, 6)
    assert np.all(np.isfinite(out.ys)) and not np.allclose(out.ys[0], out.ys[1])


def test_stable_default_steps_once_per_interval(getkey):
    """Without dt0 or num_steps a stable SDE takes one Euler step per interval of `ts`
    (`len(ts) - 1` equal steps): the same solve, bitwise, as num_steps=len(ts)-1, and
    under jit with traced `ts` too. NeuralSDE still asks for the step (its `ts` are save times)."""
    ts, ctrl = _control(B=3)
    k = getkey()
    for cls in (NeuralLSDE, NeuralLNSDE, NeuralGSDE):
        default = cls(6, 8, 1, key=jr.key(0), input_channels=3, out_size=5)
        explicit = cls(6, 8, 1, key=jr.key(0), input_channels=3, out_size=5, num_steps=len(ts) - 1)
        out = default(ts, ctrl, key=k)
        assert int(out.stats["num_steps"]) == len(ts) - 1
        assert int(out.stats["num_fevals"]) == 2 * (len(ts) - 1)  # drift + diffusion per step
        np.testing.assert_array_equal(out.ys, explicit(ts, ctrl, key=k).ys)
        if cls is NeuralLSDE:  # traced ts: the step count comes from the static shape
            jitted = jax.jit(lambda t, m=default: m(t, ctrl, key=k).ys)(ts)
            np.testing.assert_allclose(jitted, out.ys, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="num_steps=N"):
        NeuralSDE.mlp(2, 4, 1, key=k)


def test_stable_formulas(getkey):
    """Diffusion and drift follow the paper (bounded=False) and the authors' code (True)."""
    t, z = 0.3, jnp.array([0.5, -1.5, 2.0])
    for bounded in (False, True):
        ls = NeuralLSDE(3, 4, 1, key=jr.key(0), num_steps=4, bounded=bounded)
        ln = NeuralLNSDE(3, 4, 1, key=jr.key(0), num_steps=4, bounded=bounded)
        gs = NeuralGSDE(3, 4, 1, key=jr.key(0), num_steps=4, bounded=bounded)
        sig = ls.sigma(t, z.dtype)
        assert np.all(np.asarray(sig) >= 0)
        scale = jax.nn.sigmoid(ls.theta)
        b = (lambda v, c=scale: jnp.tanh(c * v)) if bounded else (lambda v: v)
        np.testing.assert_allclose(ls.diffusion(t, z), b(sig))
        np.testing.assert_allclose(ln.diffusion(t, z), b(sig * z))
        # Langevin: diffusion independent of z; the drift independent of t
        np.testing.assert_allclose(ls.diffusion(t, 2 * z), ls.diffusion(t, z))
        np.testing.assert_allclose(ls.drift(0.1, z, None), ls.drift(0.9, z, None))
        g = gs._gamma(t, z, None)
        expect = jnp.tanh(g * jnp.tanh(z)) if bounded else g * z
        np.testing.assert_allclose(gs.drift(t, z, None), expect)


def test_stable_classes_keep_bounded_moments_where_unconstrained_diverges():
    """Horizon T = 50, 100 Euler--Maruyama steps. Bounded stable drifts and diffusions are
    at most 1 in each component, so E z_T^2 <= 3 z_0^2 + 3 T^2 + 3 T per component
    (|sum f dt| <= T, E (sum g dW)^2 <= T). The unconstrained linear SDE
    dy = y dt + 0.5 y dW, stepped with the same increments, explodes."""
    T, n, B, N = 50.0, 4, 64, 100
    ts = jnp.array([0.0, T])
    z0 = jnp.full((B, n), 0.5)
    bound = 3 * 0.25 + 3 * T**2 + 3 * T
    key = jr.key(2)
    for cls in STABLE:
        model = cls(n, 16, 2, key=jr.key(1), num_steps=N, max_steps=N + 1)
        zT = model(ts, key=key, z0=z0).ys[:, -1]
        assert np.all(np.isfinite(zT))
        assert float(jnp.max(jnp.mean(zT**2, 0))) < bound
    y = np.asarray(z0)
    for dw in np.asarray(GridBrownianPath(0.0, T, (B, n), key, num_steps=N).increments):
        y = y + y * (T / N) + 0.5 * y * dw
    assert not np.all(np.isfinite(y)) or float(np.mean(y**2)) > 1e6 * bound


# --- validation ---------------------------------------------------------------------


def test_solver_and_config_validation(getkey):
    k = getkey()
    with pytest.raises(ValueError, match="converges to the Stratonovich"):
        NeuralSDE.mlp(2, 4, 1, key=k, num_steps=4, solver=diffrax.Heun())
    with pytest.raises(ValueError, match="converges to the Itô"):
        NeuralSDE.mlp(2, 4, 1, key=k, num_steps=4, sde_type="stratonovich")
    with pytest.raises(ValueError, match="not an SDE solver"):
        NeuralSDE.mlp(2, 4, 1, key=k, num_steps=4, solver=diffrax.Tsit5())
    with pytest.raises(ValueError, match="only correct for additive noise"):
        NeuralSDE.mlp(2, 4, 1, key=k, num_steps=4, solver=diffrax.ShARK())
    with pytest.raises(ValueError, match="sde_type"):
        NeuralSDE.mlp(2, 4, 1, key=k, num_steps=4, sde_type="ito2")
    with pytest.raises(ValueError, match="noise_size"):
        NeuralSDE(lambda t, y, a: y, lambda t, y, a: y, noise="general", num_steps=4)
    with pytest.raises(ValueError, match="brownian='grid'"):
        NeuralSDE.mlp(
            2,
            4,
            1,
            key=k,
            dt0=0.1,
            solver=diffrax.Heun(),
            sde_type="stratonovich",
            stepsize_controller=diffrax.PIDController(rtol=1e-2, atol=1e-2),
            brownian="grid",
        )(TS, jnp.ones(2), key=k)
    with pytest.raises(ValueError, match="num_steps=N"):
        NeuralSDE.mlp(2, 4, 1, key=k)
    with pytest.raises(ValueError, match="off the fixed Brownian grid.*sampling='biased'"):
        NeuralSDE.mlp(2, 4, 1, key=k, num_steps=4, solver=diffrax.Heun(), sde_type="stratonovich")(
            TS,
            jnp.ones(2),
            key=k,
            regularizers=(LocalErrorEstimate(1.0, key=k, rtol=1e-3, atol=1e-3),),
        )
    with pytest.raises(ValueError, match="commutative noise"):
        NeuralSDE.mlp(
            2, 4, 1, key=k, num_steps=4, noise="general", noise_size=2, solver=diffrax.ItoMilstein()
        )
    with pytest.raises(ValueError, match="batch_mode"):
        NeuralSDE.mlp(2, 4, 1, key=k, num_steps=4, batch_mode="loop")
    # additive noise: an additive-noise SRK solver (needs space-time Levy area) is accepted
    lsde = NeuralLSDE(2, 4, 1, key=k, num_steps=8, solver=diffrax.ShARK())
    assert lsde(TS, key=k, z0=jnp.ones(2)).ys.shape == (6, 2)
    with pytest.raises(ValueError, match="converges to the Stratonovich"):
        NeuralLNSDE(2, 4, 1, key=k, num_steps=8, solver=diffrax.Heun())


def test_traced_ts_with_dt0_asks_for_num_steps(getkey):
    model = _dt0_model(getkey())
    assert model(TS, jnp.ones(2), key=getkey()).ys.shape == (6, 2)  # concrete ts: fine
    with pytest.raises(ValueError, match="pass num_steps=N instead of dt0"):
        jax.jit(lambda ts: model(ts, jnp.ones(2), key=jr.key(0)).ys)(TS)
    with pytest.raises(ValueError, match="does not divide"):
        NeuralSDE.mlp(2, 4, 1, key=getkey(), dt0=0.3)(TS, jnp.ones(2), key=getkey())


def test_diffusion_shape_errors(getkey):
    bad = NeuralSDE(lambda t, y, a: y, lambda t, y, a: jnp.ones(3), num_steps=4)
    with pytest.raises(ValueError, match="noise='general'"):
        bad(TS, jnp.ones(2), key=getkey())
    stable = NeuralLSDE(2, 4, 1, key=getkey(), input_channels=3, num_steps=4)
    with pytest.raises(ValueError, match="control"):
        stable(TS, key=getkey(), z0=jnp.ones(2))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4"])
def test_num_steps_must_be_a_positive_int(bad, getkey):
    with pytest.raises(
        ValueError, match=rf"NeuralSDE: num_steps={bad!r} must be an int >= 1 or None"
    ):
        NeuralSDE.mlp(2, 4, 1, key=getkey(), num_steps=bad)
    with pytest.raises(ValueError, match=rf"NeuralLSDE: num_steps={bad!r} must be an int >= 1"):
        NeuralLSDE(2, 4, 1, key=getkey(), num_steps=bad)
    assert NeuralLSDE(2, 4, 1, key=getkey(), num_steps=np.int64(3)).sde.num_steps == 3


# --- benchmark smoke run ------------------------------------------------------------


@pytest.mark.slow  # ~30 s (compiles six train steps), more on a busy machine
def test_quick_benchmark_prints_table():
    pytest.importorskip("torchsde")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    env.pop("JAX_ENABLE_X64", None)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "sde_speed.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "vs torchsde" in out
    for label in ("torchsde", "diffrax+VBT", "ndes grid joint", "ndes grid vmap", "lax.scan"):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"euler  {label} "))
        assert float(line.split()[-3]) > 0  # step ms
