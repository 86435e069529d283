"""Data parallel ndes.fit (train/_sharding.py) on 8 virtual CPU devices equals one device."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

_DP_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.config.update("jax_enable_x64", True)
    import equinox as eqx, jax.numpy as jnp, numpy as np, optax
    from ndes.train import fit, data_parallel_mesh

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)); y = np.sin(x[:, :1]) + 0.5 * x[:, 1:]

    def loss_fn(model, batch, *, key, regularizers, train_step):
        xb, yb = batch
        noise = 0.01 * jax.random.normal(key, yb.shape)  # keys must agree too
        return jnp.mean((jax.vmap(model)(xb) - yb - noise) ** 2), {"num_fevals": 3.0}

    def run(mesh, batch_size=16):
        model = eqx.nn.MLP(2, 1, 8, 1, key=jax.random.key(0))
        return fit(model, (x, y), loss_fn, optax.adam(1e-2), key=jax.random.key(1),
                   batch_size=batch_size, steps=3, mesh=mesh, progress=False,
                   eval_data=(x[:20], y[:20]), eval_batch_size=16)

    out = {"devices": jax.device_count()}
    one = run(data_parallel_mesh(jax.devices()[:1]))
    eight = run(None)
    def leaves(m):
        return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_array))]

    def maxdiff(m1, m2):
        return max(float(np.max(np.abs(a - b))) for a, b in zip(leaves(m1), leaves(m2)))

    out["param_diff"] = maxdiff(one.model, eight.model)
    out["param_change"] = maxdiff(one.model, eqx.nn.MLP(2, 1, 8, 1, key=jax.random.key(0)))
    out["loss_1"] = [r["loss"] for r in one.history]
    out["loss_8"] = [r["loss"] for r in eight.history]
    out["eval_1"] = one.history[-1]["eval_loss"]
    out["eval_8"] = eight.history[-1]["eval_loss"]
    out["sharding"] = str(eight.model.layers[0].weight.sharding)
    try:
        run(None, batch_size=12)
    except ValueError as e:
        out["error"] = str(e)
    print("RESULT" + json.dumps(out))
    """
)


def test_data_parallel_matches_one_device():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "-c", _DP_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=Path(__file__).parent.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    out = json.loads(line[len("RESULT") :])
    assert out["devices"] == 8
    assert out["param_change"] > 1e-3  # training did something
    assert out["param_diff"] < 1e-12
    np.testing.assert_allclose(out["loss_8"], out["loss_1"], rtol=1e-12)
    np.testing.assert_allclose(out["eval_8"], out["eval_1"], rtol=1e-12)
    assert "batch_size=12 is not divisible by the 8 devices" in out["error"]
    assert "multiple of 8" in out["error"]
