"""ndes.CNF (FFJORD): closed forms, fixed probe, round trip, batching, counters, regularizers."""

import dataclasses

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.linalg as jsl
import numpy as np
import pytest

import ndes
from ndes.models._divergence import draw_probe


class Affine(eqx.Module):
    a: jax.Array
    data_size: int = eqx.field(static=True)

    def __call__(self, t, z, args=None):
        return self.a @ z


def _gauss(z):
    return -0.5 * (jnp.sum(z**2, -1) + z.shape[-1] * jnp.log(2 * jnp.pi))


TIGHT = dict(stepsize_controller=diffrax.PIDController(rtol=1e-9, atol=1e-9))


def _affine(getkey, d=3):
    a = jr.normal(getkey(), (d, d)) * 0.4
    return a, Affine(a, d)


def test_affine_log_prob_matches_closed_form(getkey):
    a, field = _affine(getkey)
    model = ndes.CNF(field, divergence="exact", t1=0.7, **TIGHT)
    x = jr.normal(getkey(), (5, 3))
    out = model.log_prob(x)
    z1 = x @ jsl.expm(0.7 * a).T
    np.testing.assert_allclose(out.final_state, z1, rtol=1e-7)
    np.testing.assert_allclose(out.ys, _gauss(z1) + 0.7 * jnp.trace(a), rtol=1e-7)


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_probe_is_fixed_within_a_solve(getkey, probe):
    """For f = A z the Hutchinson rate eps^T A eps is constant in time only if the probe is
    held fixed; the integral is then exactly T eps^T A eps, and ||eps^T A||^2 T for RNODE's term."""
    a, field = _affine(getkey)
    model = ndes.CNF(field, probe=probe, **TIGHT)
    x, key = jr.normal(getkey(), (4, 3)), getkey()
    out = model.log_prob(x, key, regularizers=(ndes.CNFJacobianFrobenius(1.0),))
    eps = draw_probe(key, x.shape, x.dtype, probe)
    hutch = jnp.einsum("bi,ij,bj->b", eps, a, eps)
    z1 = x @ jsl.expm(a).T
    np.testing.assert_allclose(out.ys, _gauss(z1) + hutch, rtol=1e-7)
    frob = jnp.mean(jnp.sum((eps @ a) ** 2, -1))
    np.testing.assert_allclose(out.penalty_terms["CNFJacobianFrobenius"], frob, rtol=1e-7)


def test_exact_frobenius_and_kinetic_terms(getkey):
    a, field = _affine(getkey, 2)
    model = ndes.CNF(field, divergence="exact", **TIGHT)
    x = jr.normal(getkey(), (2,))
    regs = (ndes.CNFJacobianFrobenius(1.0), ndes.CNFKineticEnergy(1.0))
    out = model.log_prob(x, regularizers=regs)
    np.testing.assert_allclose(out.penalty_terms["CNFJacobianFrobenius"], jnp.sum(a**2), rtol=1e-7)
    ts = jnp.linspace(0, 1, 2001)
    v = jax.vmap(lambda t: a @ jsl.expm(t * a) @ x)(ts)
    kinetic = jnp.trapezoid(jnp.sum(v**2, -1), ts)
    np.testing.assert_allclose(out.penalty_terms["CNFKineticEnergy"], kinetic, rtol=1e-5)


class _Counting(eqx.Module):
    """Counts how often the field is traced: each trace is one evaluation in the compiled solve."""

    inner: eqx.Module
    count: list = eqx.field(static=True)

    def __call__(self, t, z, args=None):
        self.count.append(1)
        return self.inner(t, z, args)


@pytest.mark.parametrize("divergence", ["hutchinson", "exact"])
def test_rnode_terms_reuse_the_divergence_evaluation(getkey, divergence):
    """RNODE's terms are read from the divergence's own evaluation of f and VJP: a solve with
    them traces f exactly as often as plain FFJORD (a re-evaluation would trace it more)."""
    _, field = _affine(getkey, 2)
    fixed = dict(stepsize_controller=diffrax.ConstantStepSize(), dt0=0.25)
    x, key = jr.normal(getkey(), (3, 2)), getkey()
    counts = []
    for regs in [(), (ndes.CNFKineticEnergy(1.0), ndes.CNFJacobianFrobenius(1.0))]:
        counter = _Counting(field, [])
        model = ndes.CNF(counter, divergence=divergence, **fixed)

        def loss(x, m=model, r=regs):
            out = m.log_prob(x, key, regularizers=r)
            return jnp.sum(out.ys) + out.penalty

        jax.grad(loss)(x)
        counts.append(len(counter.count))
    assert counts[0] == counts[1] > 0, counts


