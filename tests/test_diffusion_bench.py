"""The diffusion sampling benchmark runs end to end in quick mode and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~50 s on the shared 2-core CPU (a dozen sampler compilations)
def test_diffusion_sampling_quick(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    script = str(ROOT / "benchmarks" / "diffusion_sampling.py")
    out = subprocess.run(
        [sys.executable, script, "--quick", "--plot", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600, check=True,
    ).stdout  # fmt: skip
    assert "| data vs data (floor) |" in out
    names = ("reverse SDE", "PC (", "PF-ODE Tsit5", "DPM-Solver-2, 10 NFE", "DPM-Solver-3, 20 NFE")
    for name in names:
        assert name in out, name
    for name in ("quality_vs_nfe", "samples", "trajectories"):
        assert (tmp_path / f"diffusion_2d_{name}.png").stat().st_size > 0


@pytest.mark.slow  # ~20 s: digits classifier + a dozen sampler compilations in 64-d
def test_diffusion_sampling_digits_quick(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "diffusion_sampling.py"), "--quick",
           "--data", "digits", "--plot", str(tmp_path)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600,
                         check=True).stdout  # fmt: skip
    assert "| sampler | NFE | FD (MLP hidden) | class entropy (bits) | max class share |" in out
    assert "| data vs data (floor) |" in out and "DPM-Solver-3, 20 NFE" in out
    assert "bits/dim" in out
    for name in ("diffusion_digits_quality_vs_nfe.png", "diffusion_digits_samples.png"):
        assert (tmp_path / name).stat().st_size > 0
