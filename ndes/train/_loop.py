"""Host-side helpers of `ndes.fit`: example counts, batches, data order, records."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._state import wrap_key


def _num_examples(data) -> int:
    leaves = jax.tree_util.tree_leaves_with_path(data)
    if not leaves:
        raise ValueError(
            "fit(data=...) has no arrays: pass a pytree of arrays with a leading example axis."
        )
    sizes = {}
    for path, leaf in leaves:
        if np.ndim(leaf) == 0:
            raise ValueError(
                f"fit(data=...) leaf {jax.tree_util.keystr(path)} is a scalar; every leaf needs a "
                "leading example axis (put constants such as the time grid in loss_fn instead)."
            )
        sizes[jax.tree_util.keystr(path)] = np.shape(leaf)[0]
    if len(set(sizes.values())) != 1:
        raise ValueError(
            f"fit(data=...) leaves disagree on the number of examples (leading axis): {sizes}."
        )
    return next(iter(sizes.values()))


def _take(tree, idx: np.ndarray):
    """The examples `idx` of every leaf (host arrays)."""
    return jax.tree_util.tree_map(lambda x: x[idx], tree)


def _config_hash(**config) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _epoch_permutation(data_key: np.ndarray, impl: str, epoch: int, n: int, shuffle: bool):
    if not shuffle:
        return np.arange(n)
    k = jax.random.fold_in(wrap_key(jnp.asarray(data_key), impl), epoch)
    return np.asarray(jax.random.permutation(k, n))


def _host(tree) -> Any:
    return jax.tree_util.tree_map(lambda x: float(x), jax.device_get(tree))


def _postfix(rec: dict[str, Any]) -> dict[str, str]:
    out = {"loss": f"{rec['loss']:.4g}"}
    if "penalty" in rec:
        out["pen"] = f"{rec['penalty']:.3g}"
    if "num_fevals" in rec:
        out["nfe"] = f"{rec['num_fevals']:.0f}"
    for name, w in rec.get("budget_weights", {}).items():
        out[f"w_{name}"] = f"{w:.3g}"
    if "eval_loss" in rec:
        out["eval"] = f"{rec['eval_loss']:.4g}"
    return out