def test_sample_then_log_prob_round_trips(getkey):
    model = ndes.CNF.mlp(2, 16, 2, key=getkey(), divergence="exact", **TIGHT)
    key = getkey()
    s = model.sample(key, 6)
    sl = model.sample_and_log_prob(key, 6)
    assert s.ys.shape == (6, 2) and sl.ys[1].shape == (6,)
    back = model.log_prob(s.ys)
    np.testing.assert_allclose(back.final_state, s.final_state, atol=1e-7)
    back = model.log_prob(sl.ys[0])
    np.testing.assert_allclose(back.final_state, sl.final_state, atol=1e-7)
    np.testing.assert_allclose(back.ys, sl.ys[1], atol=1e-7)


def test_density_integrates_to_one(getkey):
    model = ndes.CNF.mlp(2, 16, 2, key=getkey(), divergence="exact")
    g = jnp.linspace(-7, 7, 71)
    grid = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)
    p = jnp.exp(model.log_prob(grid).ys)
    mass = jnp.sum(p) * (g[1] - g[0]) ** 2
    assert abs(mass - 1) < 0.03, mass


def test_joint_and_vmap_agree_on_fixed_steps(getkey):
    fixed = dict(solver=diffrax.Tsit5(), stepsize_controller=diffrax.ConstantStepSize(), dt0=0.1)
    joint = ndes.CNF.mlp(2, 8, 1, key=getkey(), **fixed)
    vmapped = dataclasses.replace(
        joint, settings=dataclasses.replace(joint.settings, batch_mode="vmap")
    )
    x, key = jr.normal(getkey(), (5, 2)), getkey()
    regs = (
        ndes.CNFJacobianFrobenius(0.1),
        ndes.CNFKineticEnergy(0.1),
        ndes.ErrorEstimate(1.0, rtol=1e-3, atol=1e-6),
    )
    oj = joint.log_prob(x, key, regularizers=regs)
    ov = vmapped.log_prob(x, key, regularizers=regs)
    np.testing.assert_allclose(oj.ys, ov.ys, rtol=1e-10)
    for k in oj.penalty_terms:
        np.testing.assert_allclose(oj.penalty_terms[k], ov.penalty_terms[k], rtol=1e-8)
    assert ov.stats["num_fevals"].shape == (5,)


def test_nfe_counted_for_the_augmented_solve(getkey):
    model = ndes.CNF.mlp(
        2, 8, 1, key=getkey(), solver=diffrax.Euler(),
        stepsize_controller=diffrax.ConstantStepSize(), dt0=0.125,
    )  # fmt: skip
    out = model.log_prob(jnp.zeros((3, 2)), getkey())
    assert int(out.stats["num_fevals"]) == 8
    assert int(model.sample(getkey(), 3).stats["num_fevals"]) == 8


def test_gradient_matches_finite_differences(getkey):
    a0, _ = _affine(getkey, 2)
    x = jr.normal(getkey(), (3, 2))
    fixed = dict(stepsize_controller=diffrax.ConstantStepSize(), dt0=0.05)

    def loss(a):
        m = ndes.CNF(Affine(a, 2), divergence="exact", **fixed)
        out = m.log_prob(x, regularizers=(ndes.CNFKineticEnergy(0.5),))
        return -jnp.mean(out.ys) + out.penalty

    g = jax.grad(loss)(a0)
    h = 1e-6
    for i, j in [(0, 0), (0, 1), (1, 0)]:
        e = jnp.zeros((2, 2)).at[i, j].set(h)
        np.testing.assert_allclose(g[i, j], (loss(a0 + e) - loss(a0 - e)) / (2 * h), rtol=1e-6)


