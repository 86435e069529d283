"""benchmarks/device_table.py: the one-run device table runs its scripts and records them."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import device_table  # noqa: E402


def test_header_names_the_machine():
    head = device_table.machine()
    assert "JAX" in head and "default backend `cpu`" in head and "torch" in head


def test_unknown_script_is_refused(capsys):
    with pytest.raises(SystemExit):
        device_table.main(["--only", "nope.py"])
    assert "--only: unknown script(s) ['nope.py']" in capsys.readouterr().err


@pytest.mark.slow  # a neural-CDE quick run in a subprocess (~30 s on the shared CPU)
def test_quick_run_records_a_table(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    script = os.path.join(REPO, "benchmarks", "device_table.py")
    proc = subprocess.run(
        [sys.executable, script, "--quick", "--only", "cde_speed.py", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    md = (tmp_path / "device_table.md").read_text()
    assert "## neural CDE: `cde_speed.py` (ok," in md and "torchcde" in md
    assert "node_batching.py" not in md  # --only ran one script
