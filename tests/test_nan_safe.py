"""ndes.fit never applies a non-finite update: on_nonfinite='raise' (default) / 'skip', and what
happens when a solve reaches max_steps during training."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ndes
from ndes.train import fit, list_checkpoints, load_checkpoint, read_metrics

from .train_helpers import _assert_bitwise, _fit, _mlp, _params, mse_loss


def nan_at(*bad_steps, where="loss"):
    """An MSE loss that is NaN (where='loss') or has a NaN gradient only (where='grad') when
    `train_step` is one of `bad_steps` (0-based: train_step s computes step s + 1)."""
    bad = jnp.asarray(bad_steps)

    def loss_fn(model, batch, *, key, regularizers, train_step):
        loss, aux = mse_loss(
            model, batch, key=key, regularizers=regularizers, train_step=train_step
        )
        hit = jnp.any(train_step == bad)
        if where == "loss":
            return jnp.where(hit, jnp.nan, loss), aux
        # d/dp 0 * sqrt(p - p) = 0 * inf * 0 = NaN, while the value stays 0 + loss.
        w = model.layers[0].weight[0, 0]
        extra = jax.lax.cond(hit, lambda w: 0.0 * jnp.sqrt(w - w), lambda w: 0.0 * w, w)
        return loss + extra, aux

    return loss_fn


def _model_at(ckpt_dir, step, like_steps=0):
    """The model in checkpoint `step` of `ckpt_dir`."""
    state = ndes.train.init_state(_mlp(), optax.adam(1e-2), jax.random.key(1))
    path = dict(list_checkpoints(ckpt_dir))[step]
    return load_checkpoint(path, state)[0].model


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    straight = _fit(steps=5)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(
        FloatingPointError, match=r"non-finite \(NaN/inf\) value at step 6: loss"
    ) as e:
        _fit(steps=10, loss_fn=nan_at(5), checkpoint_dir=ckpt, log_path=tmp_path / "m.jsonl")
    assert any("step_000000005.json" in n and "resume=True" in n for n in e.value.__notes__)
    # The last good step is checkpointed and equals the uninterrupted run after 5 steps.
    assert [s for s, _ in list_checkpoints(ckpt)] == [5]
    _assert_bitwise(_model_at(ckpt, 5), straight.model)
    assert [r["step"] for r in read_metrics(tmp_path / "m.jsonl")] == [1, 2, 3, 4, 5]


def test_nan_gradient_with_finite_loss_is_caught_and_names_the_leaf():
    with pytest.raises(FloatingPointError, match=r"step 3: the gradient of .*layers\[0\]\.weight"):
        _fit(steps=6, loss_fn=nan_at(2, where="grad"))


def test_first_step_nan_writes_no_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(FloatingPointError, match="step 1") as e:
        _fit(steps=3, loss_fn=nan_at(0), checkpoint_dir=ckpt)
    assert list_checkpoints(ckpt) == []
    assert any("not checkpointed" in n for n in e.value.__notes__)


def test_skip_drops_the_update_counts_it_and_moves_on(tmp_path):
    seen = {}

    def record(step, state, rec):
        seen[step] = (_params(state.model), int(state.skipped_steps))

    res = _fit(
        steps=8,
        loss_fn=nan_at(2, 3),
        on_nonfinite="skip",
        callbacks=[record],
        log_path=tmp_path / "m.jsonl",
    )
    assert int(res.state.step) == 8 and int(res.state.skipped_steps) == 2
    assert int(res.state.skip_streak) == 0
    # Steps 3 and 4 were dropped: the parameters after them equal those after step 2.
    for s in (3, 4):
        for a, b in zip(seen[s][0], seen[2][0], strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(seen[5][0][0]), np.asarray(seen[4][0][0]))
    assert all(np.all(np.isfinite(np.asarray(p))) for p in _params(res.model))
    recs = read_metrics(tmp_path / "m.jsonl")
    assert [r["skipped_steps"] for r in recs] == [0, 0, 1, 2, 2, 2, 2, 2]
    assert recs[2]["loss"] is None  # the NaN loss is logged as null (JSON has no NaN)
    assert res.traces["train_step"] == 1


def test_skip_gives_up_after_max_skips_in_a_row():
    res = _fit(steps=6, loss_fn=nan_at(1, 2), on_nonfinite="skip", max_skips=2)
    assert int(res.state.skipped_steps) == 2
    with pytest.raises(FloatingPointError, match=r"step 3 \(2 non-finite steps in a row"):
        _fit(steps=6, loss_fn=nan_at(1, 2), on_nonfinite="skip", max_skips=1)


def test_skip_resume_is_bitwise(tmp_path):
    loss_fn = nan_at(2, 6)
    straight = _fit(steps=10, loss_fn=loss_fn, on_nonfinite="skip")

    def stop_at_4(step, state, record):
        if step == 4:
            raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt"
    with pytest.warns(UserWarning, match="interrupted"):
        _fit(
            steps=10,
            loss_fn=loss_fn,
            on_nonfinite="skip",
            checkpoint_dir=ckpt,
            callbacks=[stop_at_4],
        )
    resumed = _fit(steps=10, loss_fn=loss_fn, on_nonfinite="skip", checkpoint_dir=ckpt, resume=True)
    for a, b in zip(
        jax.tree_util.tree_leaves(straight.state),
        jax.tree_util.tree_leaves(resumed.state),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(resumed.state.skipped_steps) == 2


def test_nonfinite_argument_errors():
    with pytest.raises(ValueError, match="on_nonfinite='ignore'.*'raise'.*'skip'"):
        _fit(steps=1, on_nonfinite="ignore")
    with pytest.raises(ValueError, match="max_skips=-1"):
        _fit(steps=1, max_skips=-1)


# ---------------------------------------------------------------------------------------
# A solve that reaches max_steps during training


class Oscillator(eqx.Module):
    omega: jax.Array

    def __call__(self, t, y, args):
        return jnp.stack([y[1], -(self.omega**2) * y[0]])


def _solve_loss(throw):
    def loss_fn(model, batch, *, key, regularizers, train_step):
        # From train_step 3 on the horizon is 30x longer: 16 steps no longer suffice.
        t1 = jnp.where(train_step >= 3, 30.0, 1.0)
        sol = ndes.diffeqsolve(
            diffrax.ODETerm(model),
            diffrax.Tsit5(),
            0.0,
            t1,
            0.1,
            jnp.array([1.0, 0.0]),
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
            max_steps=16,
            throw=throw,
            regularizers=regularizers,
            train_step=train_step,
        )
        y_end = sol.ys[-1]
        return jnp.sum((y_end - batch[0]) ** 2), ndes.train.solution_aux(sol)

    return loss_fn


def _osc_fit(tmp_path, throw, **kw):
    data = (np.zeros((4, 2)),)
    return fit(
        Oscillator(jnp.array(1.0)),
        data,
        _solve_loss(throw),
        optax.sgd(1e-3),
        key=jax.random.key(0),
        batch_size=1,
        steps=6,
        progress=False,
        checkpoint_dir=tmp_path / "ckpt",
        **kw,
    )


def test_max_steps_with_throw_raises_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(eqx.EquinoxRuntimeError, match="maximum number of solver steps") as e:
        _osc_fit(tmp_path, throw=True)
    assert any("step 4 of 6" in n and "step_000000003.json" in n for n in e.value.__notes__)
    assert [s for s, _ in list_checkpoints(tmp_path / "ckpt")] == [3]


def test_max_steps_without_throw_is_a_nonfinite_loss(tmp_path):
    with pytest.raises(FloatingPointError, match=r"a solve failed in 100 % .* at step 4"):
        _osc_fit(tmp_path, throw=False)
    res = _osc_fit(tmp_path / "skip", throw=False, on_nonfinite="skip", max_skips=5)
    assert int(res.state.skipped_steps) == 3
    assert np.isfinite(float(res.model.omega))
