"""The command line and the benchmark scripts run (their output is checked, not timings)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ndes.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


@pytest.mark.parametrize("cmd", [[], ["demo"], ["info"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: ndes" in capsys.readouterr().out


def test_unknown_command_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train-everything"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "diffrax" in out and "device: cpu" in out


def test_demo_quick_prints_table():
    r = _run("-m", "ndes.cli", "demo", "--quick", "--no-progress")
    assert r.returncode == 0, r.stderr
    for word in ("vanilla", "ErrorEstimate", "StiffnessEstimate", "NFE/solve", "test MSE"):
        assert word in r.stdout
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith(("vanilla", "Error", "Stiff"))]
    assert len(rows) == 3
    assert "nan" not in r.stdout.lower()


def test_overhead_benchmark_quick():
    r = _run("benchmarks/overhead.py", "--quick")
    assert r.returncode == 0, r.stderr
    assert "identical step counts ndes vs diffrax: True" in r.stdout
    assert r.stdout.count("ndes + ErrorEstimate") == 2  # vmap and joint
