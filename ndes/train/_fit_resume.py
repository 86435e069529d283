"""`ndes.fit`'s starting point: a fresh `TrainState`, or the newest checkpoint when resuming;
and the saver that writes checkpoints during and after the loop."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from ._checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from ._fit_options import FitPlan
from ._loop import _config_hash
from ._sharding import agree_across_processes, replicate
from ._state import TrainState, array_signature, init_state

__all__ = ["Start", "restore_or_init", "save"]


@dataclasses.dataclass(frozen=True)
class Start:
    """Where a `fit` call starts: the (replicated) `state`, its `step`, the wall time of
    earlier segments (`elapsed`), the checkpoint resumed from (`checkpoint`, or `None`),
    the run's `config_hash` and the host copy of the data-order key (`data_key`)."""

    state: TrainState
    step: int
    elapsed: float
    checkpoint: Path | None
    config_hash: str
    data_key: np.ndarray


def restore_or_init(
    plan: FitPlan, model: Any, optimizer: optax.GradientTransformation, key: Any, loss_fn: Any
) -> Start:
    """A fresh state from `model`, `optimizer` and `key`, or (with `plan.resume`) the newest
    checkpoint in `plan.checkpoint_dir` loaded into it. Raises `FileExistsError` for a
    checkpoint directory in use without `resume=True`, `ValueError` for a checkpoint beyond
    the requested steps; warns when the checkpoint was written with another configuration."""
    budgets, checkpoint_dir = plan.budgets, plan.checkpoint_dir
    state = init_state(model, optimizer, key, tuple(bw.init_state() for _, bw in budgets))
    config_hash = _config_hash(
        batch_size=plan.batch_size,
        shuffle=plan.shuffle,
        num_examples=plan.num_examples,
        data=array_signature(plan.host_data),
        regularizers=[type(r).__name__ for r in plan.regularizers],
        budgets=[(nm, repr(bw)) for nm, bw in budgets],
        loss_fn=getattr(loss_fn, "__qualname__", repr(type(loss_fn))),
    )
    start, elapsed0, ckpt_path = 0, 0.0, None
    if checkpoint_dir is not None:
        existing = latest_checkpoint(checkpoint_dir)
        if existing is not None and not plan.resume:
            raise FileExistsError(
                f"checkpoint_dir {checkpoint_dir} already holds checkpoints (newest "
                f"{existing.name}); pass resume=True to continue that run, or use an empty "
                "directory (checkpoints are never overwritten)."
            )
        if existing is not None:
            state, meta = load_checkpoint(existing, state)
            start, ckpt_path = int(meta["step"]), existing
            elapsed0 = float(meta.get("elapsed", 0.0))
            if meta.get("config_hash") != config_hash:
                warnings.warn(
                    f"resuming from {existing} with a different configuration (batch size, data, "
                    "regularizers or loss): training continues, but will not reproduce the "
                    "uninterrupted run.",
                    stacklevel=3,  # the caller of fit
                )
    if start > plan.total:
        raise ValueError(
            f"the checkpoint in {checkpoint_dir} is at step {start}, beyond steps={plan.total}; "
            f"ask for at least {start} steps."
        )
    if plan.nproc > 1:  # every process must resume the same step (a shared checkpoint_dir)
        agree_across_processes(start, checkpoint_dir)
    state = replicate(state, plan.mesh)
    data_key = np.asarray(jax.device_get(state.data_key))
    return Start(state, start, elapsed0, ckpt_path, config_hash, data_key)


def save(plan: FitPlan, config_hash: str, state: TrainState, elapsed: float) -> Path | None:
    """Checkpoint `state` (process 0 only; nothing without `plan.checkpoint_dir`); a step
    already checkpointed is not written twice. Returns the metadata path or `None`."""
    checkpoint_dir = plan.checkpoint_dir
    if checkpoint_dir is None or plan.pid != 0:
        return None
    step = int(state.step)
    existing = [p for s, p in list_checkpoints(checkpoint_dir) if s == step]
    if existing:
        return existing[0]
    return save_checkpoint(
        checkpoint_dir,
        state,
        config_hash=config_hash,
        keep_last=plan.keep_last,
        extra={"elapsed": elapsed, "total_steps": plan.total, "run_name": plan.run_name},
    )