def _every_regularizer(key):
    return [
        ndes.ErrorEstimate(0.1),
        ndes.StiffnessEstimate(0.1),
        ndes.LocalErrorEstimate(0.1, key=key),
        ndes.KineticEnergy(0.1),
        ndes.JacobianFrobenius(0.1, key=key),
        ndes.TaylorDerivative(0.1, order=2),
        ndes.RandomEndTime(0.2, key=key),
        ndes.CNFKineticEnergy(0.1),
        ndes.CNFJacobianFrobenius(0.1),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("i", range(9))
def test_every_regularizer_trains_log_prob(getkey, i):
    model = ndes.CNF.mlp(2, 8, 1, key=getkey())
    reg = _every_regularizer(getkey())[i]
    x, key = jr.normal(getkey(), (4, 2)), getkey()

    def loss(m):
        out = m.log_prob(x, key, regularizers=(reg,))
        return -jnp.mean(out.ys) + out.penalty, out

    (val, out), g = eqx.filter_value_and_grad(loss, has_aux=True)(model)
    assert jnp.isfinite(val) and len(out.penalty_terms) == (0 if i == 6 else 1)
    leaves = jax.tree.leaves(eqx.filter(g, eqx.is_inexact_array))
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in leaves)


def test_bad_input_raises(getkey):
    model = ndes.CNF.mlp(2, 8, 1, key=getkey())
    with pytest.raises(ValueError, match="`x` has 3 features"):
        model.log_prob(jnp.zeros((4, 3)), getkey())
    with pytest.raises(ValueError, match="`x` must have shape"):
        model.log_prob(jnp.zeros((2, 2, 2)), getkey())
    with pytest.raises(ValueError, match="`x` contains NaN"):
        model.log_prob(jnp.array([[0.0, jnp.nan]]), getkey())
    with pytest.raises(ValueError, match="needs key="):
        model.log_prob(jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="probe='sphere'"):
        ndes.CNF.mlp(2, 8, 1, key=getkey(), probe="sphere")
    with pytest.raises(ValueError, match="divergence='trace'"):
        ndes.CNF.mlp(2, 8, 1, key=getkey(), divergence="trace")
    with pytest.raises(ValueError, match="t1=-1.0"):
        ndes.CNF.mlp(2, 8, 1, key=getkey(), t1=-1.0)
    with pytest.raises(ValueError, match="num_samples=0"):
        model.sample(getkey(), 0)
    with pytest.raises(ValueError, match="CNFJacobianFrobenius reads the divergence"):
        ndes.NeuralODE.mlp(2, 8, 1, key=getkey())(
            jnp.linspace(0, 1, 3), jnp.zeros(2), regularizers=(ndes.CNFJacobianFrobenius(1.0),)
        )


