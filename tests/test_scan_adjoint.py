"""`ndes.ScanAdjoint`: a fixed-step solve as a `lax.scan` of diffrax's own step -- bitwise the
`ys` of diffrax's checkpointed loop, the same gradients, used automatically where valid."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
import pytest

import ndes

jax.config.update("jax_enable_x64", True)

T1 = 1.3
Y0 = jnp.array([0.5, -0.2], jnp.float64)


def _f(t, y, args):
    return -y + jnp.sin(t) * y**2 + args


ODE_SOLVERS = [
    diffrax.Euler(),
    diffrax.Heun(),
    diffrax.Midpoint(),
    diffrax.Ralston(),
    diffrax.Bosh3(),
    diffrax.Tsit5(),
    diffrax.Dopri5(),
    diffrax.Dopri8(),
]


def _solve(solver, n, adjoint, *, y0=Y0, args=0.1, saveat=None, solve=diffrax.diffeqsolve, **kw):
    kw.setdefault("max_steps", n)
    return solve(
        diffrax.ODETerm(_f),
        solver,
        0.0,
        T1,
        T1 / n,
        y0,
        args,
        saveat=saveat or diffrax.SaveAt(t0=True, t1=True),
        adjoint=adjoint,
        **kw,
    )


def _loop(n):
    return diffrax.RecursiveCheckpointAdjoint(checkpoints=n)


@pytest.mark.parametrize("solver", ODE_SOLVERS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("n", [1, 9])
def test_ode_ys_bitwise_and_gradients_equal_diffrax_loop(solver, n):
    ref = _solve(solver, n, _loop(n))
    out = _solve(solver, n, ndes.ScanAdjoint(n))
    assert np.array_equal(np.asarray(ref.ys), np.asarray(out.ys))
    for k, want in (("num_steps", n), ("num_accepted_steps", n), ("num_rejected_steps", 0)):
        assert int(ref.stats[k]) == int(out.stats[k]) == want
    assert out.result == diffrax.RESULTS.successful

    def loss(y0, args, adjoint):
        return jnp.sum(_solve(solver, n, adjoint, y0=y0, args=args).ys[-1] ** 2)

    g_ref = jax.grad(loss, argnums=(0, 1))(Y0, 0.1, _loop(n))
    g_out = jax.grad(loss, argnums=(0, 1))(Y0, 0.1, ndes.ScanAdjoint(n))
    for a, b in zip(g_ref, g_out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)


def _sde_terms(bm):
    diff = lambda t, y, a: lx.DiagonalLinearOperator(0.3 + 0.2 * jnp.sin(y))  # noqa: E731
    return diffrax.MultiTerm(diffrax.ODETerm(_f), diffrax.ControlTerm(diff, bm))


@pytest.mark.parametrize(
    "solver,levy",
    [
        (diffrax.Euler(), diffrax.BrownianIncrement),
        (diffrax.Heun(), diffrax.BrownianIncrement),
        (diffrax.SPaRK(), diffrax.SpaceTimeLevyArea),
    ],
    ids=["Euler", "Heun", "SPaRK"],
)
def test_sde_on_a_grid_path_bitwise_the_diffrax_loop(solver, levy):
    n = 10
    bm = ndes.GridBrownianPath(0.0, T1, (2,), jr.key(3), num_steps=n, levy_area=levy)

    def run(adjoint, y0=Y0):
        return diffrax.diffeqsolve(
            _sde_terms(bm), solver, 0.0, T1, T1 / n, y0, 0.1, max_steps=n, adjoint=adjoint
        )

    assert np.array_equal(np.asarray(run(_loop(n)).ys), np.asarray(run(ndes.ScanAdjoint(n)).ys))
    g_ref, g_out = (
        jax.grad(lambda y0, a=a: jnp.sum(run(a, y0).ys ** 2))(Y0)
        for a in (_loop(n), ndes.ScanAdjoint(n))
    )
    np.testing.assert_allclose(g_ref, g_out, rtol=1e-13, atol=0)


def test_gradient_matches_finite_differences():
    n, eps = 8, 1e-6

    def loss(a):
        return jnp.sum(_solve(diffrax.Tsit5(), n, ndes.ScanAdjoint(n), args=a).ys[-1] ** 2)

    g = jax.grad(loss)(0.1)
    fd = (loss(0.1 + eps) - loss(0.1 - eps)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-7)


def test_without_checkpoints_same_ys_and_gradients():
    n = 9
    ref = _solve(diffrax.Heun(), n, _loop(n))
    out = _solve(diffrax.Heun(), n, ndes.ScanAdjoint(n, checkpoint=False))
    assert np.array_equal(np.asarray(ref.ys), np.asarray(out.ys))

    def loss(y0, adjoint):
        return jnp.sum(_solve(diffrax.Heun(), n, adjoint, y0=y0).ys ** 2)

    np.testing.assert_allclose(
        jax.grad(loss)(Y0, _loop(n)),
        jax.grad(loss)(Y0, ndes.ScanAdjoint(n, checkpoint=False)),
        rtol=1e-12,
    )


def test_more_steps_than_needed_are_discarded_and_fewer_fail():
    n = 6
    ref = _solve(diffrax.Midpoint(), n, _loop(n))
    more = _solve(diffrax.Midpoint(), n, ndes.ScanAdjoint(n + 5), max_steps=None)
    assert np.array_equal(np.asarray(ref.ys), np.asarray(more.ys))
    assert int(more.stats["num_steps"]) == n
    fewer = _solve(diffrax.Midpoint(), n, ndes.ScanAdjoint(n - 2), max_steps=None, throw=False)
    assert fewer.result == diffrax.RESULTS.max_steps_reached


def test_traced_end_time_under_jit_and_vmap():
    n = 7

    @jax.jit
    def run(t1, y0):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(_f),
            diffrax.Tsit5(),
            0.0,
            t1,
            t1 / n,
            y0,
            0.1,
            max_steps=n,
            adjoint=ndes.ScanAdjoint(n),
        ).ys[-1]

    y0s = jnp.stack([Y0, 2 * Y0, -Y0])
    t1s = jnp.array([0.5, 1.0, 1.5])
    batched = jax.vmap(run)(t1s, y0s)
    for i in range(3):
        ref = diffrax.diffeqsolve(
            diffrax.ODETerm(_f), diffrax.Tsit5(), 0.0, float(t1s[i]), float(t1s[i]) / n,
            y0s[i], 0.1, max_steps=n, adjoint=_loop(n),
        )  # fmt: skip
        np.testing.assert_allclose(batched[i], ref.ys[-1], rtol=1e-14)


def test_regularizers_and_counters_ride_along():
    n = 5
    regs = (ndes.KineticEnergy(0.1), ndes.StiffnessEstimate(0.1))

    def run(adjoint):
        return ndes.diffeqsolve(
            diffrax.ODETerm(_f), diffrax.Tsit5(), 0.0, T1, T1 / n, Y0, 0.1,
            max_steps=n, adjoint=adjoint, regularizers=regs,
        )  # fmt: skip

    a, b = run(_loop(n)), run(ndes.ScanAdjoint(n, checkpoint=False))
    assert np.array_equal(np.asarray(a.ys), np.asarray(b.ys))
    assert float(a.penalty) == float(b.penalty) > 0
    assert int(a.stats["num_fevals"]) == int(b.stats["num_fevals"]) > 0


def _cde(**options):
    model = ndes.NeuralCDE(
        2, 4, 2, 8, 1, key=jr.key(0), solver=diffrax.Midpoint(),
        stepsize_controller=diffrax.ConstantStepSize(), dt0=1.0 / 6, **options,
    )  # fmt: skip
    ts = jnp.linspace(0.0, 1.0, 7)
    xs = jnp.stack([ts, jnp.sin(ts)], -1)[None]
    return model, ts, model.coefficients(ts, xs)


def test_a_model_takes_scan_adjoint_and_gives_the_same_output():
    model, ts, coeffs = _cde()
    fast, _, _ = _cde(adjoint=ndes.ScanAdjoint(6))
    assert np.array_equal(np.asarray(model(ts, coeffs).ys), np.asarray(fast(ts, coeffs).ys))
    # A model that saves at every time of ts cannot: the error says what to use instead.
    sde = ndes.NeuralSDE.mlp(2, 8, 1, key=jr.key(0), num_steps=6, adjoint=ndes.ScanAdjoint(6))
    with pytest.raises(ValueError, match=r"SaveAt\(ts=...\).*RecursiveCheckpointAdjoint"):
        sde(ts, jnp.ones(2), key=jr.key(1))


@pytest.mark.parametrize("bad", [0, -3, 2.0, True, None])
def test_num_steps_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="num_steps must be a Python int >= 1"):
        ndes.ScanAdjoint(bad)


def test_checkpoint_must_be_a_bool():
    with pytest.raises(TypeError, match="checkpoint"):
        ndes.ScanAdjoint(3, checkpoint="yes")


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6)), "ConstantStepSize"),
        (dict(saveat=diffrax.SaveAt(ts=jnp.linspace(0.0, T1, 3))), r"SaveAt\(ts=...\)"),
        (dict(saveat=diffrax.SaveAt(steps=True)), r"SaveAt\(ts=...\)"),
        (dict(max_steps=3), "more than max_steps=3"),
        (dict(event=diffrax.Event(lambda t, y, args, **kw: t > 0.5)), "event"),
    ],
    ids=["adaptive", "ts", "steps", "max_steps", "event"],
)
def test_ndes_diffeqsolve_refuses_scan_adjoint_where_invalid(kw, match):
    with pytest.raises(ValueError, match=match):
        _solve(diffrax.Tsit5(), 6, ndes.ScanAdjoint(6), solve=ndes.diffeqsolve, **kw)


def test_stable_sde_with_readout_saves_only_the_final_state():
    """With a readout the stable SDE saves only `ts[-1]` (and runs as a scan); its final state
    is the last state of the same model's full path (saved at every time of `ts`), to rounding
    (the path's last point is diffrax's interpolation at the step's end)."""
    model = ndes.NeuralLSDE(
        4, 8, 1, key=jr.key(0), input_channels=2, out_size=3, num_steps=8, dtype=jnp.float64
    )
    path_model = eqx.tree_at(lambda m: m.readout, model, None, is_leaf=lambda x: x is None)
    ts = jnp.linspace(0.0, 1.0, 9)
    xs = jnp.stack([ts, jnp.cos(3 * ts)], -1)
    control = diffrax.CubicInterpolation(ts, diffrax.backward_hermite_coefficients(ts, xs))
    out = model(ts, control, key=jr.key(1))
    path = path_model(ts, control, key=jr.key(1))
    assert path.ys.shape == (9, 4) and out.ys.shape == (3,)
    np.testing.assert_allclose(out.final_state, path.ys[-1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out.ys, model.readout(path.ys[-1]), rtol=1e-12, atol=1e-14)
