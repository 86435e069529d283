"""How `ndes.fit` wires cost budgets and keyed regularizers into its jitted step: finding the
`BudgetWeight`s inside regularizers, substituting their current weights, applying
`fit(budget=...)`, and updating the budget states."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._budget import BudgetWeight

__all__ = [
    "find_budget_weights",
    "fresh_keys",
    "prepare_budgets",
    "substitute_budget_weights",
    "update_budgets",
    "with_nfe_budget",
]


def _is_bw(x) -> bool:
    return isinstance(x, BudgetWeight)


def _reg_name(reg) -> str:
    name = getattr(reg, "name", None)
    return name if isinstance(name, str) else f"{type(reg).__name__}"


def find_budget_weights(regularizers: Sequence[Any]) -> tuple[tuple[str, BudgetWeight], ...]:
    """Every `BudgetWeight` inside `regularizers`, in a fixed order, with a unique name.

    The name is the regularizer's name (suffixed `_1`, `_2`, ... on repeats), used as the
    key of `budget_weights` in the metrics.
    """
    found: list[tuple[str, BudgetWeight]] = []
    seen: dict[str, int] = {}
    for reg in regularizers:
        leaves = [x for x in jax.tree_util.tree_leaves(reg, is_leaf=_is_bw) if _is_bw(x)]
        for bw in leaves:
            base = _reg_name(reg)
            k = seen.get(base, 0)
            seen[base] = k + 1
            found.append((base if k == 0 else f"{base}_{k}", bw))
    return tuple(found)


def substitute_budget_weights(regularizers: Sequence[Any], weights: Sequence[Array]) -> tuple:
    """Replace each `BudgetWeight` in `regularizers` by the matching array in `weights`."""
    it = iter(weights)
    out = jax.tree_util.tree_map(
        lambda x: next(it) if _is_bw(x) else x, tuple(regularizers), is_leaf=_is_bw
    )
    return out


def with_nfe_budget(
    regularizers: Sequence[Any], budget: BudgetWeight, keep_init: bool = False
) -> tuple:
    """`fit(..., budget=BudgetWeight(...))`: use that budget for every numeric regularizer
    weight (a regularizer that already has its own `BudgetWeight` keeps it). With
    `keep_init`, a positive numeric weight becomes the budget's `init`."""
    if not regularizers:
        raise ValueError(
            "fit(budget=... / nfe_budget=...) adapts regularizer weights, but `regularizers` is "
            "empty: pass e.g. regularizers=(ndes.ErrorEstimate(),)."
        )
    out = []
    for reg in regularizers:
        w = getattr(reg, "weight", None)
        if _is_bw(w):
            out.append(reg)
            continue
        if callable(w) or w is None:
            raise ValueError(
                f"fit(budget=...) cannot adapt {type(reg).__name__}.weight={w!r}: it must be "
                "a number. Use a number, or give that regularizer its own ndes.BudgetWeight."
            )
        bw = budget
        if keep_init and float(w) > 0:
            bw = dataclasses.replace(budget, init=float(w))
        out.append(eqx.tree_at(lambda r: r.weight, reg, bw))
    return tuple(out)


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
