"""How `ndes.fit` wires cost budgets and keyed regularizers into its jitted step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._budget import BudgetWeight, find_budget_weights, with_nfe_budget

__all__ = ["fresh_keys", "prepare_budgets", "update_budgets"]


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def fresh_keys(regularizers: tuple, step) -> tuple:
    """Every regularizer's PRNG `key` (the local regularizers' sample time, the Hutchinson
    probe of `JacobianFrobenius`) folded with the step count: a fresh draw every step
    from the one key the user gave at construction."""
    out = []
    for reg in regularizers:
        key = getattr(reg, "key", None)
        if _is_key(key):
            reg = eqx.tree_at(lambda r: r.key, reg, jax.random.fold_in(key, step))
        out.append(reg)
    return tuple(out)


def _base(name: str) -> str:
    """`ErrorEstimate_1` -> `ErrorEstimate` (repeated regularizers share a penalty term)."""
    head, _, tail = name.rpartition("_")
    return head if head and tail.isdigit() else name


def prepare_budgets(
    regularizers: tuple,
    budget: Any,
    nfe_budget: float | None,
    budget_lr: float,
    total: int,
) -> tuple[tuple, tuple[tuple[str, BudgetWeight], ...]]:
    """`fit`'s `budget=` / `nfe_budget=` applied to `regularizers`, every fractional
    (default) warm-up turned into steps of this `total`, checked. Returns the regularizers
    and their `(name, BudgetWeight)` pairs."""
    if budget is not None and nfe_budget is not None:
        raise ValueError("fit takes budget= or nfe_budget=, not both.")
    if budget is not None:
        if not isinstance(budget, BudgetWeight):
            raise ValueError(
                f"fit(budget={budget!r}) must be an ndes.BudgetWeight, e.g. "
                "ndes.BudgetWeight(target=0.5) for half the unregularized cost."
            )
        regularizers = with_nfe_budget(regularizers, budget)
    elif nfe_budget is not None:
        regularizers = with_nfe_budget(
            regularizers, BudgetWeight(target_nfe=nfe_budget, lr=budget_lr), keep_init=True
        )
    regularizers = tuple(
        jax.tree_util.tree_map(
            lambda x: x.for_steps(total) if isinstance(x, BudgetWeight) else x,
            r,
            is_leaf=lambda x: isinstance(x, BudgetWeight),
        )
        for r in regularizers
    )
    budgets = find_budget_weights(regularizers)
    for nm, bw in budgets:
        if total > 0 and bw.warmup_steps >= total:
            raise ValueError(
                f"the BudgetWeight of {nm} has warmup={bw.warmup_steps} unregularized steps, but "
                f"training has only {total}: use BudgetWeight(warmup=...) below {total} "
                "(about a quarter of the steps)."
            )
    return regularizers, budgets


def update_budgets(
    budgets: Sequence[tuple[str, BudgetWeight]],
    states: Sequence[Any],
    metrics: Mapping[str, Any],
) -> tuple[tuple, dict[str, Any]]:
    """One `BudgetWeight.update` per budget from the step's reduced `metrics` (inside the
    jitted step). Returns the new states and the metrics to log (`budget_weights`: the
    weight used at this step; `budget_targets`: the budget in force)."""
    if not budgets:
        return (), {}
    terms = metrics.get("penalty_terms", {})
    new = []
    for (nm, bw), b in zip(budgets, states, strict=True):
        value = terms.get(nm, terms.get(_base(nm)))
        if bw.init is None and value is None:
            raise ValueError(
                f"the BudgetWeight of {nm} starts from the regularizer's unweighted value, "
                f"but loss_fn's aux has no penalty_terms[{_base(nm)!r}]: return "
                "aux=ndes.train.solution_aux(sol) (or put sol.penalty_terms in aux), or "
                "give the BudgetWeight an explicit init=."
            )
        new.append(bw.update(b, metrics["num_fevals"], metrics["loss"], value))
    logged = {
        "budget_weights": {nm: b.weight for (nm, _), b in zip(budgets, states, strict=True)},
        "budget_targets": {nm: bw.budget(b) for (nm, bw), b in zip(budgets, states, strict=True)},
    }
    return tuple(new), logged
