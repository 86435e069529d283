"""`ndes.fit`: a generic, resumable, data-parallel training loop for Equinox models."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optax
from jax.sharding import Mesh
from jaxtyping import ArrayLike, PyTree

from ._fit_loop import run_loop
from ._fit_options import plan_fit
from ._fit_resume import restore_or_init
from ._state import TrainState
from ._step import make_evaluator, make_train_step

__all__ = ["fit", "FitResult"]

LossFn = Callable[..., tuple[Any, dict[str, Any]]]
Callback = Callable[[int, TrainState, "dict[str, Any] | None"], None]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What `ndes.fit` returns.

    **Fields:**

    - `model`: the trained model (`state.model`).
    - `opt_state`: the optimiser state (`state.opt_state`).
    - `state`: the full `TrainState` (step, keys, budget weights), e.g. to continue
      training by hand.
    - `history`: the logged records (dicts, as in the JSONL file), including those of
      earlier segments of a resumed run when a log file was kept.
    - `interrupted`: `True` when training stopped on `KeyboardInterrupt` (Ctrl-C).
    - `checkpoint`: the metadata path of the last checkpoint written or resumed from, or
      `None`.
    - `log_path`: the metrics JSONL file, or `None`.
    - `traces`: how many times the train and evaluation steps were traced (compiled) in
      this call; the train step is traced once per `fit` call.
    """

    model: PyTree
    opt_state: optax.OptState
    state: TrainState
    history: list[dict[str, Any]]
    interrupted: bool = False
    checkpoint: Path | None = None
    log_path: Path | None = None
    traces: dict[str, int] = dataclasses.field(default_factory=dict)


