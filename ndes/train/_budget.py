"""BudgetWeight: a regularizer weight set by a cost budget instead of by hand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

__all__ = ["BudgetWeight", "find_budget_weights", "substitute_budget_weights", "with_nfe_budget"]


class BudgetWeight(eqx.Module):
    r"""A regularizer weight adapted by dual ascent so that a solve costs `target_nfe`.

    Use it in place of a number as the `weight` of any ndes regularizer passed to
    `ndes.fit`, e.g. `ndes.ErrorEstimate(weight=ndes.BudgetWeight(target_nfe=60))`.
    `ndes.fit` keeps the current weight $w$ as an array in its training state (so changing
    it never recompiles), hands the regularizer that array, and after every step updates

    $$w \leftarrow \max\Big(0,\; w + \eta\,\frac{\mathrm{NFE} - N}{N}\Big)$$

    where NFE is the number of vector-field evaluations per solve that the loss reported
    for that step (`aux["num_fevals"]`, averaged) and $N$ is `target_nfe`. This is
    projected (sub)gradient ascent on the Lagrange multiplier of the constraint
    $\mathbb{E}[\mathrm{NFE}] \le N$: the weight grows while solves are too expensive
    and shrinks (down to zero) once they are cheaper than the budget.

    **Arguments:**

    - `target_nfe`: the budget $N$, function evaluations per solve (> 0).
    - `lr`: the dual step size $\eta$ (>= 0). The update is relative to the target, so
      `lr` is in units of weight per 100% budget overrun. Keep it small next to the weights
      at which the penalty bites: too large and the weight overshoots, collapsing the solve
      (measured in `docs/training.md`; about a tenth of a known-good `init` worked).
    - `init`: the starting weight $w_0$ (>= 0).
    - `max_weight`: optional upper clip for the weight (`None`: no clip).

    Outside `ndes.fit` a `BudgetWeight` has no value: calling it (as a schedule would be
    called by `ndes.diffeqsolve`) raises a `ValueError`.
    """

    target_nfe: float = eqx.field(static=True)
    lr: float = eqx.field(static=True, default=0.1)
    init: float = eqx.field(static=True, default=0.0)
    max_weight: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if not (isinstance(self.target_nfe, (int, float)) and self.target_nfe > 0):
            raise ValueError(
                f"BudgetWeight(target_nfe={self.target_nfe!r}) must be a positive number: the "
                "function evaluations per solve you are willing to pay."
            )
        if not (isinstance(self.lr, (int, float)) and self.lr >= 0):
            raise ValueError(f"BudgetWeight(lr={self.lr!r}) must be a non-negative number.")
        if not (isinstance(self.init, (int, float)) and self.init >= 0):
            raise ValueError(f"BudgetWeight(init={self.init!r}) must be a non-negative number.")
        if self.max_weight is not None and not self.max_weight >= self.init:
            raise ValueError(
                f"BudgetWeight(max_weight={self.max_weight!r}) must be >= init={self.init!r}."
            )

    def initial(self, dtype=None) -> Float[Array, ""]:
        """The starting weight as a scalar array."""
        return jnp.asarray(self.init, dtype=dtype)

    def update(self, weight: Float[ArrayLike, ""], nfe: Float[ArrayLike, ""]) -> Float[Array, ""]:
        """One dual-ascent step (see the class docstring); pure and jit-safe.

        **Arguments:**

        - `weight`: the current weight.
        - `nfe`: the measured function evaluations per solve at this weight.

        **Returns:** the new weight, `max(0, weight + lr * (nfe - target_nfe) / target_nfe)`
        (clipped to `max_weight` when given). The gradient is stopped: the weight is a
        dual variable, not a parameter.
        """
        weight = jnp.asarray(weight)
        nfe = jax.lax.stop_gradient(jnp.asarray(nfe, weight.dtype))
        new = weight + self.lr * (nfe - self.target_nfe) / self.target_nfe
        new = jnp.maximum(new, 0.0)
        if self.max_weight is not None:
            new = jnp.minimum(new, self.max_weight)
        return new.astype(weight.dtype)

    def __call__(self, train_step):
        raise ValueError(
            "A BudgetWeight gets its value from ndes.fit (it is adapted in the training state); "
            "pass the regularizer to ndes.fit(..., regularizers=...), or use a number or an "
            "optax schedule as the weight when calling ndes.diffeqsolve directly."
        )


def _is_bw(x) -> bool:
    return isinstance(x, BudgetWeight)


def _reg_name(reg, i: int) -> str:
    name = getattr(reg, "name", None)
    return name if isinstance(name, str) else f"{type(reg).__name__}"


def find_budget_weights(regularizers: Sequence[Any]) -> tuple[tuple[str, BudgetWeight], ...]:
    """Every `BudgetWeight` inside `regularizers`, in a fixed order, with a unique name.

    The name is the regularizer's name (suffixed `_1`, `_2`, ... on repeats), used as the
    key of `budget_weights` in the metrics.
    """
    found: list[tuple[str, BudgetWeight]] = []
    seen: dict[str, int] = {}
    for i, reg in enumerate(regularizers):
        leaves = [x for x in jax.tree_util.tree_leaves(reg, is_leaf=_is_bw) if _is_bw(x)]
        for bw in leaves:
            base = _reg_name(reg, i)
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


def with_nfe_budget(regularizers: Sequence[Any], target_nfe: float, lr: float) -> tuple:
    """`fit(..., nfe_budget=N)`: turn every numeric regularizer weight into a `BudgetWeight`
    starting from that number."""
    if not regularizers:
        raise ValueError(
            "fit(nfe_budget=...) adapts regularizer weights, but `regularizers` is empty: pass "
            "e.g. regularizers=(ndes.ErrorEstimate(weight=1e-2),)."
        )
    out = []
    for reg in regularizers:
        w = getattr(reg, "weight", None)
        if _is_bw(w):
            out.append(reg)
            continue
        if callable(w) or w is None:
            raise ValueError(
                f"fit(nfe_budget=...) cannot adapt {type(reg).__name__}.weight={w!r}: it must be "
                "a number (the initial weight). Use a number, or give that regularizer its own "
                "ndes.BudgetWeight."
            )
        out.append(
            eqx.tree_at(lambda r: r.weight, reg, BudgetWeight(target_nfe, lr=lr, init=float(w)))
        )
    return tuple(out)
