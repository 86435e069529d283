"""benchmarks/scan_vs_loop.py runs (--quick) and prints every row; no timings are asserted."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # ~30 s; the equalities are tested fast in tests/test_scan_adjoint.py
def test_scan_vs_loop_quick_prints_every_row():
    out = subprocess.run(
        [sys.executable, "scan_vs_loop.py", "--quick"],
        cwd=os.path.join(REPO, "benchmarks"),
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("Neural")]
    assert [r[0] for r in rows] == ["NeuralCDE"] * 3 + ["NeuralLSDE"] * 4
    assert [r[-1] for r in rows][0] != [r[-1] for r in rows][1]  # the scan is a smaller program
    assert all(float(r[-4]) > 0 for r in rows)
