"""ndes.BudgetWeight: the scale-free cost budget (warm-up reference, start, log-space ascent)."""

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ndes
from ndes.train import BudgetState, BudgetWeight, fit


def _run(bw: BudgetWeight, nfes, losses=None, values=None):
    state = bw.init_state()
    out = [state]
    for i, n in enumerate(nfes):
        loss = None if losses is None else losses[i]
        value = None if values is None else values[i]
        state = bw.update(state, n, loss, value)
        out.append(state)
    return out


def test_warmup_reference_start_and_steps():
    bw = BudgetWeight(
        target=0.5, warmup=4, lr=0.1, release=0.5, average=0.0, loss_average=0.0,
        tolerance=None, learned=0.0, init_ratio=0.2,
    )  # fmt: skip
    nfes = [100.0, 120.0, 140.0, 160.0, 200.0, 70.0, 40.0]
    states = _run(bw, nfes, losses=[2.0] * 7, values=[4.0] * 7)
    w = [float(s.weight) for s in states]
    # Weight 0 for the warm-up's steps (the states used at steps 0..3).
    assert w[:4] == [0.0, 0.0, 0.0, 0.0]
    assert not bool(states[3].started) and bool(states[4].started)
    # Reference: the NFE's moving average at the start (no averaging here: the last NFE).
    np.testing.assert_allclose(float(states[4].reference_nfe), 160.0)
    np.testing.assert_allclose(float(bw.budget(states[4])), 80.0)
    # Start: init_ratio * |loss| / value, whatever the units.
    np.testing.assert_allclose(w[4], 0.2 * 2.0 / 4.0)
    # Over budget: log w rises by lr * e, e = clip(log(NFE / budget), -1, 1).
    i = np.log(0.1) + 0.1 * min(np.log(200 / 80), 1.0)
    np.testing.assert_allclose(w[5], np.exp(i), rtol=1e-6)
    # Under budget: it falls by release * e ...
    i += 0.5 * np.log(70 / 80)
    np.testing.assert_allclose(w[6], np.exp(i), rtol=1e-6)
    # ... but never below the start.
    np.testing.assert_allclose(w[7], 0.1, rtol=1e-6)
    assert int(states[-1].step) == 7 and int(states[-1].held) == 0


def test_waits_until_the_model_has_learned():
    """A budget switched on while the loss is still on its initial plateau would keep it
    there: the start waits until the loss has fallen by `learned` below its high."""
    bw = BudgetWeight(target=0.5, warmup=2, average=0.0, loss_average=0.0, learned=0.1)
    losses = [1.0, 1.02, 1.0, 0.95, 0.93, 0.85, 0.8]
    nfes = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
    states = _run(bw, nfes, losses, [1.0] * 7)
    started = [bool(s.started) for s in states]
    # The high is 1.02; 0.85 <= 0.9 * 1.02 is the first loss below it (update 5).
    assert started == [False] * 6 + [True, True]
    np.testing.assert_allclose(float(states[6].reference_nfe), 60.0)  # NFE at the start
    np.testing.assert_allclose(float(states[6].weight), 0.01 * 0.85 / 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(states[7].reference_nfe), 60.0)  # then frozen


