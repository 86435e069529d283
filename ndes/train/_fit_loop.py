"""`ndes.fit`'s loop on the host: batches in epoch order, the train step, records (metrics
log, progress bar, evaluation), callbacks, periodic checkpoints, Ctrl-C and errors."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
from tqdm.auto import tqdm

from ._finite import nonfinite_message
from ._fit_options import FitPlan
from ._fit_resume import Start, save
from ._loop import _epoch_permutation, _host, _postfix, _take
from ._metrics import MetricsWriter
from ._sharding import shard_batch
from ._state import TrainState

__all__ = ["LoopEnd", "run_loop"]


@dataclasses.dataclass(frozen=True)
class LoopEnd:
    """How the loop ended: the last completed `state`, the log `history`, the newest
    `checkpoint`, the total wall time `elapsed` (seconds, over resumed segments),
    `interrupted` (Ctrl-C) and the `failure` (an exception to re-raise) or `None`."""

    state: TrainState
    history: list[dict[str, Any]]
    checkpoint: Path | None
    elapsed: float
    interrupted: bool
    failure: BaseException | None


def run_loop(
    plan: FitPlan,
    start: Start,
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict, dict]],
    evaluate: Callable[[TrainState], dict[str, Any]] | None,
) -> LoopEnd:
    """Run steps `start.step + 1 .. plan.total`, then checkpoint the last completed step.

    `state` moves on only once a step's record is written, so a Ctrl-C or an error
    checkpoints the previous step and resuming rewrites any later record. A
    `KeyboardInterrupt` ends the loop (`interrupted=True`); any other exception is returned
    as `failure` for `fit` to annotate and re-raise.
    """
    pid, nproc, mesh, data_axis = plan.pid, plan.nproc, plan.mesh, plan.data_axis
    total, batch_size, n = plan.total, plan.batch_size, plan.num_examples
    state, elapsed0, ckpt_path = start.state, start.elapsed, start.checkpoint
    writer = None
    if plan.log_path is not None and pid == 0:
        writer = MetricsWriter(plan.log_path, resume_step=start.step if plan.resume else None)
    history: list[dict[str, Any]] = list(writer.previous) if writer is not None else []

    disable = None if plan.progress is None else not plan.progress
    bar = tqdm(
        total=total,
        initial=start.step,
        desc=plan.run_name,
        disable=True if pid != 0 else disable,
        dynamic_ncols=True,
        file=sys.stderr,
        leave=True,
    )
    interrupted, failure = False, None
    perm_epoch, perm = None, None
    t_start = time.perf_counter()
    local = batch_size // nproc
    try:
        for s in range(start.step, total):
            epoch, pos = divmod(s, plan.steps_per_epoch)
            if epoch != perm_epoch:
                perm = _epoch_permutation(start.data_key, state.key_impl, epoch, n, plan.shuffle)
                perm_epoch = epoch
            idx = perm[pos * batch_size : (pos + 1) * batch_size]
            idx = idx[pid * local : (pid + 1) * local]  # this process's part of the batch
            batch = shard_batch(_take(plan.host_data, idx), mesh, data_axis)
            new_state, metrics, report = train_step(state, batch)
            if not bool(report["ok"]) and (
                plan.on_nonfinite == "raise" or int(new_state.skip_streak) > plan.max_skips
            ):
                msg = nonfinite_message(
                    s + 1,
                    jax.device_get(report),
                    state.model,
                    _host(metrics),
                    int(new_state.skip_streak),
                )
                raise FloatingPointError(msg)
            done = s + 1
            do_eval = evaluate is not None and (
                done == total or (plan.eval_every is not None and done % plan.eval_every == 0)
            )
            record = None
            if done % plan.log_every == 0 or done == total or do_eval:
                record = {"step": done, "epoch": epoch, **_host(metrics)}
                if do_eval:
                    record.update(evaluate(new_state))
                record["wall_time"] = elapsed0 + time.perf_counter() - t_start
                if plan.run_name is not None:
                    record["run"] = plan.run_name
                history.append(record)
                if writer is not None:
                    writer.write(record)
                bar.set_postfix(_postfix(record), refresh=False)
            state = new_state
            bar.update(1)
            for cb in plan.callbacks:
                cb(done, state, record)
            if plan.checkpoint_every is not None and done % plan.checkpoint_every == 0:
                ckpt_path = save(
                    plan, start.config_hash, state, elapsed0 + time.perf_counter() - t_start
                )
    except KeyboardInterrupt:
        interrupted = True
    except Exception as e:
        failure = e
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    elapsed = elapsed0 + time.perf_counter() - t_start
    if (total > start.step and failure is None) or interrupted or int(state.step) > start.step:
        ckpt_path = save(plan, start.config_hash, state, elapsed) or ckpt_path
    return LoopEnd(state, history, ckpt_path, elapsed, interrupted, failure)
