"""Real process kills: training in a subprocess is SIGKILLed (at random moments and, through the
`NDES_CHECKPOINT_PAUSE` hook of the checkpoint writer, in the middle of a checkpoint write) or
interrupted by a real SIGINT, then resumed; the final state and the metrics must equal the
uninterrupted run bitwise, and every checkpoint left on disk must be complete and verifiable.

The fast tests drive `ndes.fit` on a tiny MLP (a subprocess compiles in about a second); the slow
ones drive the `ndes train` console script on a small neural-ODE config."""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ndes.train import list_checkpoints, read_metadata, read_metrics

TIMEOUT = 240  # seconds for one subprocess (a loaded CI machine compiles slowly)

WORKER = textwrap.dedent(
    """
    import os, sys, time
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np, optax
    import ndes

    run_dir, resume = sys.argv[1], sys.argv[2] == "resume"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 2)).astype(np.float32)
    y = np.sin(x[:, :1]) + 0.5 * x[:, 1:]

    def loss_fn(model, batch, *, key, regularizers, train_step):
        xb, yb = batch
        noise = 0.01 * jax.random.normal(key, yb.shape)  # the loss key must be resumed too
        return jnp.mean((jax.vmap(model)(xb) - yb - noise) ** 2), {}

    pace = float(os.environ.get("WORKER_PACE", "0"))
    def slow_down(step, state, record):  # gives a killer time to hit a step
        time.sleep(pace)

    res = ndes.fit(eqx.nn.MLP(2, 1, 8, 1, key=jax.random.key(0)), (x, y), loss_fn,
                   optax.adam(1e-2), key=jax.random.key(1), batch_size=8, steps=24,
                   run_dir=run_dir, checkpoint_every=3, keep_last=2, resume=resume,
                   progress=False, callbacks=[slow_down])
    print("STEP", int(res.state.step), flush=True)
    sys.exit(130 if res.interrupted else 0)
    """
)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", **extra)
    return env


def _check_checkpoints(ckpt_dir: Path) -> list[int]:
    """Every checkpoint in `ckpt_dir` is complete: metadata parses, the leaves file has the
    recorded size and sha256. Returns the steps present."""
    steps = []
    for step, meta_path in list_checkpoints(ckpt_dir):
        meta = read_metadata(meta_path)
        data = meta_path.with_name(meta["leaves_file"]).read_bytes()
        assert len(data) == meta["size"], f"{meta_path}: leaves truncated"
        assert hashlib.sha256(data).hexdigest() == meta["sha256"], f"{meta_path}: corrupted"
        steps.append(step)
    return steps


def _final(run_dir: Path):
    """(step, sha256 of the final TrainState's leaves, metrics without wall times)."""
    step, meta_path = list_checkpoints(run_dir / "checkpoints")[-1]
    recs = [
        {k: v for k, v in r.items() if k != "wall_time"}
        for r in read_metrics(run_dir / "metrics.jsonl")
    ]
    return step, read_metadata(meta_path)["sha256"], recs


def _wait_for(pred, proc, what, timeout=TIMEOUT):
    t0 = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"process exited ({proc.returncode}) before {what}:\n{out[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _log_lines(run_dir: Path) -> int:
    p = run_dir / "metrics.jsonl"
    return len(read_metrics(p)) if p.exists() else 0


