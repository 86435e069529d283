"""The `aux` dict of the `loss_fn` contract, and how `ndes.fit` reduces it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import diffrax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

__all__ = ["solution_aux", "reduce_aux", "COUNTERS"]

COUNTERS = ("num_fevals", "num_accepted_steps", "num_rejected_steps")


def solution_aux(solution: Any) -> dict[str, Any]:
    """The `aux` dict for `ndes.fit` from anything with `penalty`, `penalty_terms` and
    `stats`: an `ndes.Solution` (from `ndes.diffeqsolve`) or a model's output.

    **Arguments:**

    - `solution`: the result of `ndes.diffeqsolve(..., regularizers=regularizers,
      train_step=train_step)` or of a model call, possibly batched by `jax.vmap` (then
      every entry has a leading batch axis and `ndes.fit` averages it).

    **Returns:** `{"penalty", "penalty_terms", "num_fevals", "num_accepted_steps",
    "num_rejected_steps", "solve_failed"}` (counters that the solution's `stats` lacks are
    left out; `solve_failed` is present when the solution has a diffrax `result`: 1 where
    the solve failed, e.g. reached `max_steps` under `throw=False`, so `fit` logs the
    failed fraction and treats a step with a failed solve like a non-finite one).

    Example:
    ```python
    def loss_fn(model, batch, *, key, regularizers, train_step):
        sol = ndes.diffeqsolve(..., regularizers=regularizers, train_step=train_step)
        return jnp.mean((sol.ys - batch["ys"]) ** 2), ndes.train.solution_aux(sol)
    ```
    """
    aux: dict[str, Any] = {
        "penalty": solution.penalty,
        "penalty_terms": dict(solution.penalty_terms),
    }
    stats = getattr(solution, "stats", None) or {}
    for name in COUNTERS:
        if name in stats:
            aux[name] = stats[name]
    result = getattr(solution, "result", None)
    if isinstance(result, diffrax.RESULTS):
        aux["solve_failed"] = jnp.logical_not(diffrax.is_okay(result))
    return aux


def _mean(x, name: str) -> Float[Array, ""]:
    try:
        arr = jnp.asarray(x)
    except TypeError:
        raise TypeError(
            f"loss_fn's aux[{name!r}] is a {type(x).__name__}; every aux value must be a number "
            "or an array (fit averages it), or a dict of them (like penalty_terms)."
        ) from None
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    return jnp.mean(arr)


def reduce_aux(loss: Float[ArrayLike, ""], aux: Mapping[str, Any]) -> dict[str, Any]:
    """Average `loss` and every entry of `aux` to scalars (nested dicts kept as dicts).

    **Returns:** a dict with `loss` and the reduced aux entries.
    """
    if not isinstance(aux, Mapping):
        raise TypeError(
            f"loss_fn must return (loss, aux) with aux a dict; got aux of type "
            f"{type(aux).__name__}. Return e.g. (loss, ndes.train.solution_aux(sol)) or "
            "(loss, {})."
        )
    out: dict[str, Any] = {"loss": _mean(loss, "loss")}
    for k, v in aux.items():
        if isinstance(v, Mapping):
            out[k] = {str(kk): _mean(vv, f"{k}.{kk}") for kk, vv in v.items()}
        else:
            out[k] = _mean(v, k)
    return out


def check_aux(aux: Mapping[str, Any], regularizers, needs_nfe: bool) -> None:
    """Static checks of the aux dict (run while tracing)."""
    if not isinstance(aux, Mapping):
        raise TypeError(
            f"loss_fn must return (loss, aux) with aux a dict; got aux of type "
            f"{type(aux).__name__}. Return e.g. (loss, ndes.train.solution_aux(sol)) or "
            "(loss, {})."
        )
    if regularizers and "penalty" not in aux:
        raise ValueError(
            "fit was given regularizers but loss_fn's aux has no 'penalty', so they would have "
            "no effect. Pass `regularizers` on to ndes.diffeqsolve (or the model) and return "
            "aux=ndes.train.solution_aux(sol), or put the solve's penalty in aux['penalty']."
        )
    if needs_nfe and "num_fevals" not in aux:
        raise ValueError(
            "a BudgetWeight (or fit(nfe_budget=...)) needs the measured cost, but loss_fn's aux "
            "has no 'num_fevals'. Return aux=ndes.train.solution_aux(sol) or set "
            "aux['num_fevals'] = sol.stats['num_fevals']."
        )
