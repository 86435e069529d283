"""The metrics log of ndes.fit (train/_metrics.py): one JSONL record per logged step."""

import json

import pytest

from ndes.train import (
    read_metrics,
)

from .train_helpers import (
    ToyReg,
    _fit,
    _regression_data,
)


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


def test_resume_removes_stale_temp_files_of_dead_writers(tmp_path):
    # A resume rewrite killed before its os.replace leaves `.<log>.tmp-PID`; the next
    # resume removes it once PID is gone, keeps a live writer's temp, and trims the log.
    import os
    import subprocess
    import sys

    from ndes.train._metrics import MetricsWriter

    log = tmp_path / "m.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3)))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    stale = tmp_path / f".m.jsonl.tmp-{child.pid}"
    alive = tmp_path / f".m.jsonl.tmp-{os.getppid()}"
    for p in (stale, alive):
        p.write_text("half a log")
    w = MetricsWriter(log, resume_step=2)
    w.close()
    assert not stale.exists()
    assert alive.read_text() == "half a log"
    assert [r["step"] for r in read_metrics(log)] == [1, 2]
