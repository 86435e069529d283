"""Checkpoints (train/_checkpoint.py): round trip, atomic writes, crashes between files,
corrupted and mismatched checkpoints."""

import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from ndes.train import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

from .train_helpers import (
    _fit,
    _mlp,
    _state_at,
)


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


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    """A writer killed between writing its temporary file and `os.replace` leaves
    `.step_*.tmp-PID` behind; the next save removes it (the writer is dead) and keeps the
    finished checkpoints, other writers' temps and unrelated files."""
    save_checkpoint(tmp_path, _state_at(3))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = child.pid
    stale = [
        tmp_path / f".step_000000004.eqx.tmp-{dead}",
        tmp_path / f".step_000000004.json.tmp-{dead}",
    ]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    alive = tmp_path / f".step_000000004.eqx.tmp-{os.getppid()}"  # a running process
    unrelated = [tmp_path / f".notes.tmp-{dead}", tmp_path / f"step_000000004.eqx.tmp-{dead}"]
    for p in [alive, *unrelated]:
        p.write_bytes(b"keep")
    finished = {p.name: p.read_bytes() for p in tmp_path.glob("step_000000003.*")}
    assert sorted(finished) == ["step_000000003.eqx", "step_000000003.json"]
    save_checkpoint(tmp_path, _state_at(5), keep_last=None)
    for p in stale:
        assert not p.exists(), p
    for p in [alive, *unrelated]:
        assert p.read_bytes() == b"keep", p
    assert {p.name: p.read_bytes() for p in tmp_path.glob("step_000000003.*")} == finished
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 5]
    loaded, _ = load_checkpoint(tmp_path / "step_000000003.json", _state_at(0))
    assert int(loaded.step) == 3


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
