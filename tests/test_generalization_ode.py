"""The ODE family of the generalization suite runs end to end (quick sizes; no accuracy
claims): one problem with vanilla, the hand-loop cost budget and LocalErrorEstimate."""

import math
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import _gen_ode  # noqa: E402
from _gen_common import SuiteConfig  # noqa: E402

FIELDS = {
    "family": str,
    "problem": str,
    "model": str,
    "missing": float,
    "method": str,
    "seed": int,
    "metric": str,
    "value": float,
    "higher_is_better": bool,
    "nfe_per_prediction": float,
    "observations": int,
    "train_s": float,
    "steps": int,
    "note": str,
}


@pytest.mark.slow  # three compiles of a gradient through a solve: ~100 s on 2 cores
def test_ode_family_quick():
    assert {"vanderpol", "fitzhugh_nagumo", "lotka_volterra"} <= set(_gen_ode.PROBLEMS)
    cfg = SuiteConfig(quick=True)
    for method in ("vanilla", "budget", "LocalErrorEstimate"):
        records = _gen_ode.run("vanderpol", method, 0, cfg)
        assert len(records) == 1
        (r,) = records
        for name, kind in FIELDS.items():
            assert isinstance(r[name], kind), (method, name, r[name])
        assert (r["family"], r["problem"], r["method"], r["seed"]) == (
            "ode",
            "vanderpol",
            method,
            0,
        )
        assert r["metric"] == "test_mse" and r["higher_is_better"] is False
        assert math.isfinite(r["value"]) and r["value"] >= 0
        assert r["nfe_per_prediction"] > 0 and r["observations"] == 10
        assert 0 < r["steps"] <= 20 and r["train_s"] > 0
        if method == "budget":
            assert math.isfinite(r["budget_weight"]) and r["budget_weight"] >= 0
            assert r["budget_reference_nfe"] > 0
        else:
            assert "budget_weight" not in r and "budget_reference_nfe" not in r
