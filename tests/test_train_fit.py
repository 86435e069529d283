"""ndes.fit end to end and its arguments (train/_fit.py, train/_fit_options.py): the progress
bar, a real neural-ODE solve with a BudgetWeight, argument errors, the budget shorthand."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ndes
from ndes.train import (
    BudgetWeight,
    fit,
    read_metrics,
    solution_aux,
)

from .train_helpers import (
    Scalar,
    ToyReg,
    _fit,
    toy_cost_loss,
)


def test_progress_bar_quiet_when_not_a_terminal(capsys):
    _fit(steps=3, progress=None)
    assert capsys.readouterr().err == ""
    _fit(steps=3, progress=True, run_name="shown")
    assert "shown" in capsys.readouterr().err


def test_neural_ode_end_to_end(tmp_path):
    """A real solve: counters from ndes.diffeqsolve, penalty, BudgetWeight below the cost."""
    ts = jnp.linspace(0.0, 1.0, 4)
    rng = np.random.default_rng(0)
    y0 = rng.normal(size=(16, 2))
    ys = np.stack([y0 * np.exp(-t) for t in np.asarray(ts)], axis=1)
    model = ndes.NeuralODE.mlp(2, 8, 1, key=jax.random.key(0))

    def loss_fn(m, batch, *, key, regularizers, train_step):
        out = m(ts, batch["y0"], regularizers=regularizers, train_step=train_step)
        return jnp.mean((out.ys - batch["ys"]) ** 2), solution_aux(out)

    # warm-up 1 step, no wait for the loss to fall
    regs = (ndes.ErrorEstimate(weight=BudgetWeight(target_nfe=8, lr=0.5, learned=0.0)),)
    result = fit(
        model,
        {"y0": y0, "ys": ys},
        loss_fn,
        optax.adam(1e-2),
        key=jax.random.key(1),
        batch_size=8,
        steps=3,
        regularizers=regs,
        eval_data={"y0": y0, "ys": ys},
        run_dir=tmp_path,
        progress=False,
    )
    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3]
    for r in recs:
        assert r["num_fevals"] > 8 and r["num_accepted_steps"] >= 1
        assert "num_rejected_steps" in r and "ErrorEstimate" in r["penalty_terms"]
    w = [r["budget_weights"]["ErrorEstimate"] for r in recs]
    assert w[0] == 0.0 and w[2] > w[1] > 0.0  # NFE above the budget: the weight rises
    assert recs[-1]["eval_num_fevals"] > 0 and "eval_penalty" not in recs[-1]
    assert result.checkpoint == tmp_path / "checkpoints" / "step_000000003.json"


def test_fit_argument_errors():
    with pytest.raises(ValueError, match="exactly one of steps"):
        _fit()
    with pytest.raises(ValueError, match="exactly one of steps"):
        _fit(steps=2, epochs=1)
    with pytest.raises(ValueError, match="batch_size=0"):
        _fit(steps=2, batch_size=0)
    with pytest.raises(ValueError, match="larger than the 32 examples"):
        _fit(steps=2, batch_size=33)
    with pytest.raises(ValueError, match="disagree on the number of examples"):
        _fit(steps=2, data=(np.zeros((4, 2)), np.zeros((5, 1))))
    with pytest.raises(ValueError, match="needs eval_data"):
        _fit(steps=2, eval_fn=lambda m, b, *, key: {})
    with pytest.raises(ValueError, match="needs eval_data"):
        _fit(steps=2, eval_every=1)
    with pytest.raises(ValueError, match="resume=True\\) needs checkpoint_dir"):
        _fit(steps=2, resume=True)
    with pytest.raises(ValueError, match="no 'penalty'"):
        _fit(
            steps=2,
            regularizers=(ToyReg(1.0),),
            loss_fn=lambda m, b, **kw: (jnp.mean(jax.vmap(m)(b[0])), {}),
        )
    with pytest.raises(ValueError, match="no 'num_fevals'"):
        _fit(
            steps=2,
            regularizers=(ToyReg(BudgetWeight(target_nfe=10.0)),),
            loss_fn=lambda m, b, **kw: (jnp.mean(jax.vmap(m)(b[0])), {"penalty": 0.0}),
        )
    with pytest.raises(TypeError, match="must return a pair"):
        _fit(steps=2, loss_fn=lambda m, b, **kw: jnp.mean(jax.vmap(m)(b[0])))
    with pytest.raises(TypeError, match="aux a dict"):
        _fit(steps=2, loss_fn=lambda m, b, **kw: (jnp.mean(jax.vmap(m)(b[0])), 3.0))
    with pytest.raises(ValueError, match="must be a PRNG key"):
        _fit(steps=2, key=jnp.zeros(2))
    with pytest.raises(ValueError, match="nfe_budget.*regularizers. is empty"):
        _fit(steps=2, nfe_budget=10.0)


def test_budget_shorthand_in_fit():
    data = np.full((4,), 2.0)
    kw = dict(key=jax.random.key(0), batch_size=4, steps=3, progress=False)
    result = fit(
        Scalar(jnp.asarray(0.0)),
        data,
        toy_cost_loss,
        optax.sgd(0.1),
        regularizers=(ToyReg(0.2),),
        nfe_budget=5.0,
        budget_lr=1.0,
        **kw,
    )
    # nfe_budget keeps the numeric weight as init (no warm-up) and adapts it in log space:
    # over budget, log w rises by lr (1) times log(NFE / budget) = log 2.
    w = [r["budget_weights"]["ToyReg"] for r in result.history]
    assert w[0] == 0.2 and w[1] == pytest.approx(0.2 * np.exp(np.log(10.0 / 5.0)))
    with pytest.raises(ValueError, match="warmup=50 unregularized steps, but training has only 3"):
        fit(
            Scalar(jnp.asarray(0.0)),
            data,
            toy_cost_loss,
            optax.sgd(0.1),
            regularizers=(ToyReg(0.2),),
            budget=BudgetWeight(target=0.5, warmup=50),
            **kw,
        )
    with pytest.raises(ValueError, match="must be an ndes.BudgetWeight"):
        fit(Scalar(jnp.asarray(0.0)), data, toy_cost_loss, optax.sgd(0.1), budget=0.5, **kw)