@pytest.mark.slow
def test_density_benchmark_quick_mode(tmp_path):
    import json
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    bench = pytest.importorskip("cnf_density")
    argv = ["--quick", "--datasets", "moons", "--methods", "vanilla", "rnode", "--out"]
    assert bench.main([*argv, str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in res["records"]] == ["vanilla", "rnode"]
    for r in res["records"]:
        assert np.isfinite(r["test_nll"]) and r["nfe_log_prob"] > 0 and r["nfe_sample"] > 0
    assert len(res["overhead"]) == 3 and "| moons | rnode |" in res["table"]


@pytest.mark.slow
def test_density_benchmark_opt_in_flags(tmp_path):
    """The harder toy, the model/solver flags and the hand-driven BudgetWeight method run."""
    import json
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    bench = pytest.importorskip("cnf_density")
    argv = ["--quick", "--datasets", "2spirals", "--methods", "budget", "--depth", "1"]
    argv += ["--rtol", "1e-4", "--steps", "2", "--log-every", "1", "--no-overhead"]
    assert bench.main([*argv, "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    (r,) = res["records"]
    assert r["method"] == "budget" and r["data"] == "2spirals"
    assert np.isfinite(r["test_nll"]) and r["nfe_log_prob"] > 0
    with pytest.raises(ValueError, match="dataset="):
        bench.load("nope", 0, 10)


def _bench():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    return pytest.importorskip("cnf_density")


def test_density_benchmark_plot_seed_mean(tmp_path, monkeypatch):
    """plot() draws one line per method and weight, the mean over seeds at the steps every
    seed logged; a record set without histories is refused."""
    bench = _bench()
    seen = {}
    monkeypatch.setattr(bench.ndes.plot, "plot_history", lambda lines, *a, **k: seen.update(lines))

    def rec(method, weight, seed, nfe):
        hist = [{"step": s, "nll": 2.0 + seed, "num_fevals": nfe + s} for s in (0, 5, 9)]
        return {"data": "2spirals", "method": method, "weight": weight, "history": hist}

    recs = [rec("vanilla", 0.01, 0, 25), rec("vanilla", 0.01, 1, 35), rec("error", 0.03, 0, 20)]
    recs[1]["history"] = recs[1]["history"][1:]  # seed 1 missed step 0: left out of the mean
    (path,) = bench.plot([*recs, {"data": "2spirals", "method": "x", "history": []}], tmp_path)
    assert path.endswith("cnf_2spirals_training.png")
    assert seen["vanilla (mean of 2 seeds)"] == [
        {"step": 5, "nll": 2.5, "num_fevals": 35.0},
        {"step": 9, "nll": 2.5, "num_fevals": 39.0},
    ]
    assert [h["num_fevals"] for h in seen["error 0.03"]] == [20.0, 25.0, 29.0]
    assert bench.label({"method": "budget0.7", "weight": 0.01}) == "budget0.7"
    assert bench.label({"method": "steer", "weight": 0.5}) == "steer b=0.5"
    with pytest.raises(ValueError, match="no record holds a training history"):
        bench.plot([{"data": "moons", "method": "vanilla", "history": []}], str(tmp_path))


@pytest.mark.slow
def test_density_benchmark_history_and_plot(tmp_path):
    """--log-every keeps each run's training history in the JSON; --plot draws it, adding
    --plot-from's earlier records; --plot without --log-every is refused."""
    import json

    bench = _bench()
    tiny = ["--quick", "--datasets", "2spirals", "--depth", "1", "--width", "4", "--n", "40"]
    tiny += ["--no-overhead"]
    argv = [*tiny, "--methods", "vanilla", "--steps", "3", "--log-every", "2", "--seeds", "0"]
    assert bench.main([*argv, "1", "--out", str(tmp_path / "a")]) == 0
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert [r["seed"] for r in res["records"]] == [0, 1]
    for r in res["records"]:
        assert [h["step"] for h in r["history"]] == [0, 2]  # every 2nd step and the last
        assert all(h["num_fevals"] > 0 and np.isfinite(h["nll"]) for h in r["history"])
        assert "weight" not in r["history"][0]
        assert np.isfinite(r["train_nll"])  # the exact NLL of as many training rows
    argv = [*tiny, "--methods", "budget0.7", "--steps", "1", "--log-every", "1"]
    argv += ["--out", str(tmp_path / "b"), "--plot", str(tmp_path / "img"), "--plot-from"]
    assert bench.main([*argv, str(tmp_path / "a" / "results.json")]) == 0
    (r,) = json.loads((tmp_path / "b" / "results.json").read_text())["records"]
    assert "weight" in r["history"][0]  # BudgetWeight's weight is logged too
    assert (tmp_path / "img" / "cnf_2spirals_training.png").stat().st_size > 0
    with pytest.raises(SystemExit):  # argparse: --plot without a history to draw
        bench.main(["--quick", "--plot", str(tmp_path / "img")])


@pytest.mark.slow
def test_density_benchmark_other_regularizers(tmp_path):
    """The opt-in stiffness / local / TayNODE / STEER / second-budget methods train and
    evaluate; a local or STEER method without a key and an unknown method are refused."""
    import json
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    bench = pytest.importorskip("cnf_density")
    methods = ["stiffness", "local", "taynode", "steer", "budget0.7"]
    argv = ["--quick", "--datasets", "moons", "--methods", *methods, "--depth", "1"]
    argv += ["--steps", "2", "--steer-b", "0.3", "--no-overhead", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in res["records"]] == methods
    for r in res["records"]:
        assert np.isfinite(r["test_nll"]) and r["nfe_log_prob"] > 0 and r["nfe_sample"] > 0
    assert [r["weight"] for r in res["records"]] == [0.01, 0.01, 0.01, 0.3, 0.01]
    (local,) = bench.regularizers("local", 0.01, jr.key(0))
    assert isinstance(local, ndes.LocalErrorEstimate) and local.weight == 0.01
    (steer,) = bench.regularizers("steer", 0.01, jr.key(0), steer_b=0.3)
    assert isinstance(steer, ndes.RandomEndTime) and steer.b == 0.3
    with pytest.raises(ValueError, match="method='local' draws a random time"):
        bench.regularizers("local", 0.01)
    with pytest.raises(ValueError, match="method='steer' draws a random time"):
        bench.regularizers("steer", 0.01)
    with pytest.raises(ValueError, match="method='nope' must be one of"):
        bench.regularizers("nope", 0.01)
