"""The diffusion sampling benchmark runs end to end in quick mode and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~50 s on the shared 2-core CPU (a dozen sampler compilations)
def test_diffusion_sampling_quick():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "diffusion_sampling.py"), "--quick"],
        capture_output=True, text=True, env=env, timeout=600, check=True,
    ).stdout  # fmt: skip
    assert "| data vs data (floor) |" in out
    names = ("reverse SDE", "PC (", "PF-ODE Tsit5", "DPM-Solver-2, 10 NFE", "DPM-Solver-3, 20 NFE")
    for name in names:
        assert name in out, name