class Trainer:
    """Starts the training command for one run directory in a subprocess."""

    def __init__(self, cmd):
        self.cmd = cmd  # cmd(run_dir, resume) -> argv

    def run(self, run_dir, resume=False, **env):
        r = subprocess.run(
            self.cmd(run_dir, resume),
            env=_env(**env),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        return r

    def start(self, run_dir, resume=False, **env):
        return subprocess.Popen(
            self.cmd(run_dir, resume),
            env=_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def _kill_mid_write(trainer, run_dir, tmp_path, step, point, resume):
    """Start (or resume) the run, SIGKILL it while it writes checkpoint `step` at `point`."""
    marker = tmp_path / f"paused-{step}-{point}"
    proc = trainer.start(run_dir, resume, NDES_CHECKPOINT_PAUSE=f"{step}:{point}:{marker}")
    _wait_for(marker.exists, proc, f"the checkpoint writer to pause at {step}:{point}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    steps = _check_checkpoints(run_dir / "checkpoints")
    assert step not in steps, f"checkpoint {step} must not count before its metadata is written"
    if point == "leaves":  # the leaves are in place, the metadata is not: an orphan .eqx
        assert (run_dir / "checkpoints" / f"step_{step:09d}.eqx").exists()
    return steps


def _inode(path: Path):
    return path.stat().st_ino if path.exists() else None


def _kill_when_logged(trainer, run_dir, lines, resume, sig=signal.SIGKILL, **env):
    """Start (or resume) the run and send `sig` once its log holds `lines` records written by
    this process (a resumed run first rewrites the log, as a new file)."""
    log = run_dir / "metrics.jsonl"
    stale = _inode(log)
    proc = trainer.start(run_dir, resume, **env)
    _wait_for(
        lambda: _inode(log) not in (None, stale) and _log_lines(run_dir) >= lines,
        proc,
        f"{lines} logged steps",
    )
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=TIMEOUT)
    _check_checkpoints(run_dir / "checkpoints")
    return proc.returncode, out


# ---------------------------------------------------------------------------------------
# ndes.fit in a subprocess (fast)


@pytest.fixture(scope="module")
def fit_trainer(tmp_path_factory):
    script = tmp_path_factory.mktemp("worker") / "worker.py"
    script.write_text(WORKER)
    return Trainer(
        lambda run_dir, resume: [
            sys.executable,
            str(script),
            str(run_dir),
            "resume" if resume else "fresh",
        ]
    )


@pytest.fixture(scope="module")
def fit_reference(fit_trainer, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    fit_trainer.run(run_dir)
    return _final(run_dir)


def test_sigkill_mid_checkpoint_write_and_at_a_step_then_resume_is_bitwise(
    fit_trainer, fit_reference, tmp_path
):
    run_dir = tmp_path / "run"
    # Killed with half of checkpoint 9's leaves in the temporary file: 3 and 6 are intact.
    assert _kill_mid_write(fit_trainer, run_dir, tmp_path, 9, "tmp", resume=False) == [3, 6]
    # Resumed from 6, killed with checkpoint 15's leaves in place but no metadata.
    assert _kill_mid_write(fit_trainer, run_dir, tmp_path, 15, "leaves", resume=True) == [9, 12]
    # Resumed from 12, killed at a step (between checkpoints) once 17 steps are logged.
    code, _ = _kill_when_logged(fit_trainer, run_dir, 17, True, WORKER_PACE="0.05")
    assert code == -signal.SIGKILL
    fit_trainer.run(run_dir, resume=True)
    assert _final(run_dir) == fit_reference
    assert _check_checkpoints(run_dir / "checkpoints") == [21, 24]


@pytest.mark.slow
def test_real_sigint_checkpoints_exits_130_and_resumes_bitwise(
    fit_trainer, fit_reference, tmp_path
):
    run_dir = tmp_path / "run"
    code, out = _kill_when_logged(fit_trainer, run_dir, 5, False, signal.SIGINT, WORKER_PACE="0.05")
    assert code == 130, out
    stopped = int(out.split("STEP")[-1])
    assert stopped >= 5 and list_checkpoints(run_dir / "checkpoints")[-1][0] == stopped
    fit_trainer.run(run_dir, resume=True)
    assert _final(run_dir) == fit_reference


@pytest.mark.slow
def test_sigkill_at_random_moments_repeatedly(fit_trainer, fit_reference, tmp_path):
    """Eight SIGKILLs at random moments, alternately during start-up (import, compile) and at a
    random delay after training began (steps, checkpoint writes), then a run to the end."""
    rng = np.random.default_rng(0)
    run_dir, log = tmp_path / "run", tmp_path / "run" / "metrics.jsonl"
    for kill in range(8):
        stale = _inode(log)
        proc = fit_trainer.start(run_dir, kill > 0, WORKER_PACE="0.02")
        if kill % 2 == 0:
            time.sleep(float(rng.uniform(0.0, 3.0)))
        else:
            _wait_for(lambda s=stale: _inode(log) not in (None, s), proc, "training to begin")
            time.sleep(float(rng.uniform(0.0, 0.6)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode in (-signal.SIGKILL, 0), proc.stdout.read()[-3000:]
        _check_checkpoints(run_dir / "checkpoints")
        if proc.returncode == 0:  # finished before the signal arrived
            break
    else:
        fit_trainer.run(run_dir, resume=True)
    assert _final(run_dir) == fit_reference


# ---------------------------------------------------------------------------------------
# The `ndes train` console script (slow: each start compiles a neural-ODE solve)

CONFIG = """\
seed = 0
steps = 100
batch_size = 8
eval_every = 50
log_every = 1
checkpoint_every = 10
keep_last = 2

[data]
name = "spirals"
num_train = 32
num_test = 8
num_times = 8
t1 = 2.0

[model]
type = "neural_ode"
width = 8
depth = 1
activation = "tanh"
rtol = 1e-3
atol = 1e-6

[optimizer]
type = "adam"
lr = 1e-2

[[regularizers]]
type = "ErrorEstimate"
weight = 0.01
"""


def _ndes_script() -> str:
    exe = Path(sys.executable).parent / "ndes"
    found = str(exe) if exe.exists() else shutil.which("ndes")
    if found is None:
        pytest.skip("the ndes console script is not installed (pip install -e .)")
    return found


@pytest.fixture(scope="module")
def cli_trainer(tmp_path_factory):
    config = tmp_path_factory.mktemp("config") / "tiny.toml"
    config.write_text(CONFIG)
    exe = _ndes_script()
    return Trainer(
        lambda run_dir, resume: (
            [exe, "train", str(config), "--run-dir", str(run_dir), "--no-progress", "--no-plot"]
            + (["--resume"] if resume else [])
        )
    )


@pytest.mark.slow
def test_ndes_train_killed_everywhere_resumes_bitwise(cli_trainer, tmp_path_factory, tmp_path):
    ref_dir = tmp_path_factory.mktemp("cli_straight") / "run"
    cli_trainer.run(ref_dir)
    reference = _final(ref_dir)
    assert reference[0] == 100 and len(reference[2]) == 100
    run_dir = tmp_path / "run"
    assert _kill_mid_write(cli_trainer, run_dir, tmp_path, 20, "tmp", resume=False) == [10]
    assert _kill_mid_write(cli_trainer, run_dir, tmp_path, 30, "leaves", resume=True) == [10, 20]
    assert _kill_mid_write(cli_trainer, run_dir, tmp_path, 30, "meta", resume=True) == [10, 20]
    code, _ = _kill_when_logged(cli_trainer, run_dir, 45, True)  # between checkpoints
    assert code == -signal.SIGKILL
    # Ctrl-C while checkpoint 70 is half written: the write is abandoned, checkpoint 70 is
    # written again on the way out, exit code 130.
    marker = tmp_path / "paused-70-tmp"
    proc = cli_trainer.start(run_dir, True, NDES_CHECKPOINT_PAUSE=f"70:tmp:{marker}")
    _wait_for(marker.exists, proc, "the checkpoint writer to pause at 70:tmp")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130 and "--resume" in out, out
    assert _check_checkpoints(run_dir / "checkpoints")[-1] == 70
    cli_trainer.run(run_dir, resume=True)
    assert _final(run_dir) == reference
