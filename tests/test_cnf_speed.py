"""benchmarks/cnf_speed.py --quick runs and prints the side-by-side table (not timings)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # four compiles in a subprocess: ~30 s on the shared 2-core CPU
def test_cnf_speed_quick_mode(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    script = os.path.join(REPO, "benchmarks", "cnf_speed.py")
    proc = subprocess.run(
        [sys.executable, script, "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "results.json").read_text())
    names = [r["impl"] for r in res["rows"]]
    assert names[:3] == ["ndes.CNF joint", "raw diffrax, vmap (example)", "raw diffrax, joint"]
    for r in res["rows"]:
        assert r["step_s"] > 0 and r["first_s"] > 0 and np.isfinite(r["loss"])
        assert f"| {r['impl']} |" in res["table"] and f"| {r['impl']} |" in proc.stdout
    # every row computes the same NLL (same weights, probe and data) up to solver tolerance
    # (the Euler floors excepted: a different method at the same evaluation count)
    assert any("jax scan floor" in n for n in names)
    losses = [r["loss"] for r in res["rows"] if "floor" not in r["impl"]]
    np.testing.assert_allclose(losses, losses[0], rtol=1e-2)
    assert res["rows"][0]["nfe"] > 0 and "step / ndes" in res["table"]
