"""Multi-process data parallel on localhost: two CPU processes joined by
`jax.distributed.initialize` (2 devices each, collectives over gloo) run `ndes.fit` over the
global 4-device mesh; the result must match one process with 4 devices, checkpoints and logs
are written once (by process 0), the progress bar is drawn by process 0 only, and a
checkpoint of either layout resumes in the other."""

import shutil
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ndes.train import list_checkpoints, read_metrics

TIMEOUT = 240

WORKER = textwrap.dedent(
    """
    import sys
    import jax
    pid, nproc, port, run_dir, steps, resume, out = sys.argv[1:]
    pid, nproc, steps = int(pid), int(nproc), int(steps)
    if nproc > 1:
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid,
                                   initialization_timeout=120)
    import equinox as eqx, jax.numpy as jnp, numpy as np, optax
    import ndes

    assert len(jax.devices()) == 4 and jax.process_count() == nproc
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    y = np.sin(x[:, :1]) + 0.5 * x[:, 1:]

    def loss_fn(model, batch, *, key, regularizers, train_step):
        xb, yb = batch
        noise = 0.01 * jax.random.normal(key, yb.shape)
        return jnp.mean((jax.vmap(model)(xb) - yb - noise) ** 2), {}

    res = ndes.fit(eqx.nn.MLP(2, 1, 16, 2, key=jax.random.key(0)), (x, y), loss_fn,
                   optax.adam(1e-2), key=jax.random.key(1), batch_size=16, steps=steps,
                   eval_data=(x[:20], y[:20]), run_dir=run_dir, checkpoint_every=4,
                   keep_last=None, resume=resume == "resume", progress=True, run_name="mp")
    leaves = jax.tree_util.tree_leaves(eqx.filter(res.model, eqx.is_array))
    np.savez(out, *[np.asarray(leaf) for leaf in leaves])
    print("DONE", pid, int(res.state.step), flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return env


def _launch(script, tmp_path, run_dir, nproc, steps, resume, tag):
    """Run the worker as `nproc` processes (4 devices in all); return their outputs and
    stderr texts."""
    port = _free_port()
    procs, outs = [], []
    for pid in range(nproc):
        out = tmp_path / f"{tag}-{pid}.npz"
        outs.append(out)
        argv = [
            sys.executable,
            str(script),
            str(pid),
            str(nproc),
            str(port),
            str(run_dir),
            str(steps),
            "resume" if resume else "fresh",
            str(out),
        ]
        procs.append(
            subprocess.Popen(
                argv,
                env=_env(4 // nproc),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    errs = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, f"worker failed ({p.returncode}):\n{o[-2000:]}\n{e[-4000:]}"
            errs.append(e)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [dict(np.load(o)) for o in outs], errs


def _assert_close(a, b, rtol=1e-5, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol)


def _assert_equal(a, b):
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mp")
    script = tmp / "worker.py"
    script.write_text(WORKER)
    (one,), _ = _launch(script, tmp, tmp / "one", 1, 8, False, "one")
    (p0, p1), errs = _launch(script, tmp, tmp / "two", 2, 8, False, "two")
    return dict(tmp=tmp, script=script, one=one, p0=p0, p1=p1, errs=errs)


def test_two_processes_match_one_and_write_once(runs):
    tmp = runs["tmp"]
    _assert_equal(runs["p0"], runs["p1"])  # both processes hold the same replicated params
    _assert_close(runs["p0"], runs["one"])
    # One checkpoint per saved step and one log line per step: written by process 0 only.
    assert [s for s, _ in list_checkpoints(tmp / "two" / "checkpoints")] == [4, 8]
    assert sorted(p.name for p in (tmp / "two" / "checkpoints").iterdir()) == [
        "step_000000004.eqx",
        "step_000000004.json",
        "step_000000008.eqx",
        "step_000000008.json",
    ]
    recs = read_metrics(tmp / "two" / "metrics.jsonl")
    assert [r["step"] for r in recs] == list(range(1, 9))
    ref = read_metrics(tmp / "one" / "metrics.jsonl")
    np.testing.assert_allclose([r["loss"] for r in recs], [r["loss"] for r in ref], rtol=1e-5)
    np.testing.assert_allclose(recs[-1]["eval_loss"], ref[-1]["eval_loss"], rtol=1e-5)
    # The progress bar (desc "mp", 8/8) is drawn by process 0 only.
    assert "mp: 100%" in runs["errs"][0] and "8/8" in runs["errs"][0]
    assert "mp:" not in runs["errs"][1] and "8/8" not in runs["errs"][1]


def _truncate_at(src, dst, step):
    """A copy of run directory `src` as if stopped after `step` (later checkpoints removed)."""
    shutil.copytree(src, dst)
    for s, meta in list_checkpoints(dst / "checkpoints"):
        if s > step:
            meta.unlink()
            meta.with_suffix(".eqx").unlink()


@pytest.mark.slow
def test_checkpoints_resume_across_layouts(runs):
    tmp, script = runs["tmp"], runs["script"]
    # 2-process checkpoint at step 4 -> 1 process; 1-process checkpoint -> 2 processes.
    _truncate_at(tmp / "two", tmp / "two_to_one", 4)
    (a,), _ = _launch(script, tmp, tmp / "two_to_one", 1, 8, True, "two_to_one")
    _assert_close(a, runs["one"])
    _truncate_at(tmp / "one", tmp / "one_to_two", 4)
    (b0, b1), _ = _launch(script, tmp, tmp / "one_to_two", 2, 8, True, "one_to_two")
    _assert_equal(b0, b1)
    _assert_close(b0, runs["one"])
    assert [r["step"] for r in read_metrics(tmp / "one_to_two" / "metrics.jsonl")] == list(
        range(1, 9)
    )