def test_quality_guard_releases_the_weight():
    """Over budget, but the loss rose out of its band: the weight is released in proportion
    to how far out it is, and `held` counts those steps."""
    bw = BudgetWeight(
        target_nfe=10.0, init=1.0, lr=0.1, release=0.25, average=0.0, loss_average=0.0,
        tolerance=0.1, floor=0.0, learned=0.0,
    )  # fmt: skip
    assert bool(bw.init_state().started)
    states = _run(bw, [100.0] * 4, [1.0, 1.0, 1.15, 0.9], [1.0] * 4)
    w = [float(s.weight) for s in states]
    np.testing.assert_allclose(w[1:3], [np.exp(0.1), np.exp(0.2)], rtol=1e-6)
    # Loss 1.15 against best 1.0 and band 0.1: excess 0.5 -> e = -0.5.
    np.testing.assert_allclose(w[3], np.exp(0.2 - 0.25 * 0.5), rtol=1e-6)
    assert int(states[3].held) == 1
    # A new best (0.9) is inside the band: over budget again, the weight rises.
    np.testing.assert_allclose(w[4], np.exp(0.2 - 0.125 + 0.1), rtol=1e-6)
    np.testing.assert_allclose(float(states[4].loss_best), 0.9)
    # tolerance=None: the same losses never hold the weight.
    free = _run(dataclasses.replace(bw, tolerance=None), [100.0] * 4, [1.0, 1.0, 1.15, 0.9])
    np.testing.assert_allclose(float(free[4].weight), np.exp(0.4), rtol=1e-6)


def test_nfe_is_averaged():
    bw = BudgetWeight(target_nfe=10.0, init=1.0, lr=0.1, average=0.5, tolerance=None, learned=0.0)
    states = _run(bw, [10.0, 40.0])
    np.testing.assert_allclose(float(states[2].nfe_average), 0.5 * 10 + 0.5 * 40)
    np.testing.assert_allclose(float(states[2].weight), np.exp(0.1 * np.log(25 / 10)), rtol=1e-6)


def test_scale_free():
    """Scaling the loss and the penalty's units by any factor scales the start weight only
    by their ratio; the path of the weight relative to its start is the same."""
    bw = BudgetWeight(target_nfe=50.0, warmup=2, lr=0.05, loss_average=0.0)
    nfes = [80.0, 90.0, 120.0, 40.0, 55.0, 70.0]
    losses = [1.0, 0.8, 0.6, 0.5, 0.45, 0.6]
    base = _run(bw, nfes, losses, [1.0] * 6)
    scaled = _run(bw, nfes, [1e4 * x for x in losses], [1e-3] * 6)
    k = next(i for i, s in enumerate(base) if float(s.weight) > 0)
    rel = [float(s.weight) / float(base[k].weight) for s in base[k:]]
    rel_scaled = [float(s.weight) / float(scaled[k].weight) for s in scaled[k:]]
    np.testing.assert_allclose(rel, rel_scaled, rtol=1e-6)
    np.testing.assert_allclose(float(scaled[k].weight) / float(base[k].weight), 1e7, rtol=1e-6)
    assert [int(s.held) for s in base] == [int(s.held) for s in scaled]
    assert int(base[-1].held) == 1  # the last loss left the band, at any scale


def test_absolute_target_with_init_starts_at_once_and_clips():
    bw = BudgetWeight(
        target_nfe=10.0, init=0.5, lr=1.0, max_weight=2.0, tolerance=None, learned=0.0
    )
    assert bw.warmup_steps == 0
    states = _run(bw, [1000.0, 1000.0])
    assert float(states[0].weight) == 0.5
    np.testing.assert_allclose(float(states[1].weight), 0.5 * np.e)  # clip(log 100) = 1
    assert float(states[2].weight) == 2.0  # max_weight


def test_fractional_warmup_resolves_to_steps():
    bw = BudgetWeight(target=0.5)  # default: 40 % of training
    with pytest.raises(ValueError, match="in your own loop pass warmup=N steps"):
        _ = bw.warmup_steps
    assert bw.for_steps(200).warmup_steps == 80
    assert BudgetWeight(target=0.5, warmup=0.25).for_steps(200).warmup_steps == 50
    assert BudgetWeight(target=0.5, warmup=7).for_steps(200).warmup_steps == 7
    with pytest.raises(ValueError, match=r"warmup=1.5\) must be an int >= 1 .*or a fraction"):
        BudgetWeight(target=0.5, warmup=1.5)