def fit(
    model: PyTree,
    data: PyTree[ArrayLike],
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    key: Any,
    batch_size: int,
    steps: int | None = None,
    epochs: int | None = None,
    regularizers: Sequence[Any] = (),
    budget: Any = None,
    nfe_budget: float | None = None,
    budget_lr: float = 0.1,
    eval_data: PyTree[ArrayLike] | None = None,
    eval_fn: Callable[..., dict[str, Any]] | None = None,
    eval_every: int | None = None,
    eval_batch_size: int | None = None,
    log_every: int = 1,
    run_dir: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
    run_name: str | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    keep_last: int | None = 3,
    resume: bool = False,
    progress: bool | None = None,
    callbacks: Sequence[Callback] = (),
    shuffle: bool = True,
    mesh: Mesh | None = None,
    data_axis: str = "batch",
    on_nonfinite: str = "raise",
    max_skips: int = 10,
) -> FitResult:
    """Train `model` on `data` by minimising `loss + penalty` with `optimizer`.

    One jitted train step (`eqx.filter_jit`) is traced once per call and reused for every
    step: the step count, the loss key and every `BudgetWeight` are arrays in the
    `TrainState`, so neither epochs nor weight schedules trigger recompilation.

    **The `loss_fn` contract.**
    `loss_fn(model, batch, *, key, regularizers, train_step) -> (loss, aux)` where

    - `batch` has the structure of `data` with a leading axis of `batch_size`;
    - `key` is a typed PRNG key, different every step (`fold_in(state.key, step)`);
    - `regularizers` must be passed on to `ndes.diffeqsolve` / the model (inside `fit`
      any `BudgetWeight` in them has been replaced by its current value; during
      evaluation it is `()`);
    - `train_step` (int32 scalar array) must be passed on as `train_step=` so scheduled
      weights are evaluated;
    - `loss` is the *task* loss (a scalar); `fit` minimises `loss + mean(aux["penalty"])`;
    - `aux` is a dict. Recognised keys: `penalty`, `penalty_terms` (dict),
      `num_fevals`, `num_accepted_steps`, `num_rejected_steps`; any other entry is logged
      too. Values may be batched (a `vmap`ped solve); they are averaged.
      `ndes.train.solution_aux(sol)` builds it from an `ndes.Solution` or a model output.

    **Arguments:**

    - `model`: any Equinox model (a pytree); its inexact arrays are trained.
    - `data`: a pytree of arrays (NumPy or JAX) with the examples along the leading axis,
      e.g. `(x, y)` or `{"y0": ..., "ys": ...}`. Test data go in `eval_data` (a separate
      argument, so a tuple `data` is never mistaken for a train/test pair).
    - `loss_fn`: see above.
    - `optimizer`: an optax `GradientTransformation`.
    - `key`: a PRNG key (`jax.random.key(0)`); it determines the initial keys of the loss,
      the data order and evaluation.
    - `batch_size`: examples per step. Each epoch is a fresh permutation of the examples;
      the last `num_examples % batch_size` examples of a permutation are skipped, so every
      batch has the same shape. Must be divisible by the number of devices of the mesh.
    - `steps` / `epochs`: exactly one; the *total* number of optimiser steps (when
      resuming, training continues up to this total) or epochs (`epochs *
      (num_examples // batch_size)` steps).
    - `regularizers`: ndes regularizers handed to `loss_fn`. A regularizer's weight may be
      a number, an optax schedule, or a `BudgetWeight`. A regularizer with a PRNG `key`
      (`LocalErrorEstimate`, `LocalStiffnessEstimate`, `JacobianFrobenius`) gets a fresh
      key every step, `fold_in(key, step)`: give it any key once.
    - `budget`: an `ndes.BudgetWeight` (e.g. `ndes.BudgetWeight(target=0.5)`) used as the
      weight of every regularizer with a numeric weight: the cost budget that finds the
      weight (see `ndes.BudgetWeight`).
    - `nfe_budget`, `budget_lr`: shorthand for
      `budget=BudgetWeight(target_nfe=nfe_budget, lr=budget_lr)`, each regularizer starting
      from its own numeric weight when that is positive.
    - `eval_data`: optional held-out data (same layout as `data`). Evaluation runs the
      model *without regularizers* in batches of `eval_batch_size` (default `batch_size`)
      and logs `eval_<name>` for every metric, in particular `eval_loss` and
      `eval_num_fevals` (the cost of one prediction solve as the loss reports it).
    - `eval_fn`: optional `eval_fn(model, batch, *, key) -> dict` of metrics to use instead
      of `loss_fn(..., regularizers=())` during evaluation.
    - `eval_every`: evaluate every this many steps; always at the end when `eval_data`
      is given.
    - `log_every`: write a metrics record every this many steps (and at the last step).
    - `run_dir`: a directory for the run; sets `log_path=run_dir/metrics.jsonl` and
      `checkpoint_dir=run_dir/checkpoints` unless those are given.
    - `log_path`: JSONL file, one object per logged step: `step`, `epoch`, `loss`,
      `penalty`, `penalty_terms`, `num_fevals`, `num_accepted_steps`,
      `num_rejected_steps`, `budget_weights`, `wall_time` (seconds since the run began,
      summed over resumed segments), `run` (= `run_name`), and `eval_*` when evaluated.
    - `run_name`: label stored in every record and shown on the progress bar.
    - `checkpoint_dir`: where to write checkpoints (see `ndes.train.save_checkpoint`).
      A directory that already holds checkpoints is only used with `resume=True`.
    - `checkpoint_every`: save every this many steps; a checkpoint is always written at
      the end and on Ctrl-C.
    - `keep_last`: how many checkpoints to keep (`None`: all).
    - `resume`: continue from the newest checkpoint in `checkpoint_dir` (starts afresh if
      there is none). Continuing reproduces the uninterrupted run bitwise (same
      devices and versions). A corrupted or mismatched checkpoint raises
      `ndes.train.CheckpointError`; nothing is overwritten.
    - `progress`: `True` / `False` to force the tqdm bar on / off; `None` shows it only
      when stderr is a terminal.
    - `callbacks`: functions `callback(step, state, record)` called on the host after each
      step (`record` is the logged dict, or `None` on unlogged steps).
    - `shuffle`: `False` takes the examples in order every epoch.
    - `mesh`: a `jax.sharding.Mesh` to split the batch over (parameters are replicated);
      `None` uses every device (`ndes.train.data_parallel_mesh()`).
    - `data_axis`: the mesh axis the batch is split along.
    - `on_nonfinite`: a step whose objective or gradient is NaN/inf is never applied;
      `"raise"` (default) then stops with `FloatingPointError` naming the step and the
      non-finite quantities, after checkpointing the last good step; `"skip"` drops the
      update, moves on to the next batch and logs `skipped_steps`, raising only after more
      than `max_skips` non-finite steps in a row. See docs/reliability.md.

    **Returns:** a `FitResult` with the trained `model`, `opt_state`, `state` and `history`.

    **Ctrl-C.** A `KeyboardInterrupt` during training stops the loop after the last
    completed step, writes a checkpoint of that step (when `checkpoint_dir` is set),
    flushes the log, and *returns* a `FitResult` with `interrupted=True` (a warning says
    where the checkpoint is) rather than re-raising, so a notebook keeps the model.

    **Errors during training** (a solve reaching `max_steps` with diffrax's default
    `throw=True`, a `FloatingPointError` above, ...): the last good step is checkpointed
    (when one was completed in this call) and the error is re-raised with a note naming the
    step and the checkpoint to resume from.
    """
    plan = plan_fit(
        data,
        batch_size=batch_size,
        steps=steps,
        epochs=epochs,
        regularizers=regularizers,
        budget=budget,
        nfe_budget=nfe_budget,
        budget_lr=budget_lr,
        eval_data=eval_data,
        eval_fn=eval_fn,
        eval_every=eval_every,
        eval_batch_size=eval_batch_size,
        log_every=log_every,
        run_dir=run_dir,
        log_path=log_path,
        run_name=run_name,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        keep_last=keep_last,
        resume=resume,
        progress=progress,
        callbacks=callbacks,
        shuffle=shuffle,
        mesh=mesh,
        data_axis=data_axis,
        on_nonfinite=on_nonfinite,
        max_skips=max_skips,
    )
    start = restore_or_init(plan, model, optimizer, key, loss_fn)
    traces = {"train_step": 0, "eval_step": 0}
    train_step = make_train_step(plan, loss_fn, optimizer, traces)
    evaluate = None if plan.host_eval is None else make_evaluator(plan, loss_fn, traces)
    end = run_loop(plan, start, train_step, evaluate)

    state, ckpt_path, total = end.state, end.checkpoint, plan.total
    if end.failure is not None:
        end.failure.add_note(
            f"ndes.fit stopped at step {int(state.step) + 1} of {total}; the state after step "
            f"{int(state.step)} (last good parameters) is "
            + (
                f"in checkpoint {ckpt_path}: continue with resume=True."
                if ckpt_path
                else "not checkpointed (no checkpoint_dir, or no step completed in this call)."
            )
        )
        raise end.failure
    if end.interrupted:
        where = f"; checkpoint {ckpt_path}" if ckpt_path is not None else " (no checkpoint_dir)"
        warnings.warn(
            f"fit interrupted (KeyboardInterrupt) after step {int(state.step)}{where}. "
            "Call fit again with resume=True to continue.",
            stacklevel=2,
        )
    return FitResult(
        model=state.model,
        opt_state=state.opt_state,
        state=state,
        history=end.history,
        interrupted=end.interrupted,
        checkpoint=ckpt_path,
        log_path=None if plan.log_path is None else Path(plan.log_path),
        traces=dict(traces),
    )
