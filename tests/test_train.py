"""ndes.fit and ndes.train: one jitted step, metrics, BudgetWeight, checkpoints, data parallel."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ndes
from ndes.train import (
    BudgetWeight,
    CheckpointError,
    fit,
    init_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
    solution_aux,
)

# ---------------------------------------------------------------------------------------
# Tiny problems: an MLP regression (compiles in well under a second) and a toy "cost"
# problem whose NFE is a known function of one parameter.


def _regression_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = np.sin(x[:, :1]) + 0.5 * x[:, 1:]
    return x, y


def _mlp(seed=0, width=8):
    return eqx.nn.MLP(2, 1, width, 1, key=jax.random.key(seed))


class ToyReg(eqx.Module):
    """A stand-in regularizer: its (resolved) weight scales `sum(params**2)`."""

    weight: Any

    @property
    def name(self):
        return "ToyReg"


def _weight(regularizers, train_step):
    w = 0.0
    for r in regularizers:
        w = w + (r.weight(train_step) if callable(r.weight) else r.weight)
    return w


def mse_loss(model, batch, *, key, regularizers, train_step):
    x, y = batch
    pred = jax.vmap(model)(x)
    aux = {}
    if regularizers:
        sq = sum(jnp.sum(p**2) for p in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)))
        aux["penalty"] = _weight(regularizers, train_step) * sq
        aux["penalty_terms"] = {"ToyReg": sq}
    # Fake, but per-example counters, to check that fit averages them.
    aux["num_fevals"] = jnp.full(x.shape[0], 7.0)
    aux["num_accepted_steps"] = 2
    aux["num_rejected_steps"] = 0
    return jnp.mean((pred - y) ** 2), aux


def _params(model):
    return jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))


def _assert_bitwise(m1, m2):
    for a, b in zip(_params(m1), _params(m2), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _fit(**kw):
    x, y = _regression_data()
    args = dict(key=jax.random.key(1), batch_size=8, progress=False)
    args.update(kw)
    model = args.pop("model", None) or _mlp()
    return fit(
        model,
        args.pop("data", (x, y)),
        args.pop("loss_fn", mse_loss),
        args.pop("optimizer", optax.adam(1e-2)),
        **args,
    )


# ---------------------------------------------------------------------------------------
# The jitted step, evaluation, metrics, progress bar


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


def test_metrics_jsonl_one_line_per_logged_step(tmp_path):
    x, y = _regression_data()
    log = tmp_path / "m.jsonl"
    result = _fit(
        steps=9,
        log_every=2,
        log_path=log,
        regularizers=(ToyReg(1e-3),),
        eval_data=(x[:12], y[:12]),
        eval_every=4,
        run_name="toy",
    )
    recs = read_metrics(log)
    assert [r["step"] for r in recs] == [2, 4, 6, 8, 9]
    assert recs == json.loads(json.dumps(result.history))
    for r in recs:
        for k in (
            "loss",
            "penalty",
            "penalty_terms",
            "num_fevals",
            "num_accepted_steps",
            "num_rejected_steps",
            "wall_time",
            "step",
            "epoch",
        ):
            assert k in r, k
        assert r["run"] == "toy"
        assert r["num_fevals"] == 7.0 and r["num_accepted_steps"] == 2.0
        assert r["penalty_terms"]["ToyReg"] > 0
    assert [r["step"] for r in recs if "eval_loss" in r] == [4, 8, 9]
    walls = [r["wall_time"] for r in recs]
    assert walls == sorted(walls)
    # A second run into the same log refuses to overwrite it.
    with pytest.raises(FileExistsError, match="already exists"):
        _fit(steps=2, log_path=log)


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


# ---------------------------------------------------------------------------------------
# BudgetWeight


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


class Scalar(eqx.Module):
    a: jax.Array


def toy_cost_loss(model, batch, *, key, regularizers, train_step):
    """Task pulls a to 2; the 'solver cost' grows as 10 + 40 a^2; penalty w a^2."""
    a = model.a
    aux = {"num_fevals": 10.0 + 40.0 * a**2}
    if regularizers:
        aux["penalty"] = _weight(regularizers, train_step) * a**2
        aux["penalty_terms"] = {"ToyReg": a**2}
    return jnp.mean((a - batch) ** 2), aux


# ---------------------------------------------------------------------------------------
# Checkpoints and resume


def test_resume_after_interrupt_is_bitwise(tmp_path):
    total = 10  # 32 examples / 8 = 4 steps per epoch: crosses two epoch boundaries
    straight = _fit(steps=total, log_path=tmp_path / "a.jsonl")

    def stop_at_6(step, state, record):
        if step == 6:
            raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt"
    log = tmp_path / "b.jsonl"
    with pytest.warns(UserWarning, match="interrupted.*after step 6.*resume=True"):
        first = _fit(steps=total, checkpoint_dir=ckpt, log_path=log, callbacks=[stop_at_6])
    assert first.interrupted
    assert first.checkpoint == ckpt / "step_000000006.json"
    assert int(first.state.step) == 6
    resumed = _fit(steps=total, checkpoint_dir=ckpt, log_path=log, resume=True)
    assert not resumed.interrupted and int(resumed.state.step) == total
    _assert_bitwise(straight.model, resumed.model)
    for a, b in zip(
        jax.tree_util.tree_leaves(straight.state),
        jax.tree_util.tree_leaves(resumed.state),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The resumed log continues the interrupted one: same records apart from wall time.
    drop = lambda recs: [{k: v for k, v in r.items() if k != "wall_time"} for r in recs]  # noqa: E731
    assert drop(read_metrics(log)) == drop(read_metrics(tmp_path / "a.jsonl"))
    assert drop(resumed.history) == drop(straight.history)


def test_resume_from_periodic_checkpoint_and_keep_last(tmp_path):
    ckpt = tmp_path / "ckpt"
    _fit(steps=7, checkpoint_dir=ckpt, checkpoint_every=2, keep_last=2)
    assert [s for s, _ in list_checkpoints(ckpt)] == [6, 7]
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "step_000000006.eqx",
        "step_000000006.json",
        "step_000000007.eqx",
        "step_000000007.json",
    ]
    # Continue to 12 steps; equals a straight 12-step run.
    more = _fit(steps=12, checkpoint_dir=ckpt, resume=True, checkpoint_every=2, keep_last=2)
    _assert_bitwise(more.model, _fit(steps=12).model)
    assert [s for s, _ in list_checkpoints(ckpt)] == [10, 12]
    # Without resume=True an existing checkpoint directory is refused.
    with pytest.raises(FileExistsError, match="resume=True"):
        _fit(steps=12, checkpoint_dir=ckpt)
    with pytest.raises(ValueError, match="at step 12, beyond steps=5"):
        _fit(steps=5, checkpoint_dir=ckpt, resume=True)


def _state_at(step=3, model=None):
    state = init_state(model or _mlp(), optax.adam(1e-2), jax.random.key(0))
    return eqx.tree_at(lambda s: s.step, state, jnp.asarray(step, jnp.int32))


def test_checkpoint_roundtrip_and_no_overwrite(tmp_path):
    state = _state_at(3)
    path = save_checkpoint(tmp_path, state, config_hash="abc", extra={"note": 1})
    assert path == latest_checkpoint(tmp_path) == tmp_path / "step_000000003.json"
    loaded, meta = load_checkpoint(tmp_path, _state_at(0, _mlp(seed=5)))
    assert meta["step"] == 3 and meta["config_hash"] == "abc" and meta["note"] == 1
    for a, b in zip(
        jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(loaded), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(CheckpointError, match="already exists and will not be overwritten"):
        save_checkpoint(tmp_path, state)
    with pytest.raises(ValueError, match="keep_last=0"):
        save_checkpoint(tmp_path / "x", state, keep_last=0)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "empty", state)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _state_at(3), keep_last=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def crash(src, dst):
        raise OSError("simulated crash between write and replace")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(tmp_path, _state_at(4), keep_last=1)
    monkeypatch.undo()
    # The old checkpoint survives untouched (keep_last=1 did not delete it), no temp files
    # are left behind, and the failed step does not count as a checkpoint.
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3]
    loaded, _ = load_checkpoint(tmp_path, _state_at(0))
    assert int(loaded.step) == 3


def test_crash_after_leaves_before_metadata(tmp_path, monkeypatch):
    """The leaves file is in place but the metadata is not: the step does not count."""
    save_checkpoint(tmp_path, _state_at(3))
    real = os.replace

    def crash_on_json(src, dst):
        if str(dst).endswith(".json"):
            raise OSError("simulated crash")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_json)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(tmp_path, _state_at(4))
    monkeypatch.undo()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3]
    # The orphan leaves file does not block a later save of that step.
    save_checkpoint(tmp_path, _state_at(4))
    assert int(load_checkpoint(tmp_path, _state_at(0))[0].step) == 4


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    ckpt = tmp_path / "ckpt"
    _fit(steps=2, checkpoint_dir=ckpt)
    leaves = ckpt / "step_000000002.eqx"
    raw = bytearray(leaves.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    leaves.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="step_000000002.eqx is corrupted.*left unchanged"):
        _fit(steps=4, checkpoint_dir=ckpt, resume=True)
    assert leaves.read_bytes() == bytes(raw)
    leaves.write_bytes(bytes(raw[:100]))
    with pytest.raises(CheckpointError, match="is truncated"):
        _fit(steps=4, checkpoint_dir=ckpt, resume=True)
    (ckpt / "step_000000002.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="metadata .*step_000000002.json is corrupted"):
        _fit(steps=4, checkpoint_dir=ckpt, resume=True)
    (ckpt / "step_000000002.json").write_text("{}")
    with pytest.raises(CheckpointError, match="is not an ndes checkpoint"):
        _fit(steps=4, checkpoint_dir=ckpt, resume=True)
    leaves.unlink()
    (ckpt / "step_000000002.json").write_text("")
    with pytest.raises(CheckpointError, match="corrupted"):
        _fit(steps=4, checkpoint_dir=ckpt, resume=True)


def test_mismatched_checkpoint_is_refused_and_kept(tmp_path):
    ckpt = tmp_path / "ckpt"
    log = tmp_path / "m.jsonl"
    _fit(steps=2, checkpoint_dir=ckpt, log_path=log)
    files = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    log_before = log.read_bytes()
    with pytest.raises(CheckpointError, match="different model/optimiser structure.*shape"):
        _fit(steps=4, checkpoint_dir=ckpt, log_path=log, resume=True, model=_mlp(width=16))
    with pytest.raises(CheckpointError, match="different model/optimiser structure"):
        _fit(steps=4, checkpoint_dir=ckpt, log_path=log, resume=True, optimizer=optax.sgd(0.1))
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == files
    assert log.read_bytes() == log_before


def test_resume_with_other_config_warns(tmp_path):
    ckpt = tmp_path / "ckpt"
    _fit(steps=2, checkpoint_dir=ckpt)
    with pytest.warns(UserWarning, match="different configuration"):
        _fit(steps=3, checkpoint_dir=ckpt, resume=True, batch_size=4)


def test_keyboard_interrupt_saves_checkpoint(tmp_path):
    def stop(step, state, record):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="interrupted"):
        result = _fit(steps=10, run_dir=tmp_path, callbacks=[stop])
    assert result.interrupted and int(result.state.step) == 3
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [3]
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    _assert_bitwise(result.model, load_checkpoint(tmp_path / "checkpoints", _state_at(0))[0].model)


def test_keyboard_interrupt_between_steps(tmp_path, monkeypatch):
    """Ctrl-C while the next batch is being prepared: the last completed step is saved."""
    import ndes.train._fit_loop as fit_module

    real, calls = fit_module.shard_batch, []

    def shard_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "shard_batch", shard_batch)
    with pytest.warns(UserWarning, match="after step 4"):
        result = _fit(steps=10, run_dir=tmp_path, key=jax.random.PRNGKey(1))
    monkeypatch.undo()
    assert result.interrupted and result.checkpoint.name == "step_000000004.json"
    assert [r["step"] for r in result.history] == [1, 2, 3, 4]
    resumed = _fit(steps=6, run_dir=tmp_path, resume=True, key=jax.random.PRNGKey(1))
    # A legacy uint32 key gives the same run as the typed key with the same seed.
    _assert_bitwise(resumed.model, _fit(steps=6).model)


# ---------------------------------------------------------------------------------------
# Data parallel on 8 virtual CPU devices


_DP_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.config.update("jax_enable_x64", True)
    import equinox as eqx, jax.numpy as jnp, numpy as np, optax
    from ndes.train import fit, data_parallel_mesh

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)); y = np.sin(x[:, :1]) + 0.5 * x[:, 1:]

    def loss_fn(model, batch, *, key, regularizers, train_step):
        xb, yb = batch
        noise = 0.01 * jax.random.normal(key, yb.shape)  # keys must agree too
        return jnp.mean((jax.vmap(model)(xb) - yb - noise) ** 2), {"num_fevals": 3.0}

    def run(mesh, batch_size=16):
        model = eqx.nn.MLP(2, 1, 8, 1, key=jax.random.key(0))
        return fit(model, (x, y), loss_fn, optax.adam(1e-2), key=jax.random.key(1),
                   batch_size=batch_size, steps=3, mesh=mesh, progress=False,
                   eval_data=(x[:20], y[:20]), eval_batch_size=16)

    out = {"devices": jax.device_count()}
    one = run(data_parallel_mesh(jax.devices()[:1]))
    eight = run(None)
    def leaves(m):
        return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_array))]

    def maxdiff(m1, m2):
        return max(float(np.max(np.abs(a - b))) for a, b in zip(leaves(m1), leaves(m2)))

    out["param_diff"] = maxdiff(one.model, eight.model)
    out["param_change"] = maxdiff(one.model, eqx.nn.MLP(2, 1, 8, 1, key=jax.random.key(0)))
    out["loss_1"] = [r["loss"] for r in one.history]
    out["loss_8"] = [r["loss"] for r in eight.history]
    out["eval_1"] = one.history[-1]["eval_loss"]
    out["eval_8"] = eight.history[-1]["eval_loss"]
    out["sharding"] = str(eight.model.layers[0].weight.sharding)
    try:
        run(None, batch_size=12)
    except ValueError as e:
        out["error"] = str(e)
    print("RESULT" + json.dumps(out))
    """
)


def test_data_parallel_matches_one_device():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "-c", _DP_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=Path(__file__).parent.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    out = json.loads(line[len("RESULT") :])
    assert out["devices"] == 8
    assert out["param_change"] > 1e-3  # training did something
    assert out["param_diff"] < 1e-12
    np.testing.assert_allclose(out["loss_8"], out["loss_1"], rtol=1e-12)
    np.testing.assert_allclose(out["eval_8"], out["eval_1"], rtol=1e-12)
    assert "batch_size=12 is not divisible by the 8 devices" in out["error"]
    assert "multiple of 8" in out["error"]


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