def test_jit_and_no_gradient():
    bw = BudgetWeight(target=0.5, warmup=1, learned=0.0)
    state = bw.init_state()
    upd = jax.jit(bw.update)
    s1 = upd(state, 40.0, 1.0, 2.0)
    np.testing.assert_allclose(float(s1.weight), 0.01 * 1.0 / 2.0)
    g = jax.grad(lambda n: bw.update(s1, n, 1.0, 2.0).weight)(30.0)
    assert g == 0.0  # a dual variable: no gradient flows through it


def test_errors():
    with pytest.raises(ValueError, match="exactly one of target= .* or target_nfe="):
        BudgetWeight()
    with pytest.raises(ValueError, match="exactly one of target="):
        BudgetWeight(target=0.5, target_nfe=10)
    with pytest.raises(ValueError, match=r"target=1.5\) must be a fraction in \(0, 1\]"):
        BudgetWeight(target=1.5)
    with pytest.raises(ValueError, match=r"target=nan\) must be a fraction"):
        BudgetWeight(target=float("nan"))
    with pytest.raises(ValueError, match="target_nfe=0"):
        BudgetWeight(target_nfe=0)
    with pytest.raises(ValueError, match="lr=0"):
        BudgetWeight(target=0.5, lr=0)
    with pytest.raises(ValueError, match=r"lr=inf\) must be a positive number"):
        BudgetWeight(target=0.5, lr=float("inf"))
    with pytest.raises(ValueError, match=r"max_weight=inf\) must be a number"):
        BudgetWeight(target_nfe=10, init=1.0, max_weight=float("inf"))
    with pytest.raises(ValueError, match=r"init='1'\) must be a positive number"):
        BudgetWeight(target_nfe=10, init="1")
    # NumPy scalars of any float width are numbers (np.float32 used to be refused), stored
    # as Python floats (static fields: no array set as static)
    bw = BudgetWeight(target=np.float32(0.5), lr=np.float32(0.25), init_ratio=jnp.asarray(0.5))
    assert (bw.target, bw.lr, bw.init_ratio) == (0.5, 0.25, 0.5)
    assert all(type(v) is float for v in (bw.target, bw.lr, bw.init_ratio))
    with pytest.raises(ValueError, match="release=-1"):
        BudgetWeight(target=0.5, release=-1)
    with pytest.raises(ValueError, match=r"tolerance=-0.1\) must be a non-negative"):
        BudgetWeight(target=0.5, tolerance=-0.1)
    with pytest.raises(ValueError, match=r"learned=1.0\) must lie in \[0, 1\)"):
        BudgetWeight(target=0.5, learned=1.0)
    with pytest.raises(ValueError, match=r"loss_average=-1"):
        BudgetWeight(target=0.5, loss_average=-1)
    with pytest.raises(ValueError, match=r"average=1.0\) must lie in \[0, 1\)"):
        BudgetWeight(target=0.5, average=1.0)
    with pytest.raises(ValueError, match="warmup=0.*measures its reference"):
        BudgetWeight(target=0.5, warmup=0)
    with pytest.raises(ValueError, match="warmup=0.*init=None"):
        BudgetWeight(target_nfe=10, warmup=0)
    with pytest.raises(ValueError, match="init=-1"):
        BudgetWeight(target_nfe=10, init=-1)
    with pytest.raises(ValueError, match="init_ratio=0"):
        BudgetWeight(target=0.5, init_ratio=0)
    with pytest.raises(ValueError, match="max_weight=0.5"):
        BudgetWeight(target_nfe=10, init=1.0, max_weight=0.5)
    bw = BudgetWeight(target=0.5, warmup=1)
    with pytest.raises(ValueError, match="needs loss= .*tells when the model has learned"):
        bw.update(bw.init_state(), 10.0)
    with pytest.raises(ValueError, match=r"needs value= .*penalty_terms"):
        bw.update(bw.init_state(), 10.0, 1.0)
    with pytest.raises(ValueError, match="gets its value from its BudgetState"):
        bw(3)


class Scalar(eqx.Module):
    a: jax.Array


class ToyReg(eqx.Module):
    weight: Any

    @property
    def name(self):
        return "ToyReg"


