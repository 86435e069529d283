"""ndes.fit's jitted steps (train/_step.py): one trace for every epoch and weight schedule,
evaluation without regularizers, uneven evaluation batches, a fresh key per step for keyed
regularizers."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ndes.train import (
    BudgetWeight,
)

from .train_helpers import (
    ToyReg,
    _fit,
    _regression_data,
    mse_loss,
)


def test_fit_trains_and_never_recompiles(tmp_path):
    compiles = []
    listener = lambda event, duration, **kw: compiles.append(event)  # noqa: E731
    schedule = optax.linear_schedule(0.0, 1e-2, 8)
    after_epoch1 = []

    def callback(step, state, record):
        if step == 4:  # end of the first epoch (32 examples / batch 8)
            after_epoch1.append(len(compiles))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        result = _fit(
            epochs=4,
            regularizers=(
                ToyReg(schedule),
                ToyReg(BudgetWeight(target_nfe=5.0, lr=0.01, warmup=2, init=0.1, learned=0.0)),
            ),
            callbacks=[callback],
        )
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    # One trace of the train step for 4 epochs while a schedule and a BudgetWeight change.
    assert result.traces["train_step"] == 1
    after = [e for e in compiles[after_epoch1[0] :] if e.endswith("backend_compile_duration")]
    assert after == []
    weights = [r["budget_weights"]["ToyReg"] for r in result.history]
    # Two warm-up steps at 0 (learned=0: no wait for the loss), then init, then it rises
    # (NFE 7 > 5).
    assert weights[0] == weights[1] == 0.0 and weights[2] == pytest.approx(0.1)
    assert weights[-1] > weights[3] > weights[2]
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0]
    assert int(result.state.step) == 16
    assert not result.interrupted and result.checkpoint is None


def test_evaluation_runs_without_regularizers():
    x, y = _regression_data()
    seen = []

    def loss_fn(model, batch, *, key, regularizers, train_step):
        seen.append(len(regularizers))
        return mse_loss(model, batch, key=key, regularizers=regularizers, train_step=train_step)

    result = _fit(
        steps=3, loss_fn=loss_fn, regularizers=(ToyReg(10.0),), eval_data=(x, y), eval_batch_size=32
    )
    assert sorted(seen) == [0, 1]  # traced once for training (1 reg) and once for eval (0)
    rec = result.history[-1]
    assert "eval_penalty" not in rec and "eval_penalty_terms" not in rec
    direct = jnp.mean((jax.vmap(result.model)(x) - y) ** 2)
    np.testing.assert_allclose(rec["eval_loss"], float(direct), rtol=1e-12)
    assert rec["penalty"] > 0


def test_eval_fn_and_uneven_eval_batches():
    x, y = _regression_data()

    def eval_fn(model, batch, *, key):
        xb, yb = batch
        return {"mae": jnp.abs(jax.vmap(model)(xb) - yb)}

    result = _fit(steps=2, eval_data=(x[:10], y[:10]), eval_fn=eval_fn, eval_batch_size=4)
    direct = jnp.mean(jnp.abs(jax.vmap(result.model)(x[:10]) - y[:10]))
    np.testing.assert_allclose(result.history[-1]["eval_mae"], float(direct), rtol=1e-12)


class KeyedReg(eqx.Module):
    weight: float
    key: jax.Array

    @property
    def name(self):
        return "KeyedReg"


def test_fit_gives_keyed_regularizers_a_fresh_key_each_step():
    def loss_fn(model, batch, *, key, regularizers, train_step):
        x, y = batch
        loss = jnp.mean((jax.vmap(model)(x) - y) ** 2)
        aux = {"penalty": 0.0}
        for r in regularizers:
            aux["draw"] = jax.random.uniform(r.key)
        return loss, aux

    key = jax.random.key(7)
    result = _fit(steps=4, loss_fn=loss_fn, regularizers=(KeyedReg(1.0, key),))
    draws = [r["draw"] for r in result.history]
    expected = [float(jax.random.uniform(jax.random.fold_in(key, s))) for s in range(4)]
    np.testing.assert_allclose(draws, expected, rtol=1e-6)
    assert len(set(draws)) == 4
