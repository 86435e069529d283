"""One short run that records every side-by-side train-step table on the device present.

Runs, one after another, the speed scripts of `benchmarks/` and writes their tables into one
Markdown file headed by the machine: JAX's devices and versions, torch's device and threads.

- `node_batching.py`: neural ODE train step, ndes vs raw diffrax vs torchdiffeq;
- `sde_speed.py`: neural SDE (Euler, Heun) and latent SDE, ndes vs torchsde vs `lax.scan`;
- `cde_speed.py`: neural CDE, ndes vs torchcde;
- `cnf_speed.py`: CNF (FFJORD) log-likelihood step, ndes vs raw diffrax vs torchdiffeq.

JAX runs on its default device (a GPU when `jax[cuda]` is installed and one is visible).
Torch runs on the CPU with the scripts' own thread settings unless `--torch-device cuda`,
which sets `torch.set_default_device("cuda")` before each script runs (in its own
interpreter). Each script's output is recorded as it printed it; a script that fails is
recorded with its last error lines, and the others still run.

    python benchmarks/device_table.py --quick                 # seconds: checks the plumbing
    python benchmarks/device_table.py --out runs/device       # the whole table (minutes)
    python benchmarks/device_table.py --torch-device cuda --out $OUT

The torch-on-CUDA path has not been run here (no GPU was lent to the sessions that wrote it);
the JAX rows are what a GPU run records first.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = (
    ("neural ODE", "node_batching.py", []),
    ("neural SDE and latent SDE", "sde_speed.py", []),
    ("neural CDE", "cde_speed.py", []),
    ("CNF (FFJORD)", "cnf_speed.py", []),
)

_RUNNER = """
import runpy, sys
device = sys.argv[1]
if device != "cpu":
    import torch
    torch.set_default_device(device)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def machine() -> str:
    """The header: date, host, Python, JAX devices and versions, torch if importable."""
    import jax

    lines = [
        f"- date: {datetime.date.today().isoformat()}",
        f"- host: {platform.machine()}, {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}",
        f"- JAX {jax.__version__}, default backend `{jax.default_backend()}`, devices "
        + ", ".join(f"`{d.device_kind}`" for d in jax.devices()),
    ]
    try:
        import torch

        cuda = torch.cuda.is_available()
        name = torch.cuda.get_device_name(0) if cuda else "none"
        lines.append(f"- torch {torch.__version__}, CUDA available: {cuda} ({name})")
    except ImportError:
        lines.append("- torch: not installed (torch rows skipped by the scripts)")
    return "\n".join(lines)


def run_one(script: str, extra: list[str], quick: bool, repeats: int | None, torch_device: str,
            timeout: float) -> tuple[int, str, float]:  # fmt: skip
    """Run `script` in its own interpreter; return (exit code, its stdout (+ stderr tail on
    failure), seconds)."""
    argv = [str(HERE / script), *extra]
    if quick:
        argv.append("--quick")
    if repeats is not None:
        argv += ["--repeats", str(repeats)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    t = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _RUNNER, torch_device, *argv],
            capture_output=True, text=True, env=env, timeout=timeout, cwd=HERE,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return 124, out + f"\n(timed out after {timeout:.0f} s)", time.perf_counter() - t
    out = proc.stdout
    if proc.returncode != 0:
        out += "\n--- stderr (last lines) ---\n" + "\n".join(proc.stderr.splitlines()[-15:])
    return proc.returncode, out, time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that all run")
    p.add_argument("--repeats", type=int, default=None, help="passed to every script")
    p.add_argument("--torch-device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--only", nargs="+", default=None, help="script names to run")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per script")
    p.add_argument("--out", default="runs/device_table", help="folder for device_table.md")
    a = p.parse_args(argv)
    names = {s for _, s, _ in SCRIPTS}
    if a.only and not set(a.only) <= names:
        p.error(f"--only: unknown script(s) {sorted(set(a.only) - names)}; use {sorted(names)}")
    parts = ["# Train steps side by side on this device", "", machine(), ""]
    print("\n".join(parts), flush=True)
    failed = []
    for title, script, extra in SCRIPTS:
        if a.only and script not in a.only:
            continue
        code, out, secs = run_one(script, extra, a.quick, a.repeats, a.torch_device, a.timeout)
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        section = [f"## {title}: `{script}` ({status}, {secs:.0f} s)", "", "```", out.rstrip(),
                   "```", ""]  # fmt: skip
        print("\n".join(section), flush=True)
        parts += section
        if code != 0:
            failed.append(script)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "device_table.md").write_text("\n".join(parts))
    print(f"written: {out_dir / 'device_table.md'}" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
