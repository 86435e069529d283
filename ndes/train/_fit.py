"""`ndes.fit`: a generic, resumable, data-parallel training loop for Equinox models."""

from __future__ import annotations

import dataclasses
import functools
import operator
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import ArrayLike, PyTree
from tqdm.auto import tqdm

from ._aux import check_aux, reduce_aux
from ._budget_fit import (
    fresh_keys,
    prepare_budgets,
    substitute_budget_weights,
    update_budgets,
)
from ._checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from ._finite import check_nonfinite_options, finite_report, guard_step, nonfinite_message
from ._loop import _config_hash, _epoch_permutation, _host, _num_examples, _postfix, _take
from ._metrics import MetricsWriter
from ._sharding import (
    agree_across_processes,
    check_divisible,
    constrain_replicated,
    data_parallel_mesh,
    replicate,
    shard_batch,
)
from ._state import TrainState, array_signature, init_state, wrap_key

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
    # ---- static validation ------------------------------------------------------------
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
    nproc, pid = jax.process_count(), jax.process_index()
    if run_dir is not None:
        run_dir = Path(run_dir)
        log_path = run_dir / "metrics.jsonl" if log_path is None else log_path
        checkpoint_dir = run_dir / "checkpoints" if checkpoint_dir is None else checkpoint_dir
    if resume and checkpoint_dir is None:
        raise ValueError("fit(resume=True) needs checkpoint_dir= (or run_dir=) to resume from.")

    host_data = jax.tree_util.tree_map(np.asarray, data)
    host_eval = None if eval_data is None else jax.tree_util.tree_map(np.asarray, eval_data)
    if host_eval is not None:
        n_eval = _num_examples(host_eval)
        if n_eval == 0:
            raise ValueError("fit(eval_data=...) holds no examples (its leading axis is 0).")
    eval_bs = min(eval_batch_size or batch_size, n_eval) if host_eval is not None else 0

    # ---- state: fresh or resumed ------------------------------------------------------
    state = init_state(model, optimizer, key, tuple(bw.init_state() for _, bw in budgets))
    config_hash = _config_hash(
        batch_size=int(batch_size),
        shuffle=shuffle,
        num_examples=n,
        data=array_signature(host_data),
        regularizers=[type(r).__name__ for r in regularizers],
        budgets=[(nm, repr(bw)) for nm, bw in budgets],
        loss_fn=getattr(loss_fn, "__qualname__", repr(type(loss_fn))),
    )
    start, elapsed0, ckpt_path = 0, 0.0, None
    if checkpoint_dir is not None:
        existing = latest_checkpoint(checkpoint_dir)
        if existing is not None and not resume:
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
                    stacklevel=2,
                )
    if start > total:
        raise ValueError(
            f"the checkpoint in {checkpoint_dir} is at step {start}, beyond steps={total}; ask for "
            f"at least {start} steps."
        )
    if nproc > 1:  # every process must resume the same step (a shared checkpoint_dir)
        agree_across_processes(start, checkpoint_dir)
    state = replicate(state, mesh)
    data_key = np.asarray(jax.device_get(state.data_key))

    # ---- the jitted steps -------------------------------------------------------------
    traces = {"train_step": 0, "eval_step": 0}
    needs_nfe = bool(budgets)

    @eqx.filter_jit
    def train_step(state: TrainState, batch):
        traces["train_step"] += 1
        regs = substitute_budget_weights(regularizers, [b.weight for b in state.budget_weights])
        regs = fresh_keys(regs, state.step)
        step_key = jax.random.fold_in(wrap_key(state.key, state.key_impl), state.step)
        params, static = eqx.partition(state.model, eqx.is_inexact_array)

        def objective(params):
            m = eqx.combine(params, static)
            out = loss_fn(m, batch, key=step_key, regularizers=regs, train_step=state.step)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(
                    "loss_fn must return a pair (loss, aux); got "
                    f"{type(out).__name__}. Return (loss, {{}}) if there is nothing to report."
                )
            loss, aux = out
            check_aux(aux, regs, needs_nfe)
            penalty = jnp.mean(aux["penalty"]) if "penalty" in aux else 0.0
            return jnp.mean(loss) + penalty, (loss, aux)

        (obj, (loss, aux)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        new_model = eqx.apply_updates(state.model, updates)
        metrics = reduce_aux(loss, aux)
        report = finite_report(obj, metrics, grads)
        new_weights, budget_metrics = update_budgets(budgets, state.budget_weights, metrics)
        metrics.update(budget_metrics)
        new_state = dataclasses.replace(
            state,
            model=new_model,
            opt_state=opt_state,
            step=state.step + 1,
            budget_weights=new_weights,
        )
        new_state = guard_step(state, new_state, report["ok"], on_nonfinite)
        if on_nonfinite == "skip":
            metrics["skipped_steps"] = new_state.skipped_steps
        return constrain_replicated(new_state, mesh), metrics, report

    @eqx.filter_jit
    def eval_step(model, batch, key, step):
        traces["eval_step"] += 1
        if eval_fn is not None:
            out = eval_fn(model, batch, key=key)
            if not isinstance(out, dict):
                raise TypeError(f"eval_fn must return a dict of metrics; got {type(out).__name__}.")
            out = dict(out)
            return reduce_aux(out.pop("loss", jnp.nan), out)
        loss, aux = loss_fn(model, batch, key=key, regularizers=(), train_step=step)
        check_aux(aux, (), False)
        metrics = reduce_aux(loss, aux)
        metrics.pop("penalty", None)
        metrics.pop("penalty_terms", None)
        return metrics

    def evaluate(state: TrainState) -> dict[str, Any]:
        ekey = wrap_key(state.eval_key, state.key_impl)
        sums: dict[str, Any] | None = None
        count = 0
        for i, lo in enumerate(range(0, n_eval, eval_bs)):
            idx = np.arange(lo, min(lo + eval_bs, n_eval))
            batch = _take(host_eval, idx)
            if len(idx) % mesh.shape[data_axis] == 0 and nproc == 1:
                batch = shard_batch(batch, mesh, data_axis)
            else:  # a last, indivisible batch: replicated (every device computes it)
                batch = replicate(batch, mesh)
            m = _host(eval_step(state.model, batch, jax.random.fold_in(ekey, i), state.step))
            weighted = jax.tree_util.tree_map(functools.partial(operator.mul, len(idx)), m)
            if sums is not None:
                weighted = jax.tree_util.tree_map(operator.add, sums, weighted)
            sums = weighted
            count += len(idx)
        assert sums is not None
        avg = jax.tree_util.tree_map(lambda v: v / count, sums)
        return {f"eval_{k}": v for k, v in avg.items()}

    # ---- bookkeeping ------------------------------------------------------------------
    writer = None
    if log_path is not None and pid == 0:
        writer = MetricsWriter(log_path, resume_step=start if resume else None)
    history: list[dict[str, Any]] = list(writer.previous) if writer is not None else []

    def save(state: TrainState, elapsed: float) -> Path | None:
        if checkpoint_dir is None or pid != 0:
            return None
        step = int(state.step)
        existing = [p for s, p in list_checkpoints(checkpoint_dir) if s == step]
        if existing:
            return existing[0]
        return save_checkpoint(
            checkpoint_dir,
            state,
            config_hash=config_hash,
            keep_last=keep_last,
            extra={"elapsed": elapsed, "total_steps": total, "run_name": run_name},
        )

    disable = None if progress is None else not progress
    bar = tqdm(
        total=total,
        initial=start,
        desc=run_name,
        disable=True if pid != 0 else disable,
        dynamic_ncols=True,
        file=sys.stderr,
        leave=True,
    )
    interrupted, failure = False, None
    perm_epoch, perm = None, None
    t_start = time.perf_counter()
    local = batch_size // nproc

    # ---- the loop ---------------------------------------------------------------------
    try:
        for s in range(start, total):
            epoch, pos = divmod(s, steps_per_epoch)
            if epoch != perm_epoch:
                perm = _epoch_permutation(data_key, state.key_impl, epoch, n, shuffle)
                perm_epoch = epoch
            idx = perm[pos * batch_size : (pos + 1) * batch_size]
            idx = idx[pid * local : (pid + 1) * local]  # this process's part of the batch
            batch = shard_batch(_take(host_data, idx), mesh, data_axis)
            new_state, metrics, report = train_step(state, batch)
            if not bool(report["ok"]) and (
                on_nonfinite == "raise" or int(new_state.skip_streak) > max_skips
            ):
                msg = nonfinite_message(
                    s + 1,
                    jax.device_get(report),
                    state.model,
                    _host(metrics),
                    int(new_state.skip_streak),
                )
                raise FloatingPointError(msg)
            # `state` moves on only once the step's record is written: a Ctrl-C before
            # that checkpoints the previous step, and resuming rewrites any later record.
            done = s + 1
            do_eval = host_eval is not None and (
                done == total or (eval_every is not None and done % eval_every == 0)
            )
            record = None
            if done % log_every == 0 or done == total or do_eval:
                record = {"step": done, "epoch": epoch, **_host(metrics)}
                if do_eval:
                    record.update(evaluate(new_state))
                record["wall_time"] = elapsed0 + time.perf_counter() - t_start
                if run_name is not None:
                    record["run"] = run_name
                history.append(record)
                if writer is not None:
                    writer.write(record)
                bar.set_postfix(_postfix(record), refresh=False)
            state = new_state
            bar.update(1)
            for cb in callbacks:
                cb(done, state, record)
            if checkpoint_every is not None and done % checkpoint_every == 0:
                ckpt_path = save(state, elapsed0 + time.perf_counter() - t_start)
    except KeyboardInterrupt:
        interrupted = True
    except Exception as e:
        failure = e
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    elapsed = elapsed0 + time.perf_counter() - t_start
    if (total > start and failure is None) or interrupted or int(state.step) > start:
        ckpt_path = save(state, elapsed) or ckpt_path
    if failure is not None:
        failure.add_note(
            f"ndes.fit stopped at step {int(state.step) + 1} of {total}; the state after step "
            f"{int(state.step)} (last good parameters) is "
            + (
                f"in checkpoint {ckpt_path}: continue with resume=True."
                if ckpt_path
                else "not checkpointed (no checkpoint_dir, or no step completed in this call)."
            )
        )
        raise failure
    if interrupted:
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
        history=history,
        interrupted=interrupted,
        checkpoint=ckpt_path,
        log_path=None if log_path is None else Path(log_path),
        traces=dict(traces),
    )