def _toy(scale):
    """Task pulls a to 2 (loss scaled by `scale`, with an irreducible part: the targets are
    1 and 3); 'NFE' = 10 + 40 a^2; penalty w a^2."""

    def loss_fn(model, batch, *, key, regularizers, train_step):
        a = model.a
        aux = {"num_fevals": 10.0 + 40.0 * a**2}
        if regularizers:
            (reg,) = regularizers
            aux["penalty"] = reg.weight * a**2
            aux["penalty_terms"] = {"ToyReg": a**2}
        return scale * jnp.mean((a - batch) ** 2), aux

    return loss_fn


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_fit_meets_half_the_cost_at_any_loss_scale(scale):
    """One default (`target=0.5`, default lr and init) behaves the same whatever the loss's
    units: unregularized, a -> 2 and NFE -> 170. Without the guard the budget (half the
    warm-up NFE) is met; with it (the default), the loss stays in its band and the cost
    falls only as far as that allows."""
    kw = dict(
        key=jax.random.key(0), batch_size=4, steps=400, progress=False,
        regularizers=(ToyReg(1.0),),
    )  # fmt: skip
    data = np.array([1.0, 3.0, 1.0, 3.0])
    free = fit(
        Scalar(jnp.asarray(0.0)), data, _toy(scale), optax.sgd(0.1 / scale),
        budget=BudgetWeight(target=0.5, warmup=40, tolerance=None), **kw,
    )  # fmt: skip
    (bstate,) = free.state.budget_weights
    assert isinstance(bstate, BudgetState)
    ref = float(bstate.reference_nfe)
    assert 160.0 < ref < 171.0  # the warm-up got close to the unregularized a = 2
    nfe = np.array([r["num_fevals"] for r in free.history])
    np.testing.assert_allclose(nfe[-50:].mean(), 0.5 * ref, rtol=0.05)
    targets = [r["budget_targets"]["ToyReg"] for r in free.history[60:]]
    np.testing.assert_allclose(targets, 0.5 * ref, rtol=1e-6)
    free_loss = np.mean([r["loss"] for r in free.history[-50:]]) / scale
    assert free_loss > 1.3  # the budget's price, unguarded: (sqrt(75 / 80) - 2)^2 + 1
    # The default guard: the loss (1 at a = 2, scaled) may rise 10 % (its moving average,
    # so a batch's loss overshoots a little through the average's lag).
    guarded = fit(
        Scalar(jnp.asarray(0.0)), data, _toy(scale), optax.sgd(0.1 / scale),
        budget=BudgetWeight(target=0.5, warmup=40), **kw,
    )  # fmt: skip
    (g,) = guarded.state.budget_weights
    loss = np.array([r["loss"] for r in guarded.history]) / scale
    assert loss[-50:].mean() < 1.15 and loss[-50:].max() < 1.25
    nfe = np.array([r["num_fevals"] for r in guarded.history])
    assert 0.55 * ref < nfe[-50:].mean() < 0.95 * ref  # cheaper, but not the budget
    assert int(g.held) > 0


def test_public_name():
    assert ndes.BudgetWeight is BudgetWeight


def test_fit_names_missing_penalty_terms():
    def loss_fn(model, batch, *, key, regularizers, train_step):
        aux = {"num_fevals": 10.0 + 40.0 * model.a**2}
        if regularizers:
            aux["penalty"] = regularizers[0].weight * model.a**2  # no penalty_terms
        return jnp.mean((model.a - batch) ** 2), aux

    with pytest.raises(ValueError, match=r"no penalty_terms\['ToyReg'\].*solution_aux"):
        fit(
            Scalar(jnp.asarray(0.0)),
            np.full((4,), 2.0),
            loss_fn,
            optax.sgd(0.1),
            key=jax.random.key(0),
            batch_size=4,
            steps=10,
            progress=False,
            regularizers=(ToyReg(1.0),),
            budget=BudgetWeight(target=0.5, warmup=2),
        )
