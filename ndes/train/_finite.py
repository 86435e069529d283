"""What `ndes.fit` does with a non-finite loss or gradient, and with a failed solve.

A step whose objective (`loss + penalty`) or any gradient is NaN/inf, or whose solve failed
(`aux["solve_failed"]`, set by `ndes.train.solution_aux` from the solution's `result`), is
never applied:
the parameters, optimiser state and budget weights stay those of the last good step.
Then, by `on_nonfinite`:

- `"raise"` (the default): training stops; `fit` writes a checkpoint of the last good step
  (when `checkpoint_dir` is set and a step was completed) and raises `FloatingPointError`
  naming the step, the non-finite quantities and the checkpoint.
- `"skip"`: the step counter moves on (the next batch and key are used), the update is
  dropped, and `skipped_steps` counts it (logged in every record, kept in checkpoints);
  more than `max_skips` non-finite steps in a row raise as in `"raise"`.

Unlike `optax.apply_if_finite`, which accepts the non-finite update after
`max_consecutive_errors` rejections, the update is never applied, and the loss is checked
as well as the gradient (a solve that fails with `throw=False` gives an infinite loss and a
finite gradient).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, PyTree

__all__ = ["check_nonfinite_options", "finite_report", "guard_step", "nonfinite_message"]

MODES = ("raise", "skip")


def check_nonfinite_options(on_nonfinite: Any, max_skips: Any) -> None:
    """Raise `ValueError` for an unknown `on_nonfinite` or a bad `max_skips`."""
    if on_nonfinite not in MODES:
        raise ValueError(
            f"fit(on_nonfinite={on_nonfinite!r}) must be 'raise' (stop with an error at the "
            "first NaN/inf loss or gradient, keeping the last good checkpoint) or 'skip' (drop "
            "that update and count it)."
        )
    if not isinstance(max_skips, (int, np.integer)) or isinstance(max_skips, bool) or max_skips < 0:
        raise ValueError(
            f"fit(max_skips={max_skips!r}) must be a non-negative int: how many non-finite "
            "steps in a row on_nonfinite='skip' drops before it stops with an error."
        )


def finite_report(objective, metrics: dict[str, Any], grads: PyTree) -> dict[str, Any]:
    """Inside the step: which of the loss, the penalty and the gradient leaves are finite,
    and whether every solve succeeded (`metrics["solve_failed"]`, from `solution_aux`).

    **Returns:** `{"ok", "loss", "penalty", "solved"}` bool scalars and `"grads"` (one bool
    per gradient leaf).
    """
    leaves = jax.tree_util.tree_leaves(grads)
    per_leaf = [jnp.all(jnp.isfinite(g)) for g in leaves]
    solved = metrics.get("solve_failed", 0.0) == 0
    ok = jnp.isfinite(objective) & solved
    for f in per_leaf:
        ok = ok & f
    return {
        "ok": ok,
        "loss": jnp.isfinite(metrics["loss"]),
        "penalty": jnp.isfinite(metrics.get("penalty", 0.0)),
        "solved": solved,
        "grads": per_leaf,
    }


def guard_step(state, new_state, ok: Bool[Array, ""], on_nonfinite: str):
    """Inside the step: `new_state` if `ok`, else the last good state.

    Under `"raise"` a non-finite step returns `state` unchanged; under `"skip"` it returns
    `state` with the step counter, `skipped_steps` and `skip_streak` advanced.
    """
    if on_nonfinite == "raise":
        bad = state
    else:
        bad = dataclasses.replace(
            state,
            step=state.step + 1,
            skipped_steps=state.skipped_steps + 1,
            skip_streak=state.skip_streak + 1,
        )
    good = dataclasses.replace(new_state, skip_streak=jnp.zeros_like(state.skip_streak))
    return jax.tree_util.tree_map(
        lambda g, b: jnp.where(ok, g, b) if eqx.is_array(g) else g, good, bad
    )


def _grad_paths(model: PyTree) -> list[str]:
    params = eqx.filter(model, eqx.is_inexact_array)
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _run(streak: int) -> str:
    return f" ({streak} non-finite steps in a row, more than max_skips)" if streak > 1 else ""


def nonfinite_message(
    step: int, report: dict[str, Any], model: PyTree, metrics: dict[str, Any], streak: int
) -> str:
    """The `FloatingPointError` message for a non-finite step (host side)."""
    bad = []
    if not bool(report["solved"]):
        bad.append(
            f"a solve failed in {100 * float(metrics['solve_failed']):.3g} % of the batch "
            "(its result is not successful, e.g. max_steps reached under throw=False)"
        )
    if not bool(report["loss"]):
        bad.append(f"loss ({float(metrics['loss'])})")
    if not bool(report["penalty"]):
        bad.append(f"penalty ({float(metrics.get('penalty', float('nan')))})")
    paths = _grad_paths(model)
    leaves = [p for p, f in zip(paths, report["grads"], strict=True) if not bool(f)]
    if leaves:
        shown = ", ".join(leaves[:4]) + (f" and {len(leaves) - 4} more" if len(leaves) > 4 else "")
        bad.append(f"the gradient of {shown}")
    what = "; ".join(bad) or "the objective (loss + penalty)"
    if not bool(report["solved"]):
        return (
            f"fit: {what} at step {step}{_run(streak)}. The update was not applied. Raise the "
            "solve's max_steps, loosen its rtol/atol, regularize the dynamics (e.g. "
            "ndes.ErrorEstimate), or pass on_nonfinite='skip' to drop such updates."
        )
    return (
        f"fit: a non-finite (NaN/inf) value at step {step}{_run(streak)}: {what}. The "
        "update was not applied. Common causes: a learning rate too large, unstandardised "
        "data, a regularizer weight too large. Resume from the last good checkpoint with a "
        "smaller learning rate, or pass on_nonfinite='skip' to drop such updates and count "
        "them."
    )
