"""Resuming ndes.fit and stopping it (train/_fit_resume.py, train/_fit_loop.py): bitwise
resume after Ctrl-C, periodic checkpoints with keep_last, another configuration, Ctrl-C
between steps."""

import jax
import numpy as np
import pytest

from ndes.train import (
    list_checkpoints,
    load_checkpoint,
    read_metrics,
)

from .train_helpers import (
    _assert_bitwise,
    _fit,
    _state_at,
)


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
