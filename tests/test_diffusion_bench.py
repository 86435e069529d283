"""The diffusion sampling benchmark runs end to end in quick mode and prints its table."""

from __future__ import annotations

import json
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


@pytest.mark.slow  # ~85 s on the shared 2-core CPU (five fits, four samplers each)
def test_diffusion_sampling_variants_quick(tmp_path):
    """Several weights, StiffnessEstimate, a fine-tune lr, joint training and the JSON, without
    the base sampler table (~30 s on the shared 2-core CPU)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "diffusion_sampling.py"), "--quick",
           "--skip-samplers", "--finetune", "--joint", "--regularizer", "stiffness",
           "--weights", "0.1", "1", "--finetune-lr", "1e-4", "--steps", "10",
           "--finetune-steps", "3", "--samples", "50", "--out", str(tmp_path),
           "--plot", str(tmp_path)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600,
                         check=True).stdout  # fmt: skip
    assert "| variant (vs its control) | NFE ratio, 1e-3 |" in out
    for name in ("fine-tuned, DSM + StiffnessEstimate(0.1), lr 0.0001",
                 "fine-tuned, DSM + StiffnessEstimate(1), lr 0.0001",
                 "joint, DSM + StiffnessEstimate(1), 10 steps"):  # fmt: skip
        assert f"| {name} |" in out, name
    assert "| reverse SDE" not in out  # --skip-samplers
    assert (tmp_path / "diffusion_2d_variants_quality_vs_nfe.png").stat().st_size > 0
    (path,) = tmp_path.glob("diffusion_toy_*.json")
    res = json.loads(path.read_text())
    ratio = res["ratios"]["fine-tuned, DSM + StiffnessEstimate(1), lr 0.0001"]
    assert ratio["control"] == "fine-tuned, plain DSM, lr 0.0001"
    nfe = res["variants"]["fine-tuned, DSM + StiffnessEstimate(1), lr 0.0001"]
    ctrl = res["variants"]["fine-tuned, plain DSM, lr 0.0001"]
    key = "PF-ODE rtol=atol=0.001"
    assert ratio[key]["nfe_ratio"][0] == pytest.approx(nfe[key][0][0] / ctrl[key][0][0])


def test_diffusion_sampling_rejects_negative_weight():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "diffusion_sampling.py"), "--quick",
           "--finetune", "--weights", "-1"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and "every weight must be finite and >= 0" in res.stderr
