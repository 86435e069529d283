"""`ndes.fit`'s arguments, checked once and grouped: `FitPlan` holds every validated option
and the values derived from them (step counts, mesh, paths, host copies of the data)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from ._budget_fit import prepare_budgets
from ._finite import check_nonfinite_options
from ._loop import _num_examples
from ._sharding import check_divisible, data_parallel_mesh

__all__ = ["FitPlan", "plan_fit"]


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """The validated options of one `fit` call (see `fit` for their meaning).

    Derived fields: `regularizers` (a tuple, `BudgetWeight`s in place), `budgets` (name and
    `BudgetWeight` per budget), `num_examples`, `steps_per_epoch`, `total` (optimiser steps
    to reach), `mesh`, `nproc`/`pid` (process count and index), `log_path`/`checkpoint_dir`
    (after `run_dir`), `host_data`/`host_eval` (NumPy copies), `n_eval`, `eval_bs`.
    """

    # data and schedule
    host_data: Any
    num_examples: int
    batch_size: int
    steps_per_epoch: int
    total: int
    shuffle: bool
    # regularizers and budgets
    regularizers: tuple
    budgets: tuple
    # evaluation
    host_eval: Any
    n_eval: int
    eval_bs: int
    eval_fn: Callable[..., dict[str, Any]] | None
    eval_every: int | None
    # logging, checkpoints, progress
    log_every: int
    log_path: str | os.PathLike | None
    run_name: str | None
    checkpoint_dir: str | os.PathLike | None
    checkpoint_every: int | None
    keep_last: int | None
    resume: bool
    progress: bool | None
    callbacks: tuple
    # devices and failures
    mesh: Mesh
    data_axis: str
    nproc: int
    pid: int
    on_nonfinite: str
    max_skips: int


def plan_fit(
    data: Any,
    *,
    batch_size: int,
    steps: int | None,
    epochs: int | None,
    regularizers: Sequence[Any] | Any,
    budget: Any,
    nfe_budget: float | None,
    budget_lr: float,
    eval_data: Any,
    eval_fn: Callable[..., dict[str, Any]] | None,
    eval_every: int | None,
    eval_batch_size: int | None,
    log_every: int,
    run_dir: str | os.PathLike | None,
    log_path: str | os.PathLike | None,
    run_name: str | None,
    checkpoint_dir: str | os.PathLike | None,
    checkpoint_every: int | None,
    keep_last: int | None,
    resume: bool,
    progress: bool | None,
    callbacks: Sequence[Any],
    shuffle: bool,
    mesh: Mesh | None,
    data_axis: str,
    on_nonfinite: str,
    max_skips: int,
) -> FitPlan:
    """Check `fit`'s static arguments (a `ValueError` naming the argument and the fix) and
    derive the plan. Runs before anything is traced or written."""
    if (steps is None) == (epochs is None):
        raise ValueError("fit needs exactly one of steps= (total optimiser steps) or epochs=.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"fit(batch_size={batch_size!r}) must be a positive int.")
    for name, val in (
        ("log_every", log_every),
        ("eval_every", eval_every),
        ("checkpoint_every", checkpoint_every),
        ("eval_batch_size", eval_batch_size),
    ):
        if val is not None and (not isinstance(val, (int, np.integer)) or val < 1):
            raise ValueError(f"fit({name}={val!r}) must be a positive int or None.")
    check_nonfinite_options(on_nonfinite, max_skips)
    if eval_fn is not None and eval_data is None:
        raise ValueError("fit(eval_fn=...) needs eval_data= to evaluate on.")
    if eval_every is not None and eval_data is None:
        raise ValueError("fit(eval_every=...) needs eval_data= to evaluate on.")
    if isinstance(regularizers, (list, tuple)):
        regularizers = tuple(regularizers)
    else:
        regularizers = (regularizers,)
    n = _num_examples(data)
    if batch_size > n:
        raise ValueError(
            f"fit(batch_size={batch_size}) is larger than the {n} examples in data; use "
            f"batch_size <= {n}."
        )
    steps_per_epoch = n // batch_size
    total = int(steps if steps is not None else epochs * steps_per_epoch)
    if total < 0:
        raise ValueError(f"fit(steps/epochs) must be non-negative; got {total} steps.")
    regularizers, budgets = prepare_budgets(regularizers, budget, nfe_budget, budget_lr, total)
    if mesh is None:
        mesh = data_parallel_mesh(axis_name=data_axis)
    check_divisible(batch_size, mesh, data_axis)
    if run_dir is not None:
        run_dir = Path(run_dir)
        log_path = run_dir / "metrics.jsonl" if log_path is None else log_path
        checkpoint_dir = run_dir / "checkpoints" if checkpoint_dir is None else checkpoint_dir
    if resume and checkpoint_dir is None:
        raise ValueError("fit(resume=True) needs checkpoint_dir= (or run_dir=) to resume from.")

    host_data = jax.tree_util.tree_map(np.asarray, data)
    host_eval = None if eval_data is None else jax.tree_util.tree_map(np.asarray, eval_data)
    n_eval = 0
    if host_eval is not None:
        n_eval = _num_examples(host_eval)
        if n_eval == 0:
            raise ValueError("fit(eval_data=...) holds no examples (its leading axis is 0).")
    eval_bs = min(eval_batch_size or batch_size, n_eval) if host_eval is not None else 0
    return FitPlan(
        host_data=host_data,
        num_examples=n,
        batch_size=int(batch_size),
        steps_per_epoch=steps_per_epoch,
        total=total,
        shuffle=shuffle,
        regularizers=regularizers,
        budgets=budgets,
        host_eval=host_eval,
        n_eval=n_eval,
        eval_bs=eval_bs,
        eval_fn=eval_fn,
        eval_every=eval_every,
        log_every=log_every,
        log_path=log_path,
        run_name=run_name,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        keep_last=keep_last,
        resume=resume,
        progress=progress,
        callbacks=tuple(callbacks),
        mesh=mesh,
        data_axis=data_axis,
        nproc=jax.process_count(),
        pid=jax.process_index(),
        on_nonfinite=on_nonfinite,
        max_skips=max_skips,
    )
