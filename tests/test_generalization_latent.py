"""The latent-SDE family of the generalization suite (`benchmarks/_gen_latent.py`) runs end to
end in quick mode and writes complete, finite records (no accuracy claims). The training run is
marked slow (compilation-bound); the loader and not-applicable checks are fast."""

import json
import math
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import _gen_latent as gen  # noqa: E402
from _gen_common import METHODS, SuiteConfig  # noqa: E402

FIELDS = (
    "family",
    "problem",
    "model",
    "missing",
    "method",
    "seed",
    "metric",
    "value",
    "higher_is_better",
    "nfe_per_prediction",
    "observations",
    "train_s",
    "steps",
    "developed_on",
    "note",
)


def test_problems_and_loaders():
    assert gen.PROBLEMS[0] == "Airline" and gen.DEVELOPED_ON == ("Airline",)
    assert len([p for p in gen.PROBLEMS if p not in gen.DEVELOPED_ON]) >= 3
    for p in gen.PROBLEMS:
        y = gen.load_series(p)
        assert y.ndim == 2 and len(y) >= 36 and math.isfinite(float(y.sum()))
    assert gen.load_series("Uschange").shape == (187, 5)
    d = gen.prepare("Uschange", SuiteConfig())
    assert d["values"].shape[1] == 5 and not d["log"]
    assert len(d["ts"]) < int(0.8 * 187)  # 30 % of the training points dropped
    assert abs(float(d["values"].mean())) < 0.2  # standardised with train statistics


@pytest.mark.parametrize("method", ["StiffnessEstimate", "KineticEnergy"])
def test_not_applicable(method):
    (r,) = gen.run("Lynx", method, 0, SuiteConfig(quick=True))
    assert r["value"] is None and r["note"].startswith("not applicable")


# ~120 CPU-seconds, nearly all of it XLA compilation of the two train steps (a LatentSDE with
# Heun + PIDController on a VirtualBrownianTree compiles in ~35-40 CPU-s whatever the network
# size or max_steps) and the held-out solves; too slow for the default suite.
@pytest.mark.slow
def test_quick_vanilla_and_budget():
    records = []
    for method in ("vanilla", "budget"):
        assert method in METHODS
        records += gen.run("Lynx", method, 0, SuiteConfig(quick=True))
    json.dumps(records)
    assert [r["method"] for r in records] == ["vanilla", "budget"]
    for r in records:
        for f in FIELDS:
            assert f in r, f
        assert r["family"] == "latent_sde" and r["problem"] == "Lynx"
        assert r["metric"] == "elbo_per_point" and r["higher_is_better"] is True
        assert r["developed_on"] is False and r["missing"] == 0.3
        assert r["steps"] == gen.QUICK_STEPS and r["observations"] > 0
        for f in ("value", "nfe_per_prediction", "train_s", "train_elbo", "train_nfe"):
            assert math.isfinite(r[f]), (f, r[f])
        assert 0 < r["nfe_per_prediction"] < 1000
    budget = records[1]
    assert math.isfinite(budget["budget_weight"]) and budget["budget_weight"] >= 0
    assert budget["budget_reference_nfe"] > 0
