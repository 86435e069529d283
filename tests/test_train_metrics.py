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
