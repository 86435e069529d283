"""benchmarks/compile_time.py runs (--quick): every model's train step traces, compiles and
steps; no timings are asserted."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_compile_time_quick_runs_every_row():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "compile_time.py", "--quick"],
        cwd=os.path.join(REPO, "benchmarks"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for name in ("NeuralODE", "raw diffrax", "NeuralCDE", "NeuralSDE", "LatentSDE", "NeuralLSDE"):
        assert name in out.stdout
    assert "first call s" in out.stdout and "jaxpr eqns" in out.stdout
