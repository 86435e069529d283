"""The example scripts run end to end (a couple of training steps; no accuracy claims)."""

import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    path = os.path.join(REPO, "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(tmp_path, capsys, *args):
    uea = _load("uea_classification")
    common = ["--seeds", "1", "--steps", "2", "--missing", "0.3", "--no-progress"]
    uea.main([*common, *args, "--out", str(tmp_path)])
    records = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    return records, capsys.readouterr().out


# ~36 s; `make test-slow` runs it (the notebooks cover the NeuralCDE path in `make test`).
@pytest.mark.slow
def test_uea_ncde_vanilla_and_error(tmp_path, capsys):
    records, out = _run(tmp_path, capsys, "--model", "ncde", "--reg", "both")
    assert [r["method"] for r in records] == ["vanilla", "error(0.01)"]
    for r in records:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["nfe_per_prediction"] > 0
        assert r["solver"].startswith("Tsit5")
    assert "vanilla" in out and "error(0.01)" in out


def test_uea_ncde_bosh3_one_step_per_observation(tmp_path, capsys):
    records, _ = _run(
        tmp_path, capsys, "--ncde-solver", "bosh3", "--reg", "none", "--max-length", "16"
    )
    (r,) = records
    assert r["solver"] == "Bosh3, one step per observation interval"
    # JapaneseVowels: padded length 29, every 2nd point kept (15), 14 Bosh3 steps of 3
    # evaluations (FSAL) plus the first.
    assert r["nfe_per_prediction"] == 3 * (15 - 1) + 1


@pytest.mark.slow
def test_uea_lsde_shark_with_budget(tmp_path, capsys):
    records, out = _run(
        tmp_path, capsys, "--model", "lsde", "--reg", "error", "--budget", "50", "--rtol", "1e-2"
    )
    (r,) = records
    assert r["method"] == "error(budget 50, from 0.01, lr 0.1)" and r["solver"].startswith("ShARK")
    assert r["nfe_per_prediction"] > 0
    assert "error(budget 50" in out


def test_uea_refuses_error_estimate_with_fixed_step_euler(tmp_path, capsys):
    uea = _load("uea_classification")
    with pytest.raises(SystemExit):
        uea.main(["--model", "lsde", "--sde-solver", "euler", "--out", str(tmp_path)])
    assert "--sde-solver euler has no error estimate" in capsys.readouterr().err


def test_uea_refuses_error_estimate_with_fixed_step_bosh3(tmp_path, capsys):
    uea = _load("uea_classification")
    with pytest.raises(SystemExit):
        uea.main(["--ncde-solver", "bosh3", "--reg", "error", "--out", str(tmp_path)])
    assert "--ncde-solver bosh3 takes fixed steps" in capsys.readouterr().err
