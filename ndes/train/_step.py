"""`ndes.fit`'s jitted steps: the train step (loss + penalty, optimiser update, budget update,
non-finite guard) and the evaluator (the model without regularizers, batch by batch)."""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._aux import check_aux, reduce_aux
from ._budget_fit import fresh_keys, substitute_budget_weights, update_budgets
from ._finite import finite_report, guard_step
from ._fit_options import FitPlan
from ._loop import _host, _take
from ._sharding import constrain_replicated, replicate, shard_batch
from ._state import TrainState, wrap_key

__all__ = ["make_evaluator", "make_train_step"]


def make_train_step(
    plan: FitPlan,
    loss_fn: Callable[..., tuple[Any, dict[str, Any]]],
    optimizer: optax.GradientTransformation,
    traces: dict[str, int],
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, Any], dict[str, Any]]]:
    """The jitted `train_step(state, batch) -> (new_state, metrics, report)`.

    Everything that changes between steps (step count, keys, budget weights) is an array
    in `state`, so the step is traced once per `fit` call (`traces["train_step"]` counts).
    `report["ok"]` is `False` when the objective or a gradient is non-finite; then the
    update is not applied (see `ndes.train._finite.guard_step`).
    """
    regularizers, budgets = plan.regularizers, plan.budgets
    on_nonfinite, mesh = plan.on_nonfinite, plan.mesh
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

    return train_step


def make_evaluator(
    plan: FitPlan,
    loss_fn: Callable[..., tuple[Any, dict[str, Any]]],
    traces: dict[str, int],
) -> Callable[[TrainState], dict[str, Any]]:
    """`evaluate(state) -> {"eval_<name>": value}`: the example-weighted mean of every metric
    over `plan.host_eval` in batches of `plan.eval_bs`, without regularizers (or
    `plan.eval_fn`'s metrics). One jitted `eval_step` (`traces["eval_step"]` counts traces;
    a last, smaller batch traces it once more)."""
    eval_fn, mesh, data_axis = plan.eval_fn, plan.mesh, plan.data_axis

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
        n_eval, eval_bs = plan.n_eval, plan.eval_bs
        for i, lo in enumerate(range(0, n_eval, eval_bs)):
            idx = np.arange(lo, min(lo + eval_bs, n_eval))
            batch = _take(plan.host_eval, idx)
            if len(idx) % mesh.shape[data_axis] == 0 and plan.nproc == 1:
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

    return evaluate
