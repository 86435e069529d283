"""BudgetWeight: a regularizer weight set by a cost budget instead of by hand."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

__all__ = [
    "BudgetState",
    "BudgetWeight",
    "find_budget_weights",
    "substitute_budget_weights",
    "with_nfe_budget",
]

_TINY = 1e-12


class BudgetState(eqx.Module):
    """The adapted state of one `BudgetWeight` (all scalar arrays; a pytree, checkpointed).

    - `weight`: the weight to use at the next step (0 during the warm-up).
    - `reference_nfe`: the NFE measured during the warm-up without the penalty (the mean
      over its second half); what a relative `target` is a fraction of.
    - `loss_scale`: the largest |task loss| seen during the warm-up (typically the initial
      loss); what the starting weight is scaled by.
    - `nfe_average`: an exponential moving average of the measured NFE (the controller's
      input; one batch's NFE is noisy).
    - `log_integral`: the integral part of log(weight).
    - `step`: how many updates have been made.
    """

    weight: Float[Array, ""]
    reference_nfe: Float[Array, ""]
    loss_scale: Float[Array, ""]
    nfe_average: Float[Array, ""]
    log_integral: Float[Array, ""]
    step: Int[Array, ""]


class BudgetWeight(eqx.Module):
    r"""A regularizer weight adapted so that a solve costs a stated budget.

    The user states the cost, not a weight: `target=0.5` asks for half the function
    evaluations (NFE) the model takes without the penalty; `target_nfe=60` for an absolute
    NFE per solve. Training finds the weight. Use it in place of a number as any ndes
    regularizer's `weight` under `ndes.fit`
    (`ndes.ErrorEstimate(weight=ndes.BudgetWeight(target=0.5))`), or drive it by hand in
    your own loop with the optax-style pair `init_state()` / `update(state, nfe, loss, value)`.

    **The rule.** Three phases, all inside one jitted step (no recompiles):

    1. *Warm-up* (`warmup` steps): the weight is 0, so training is unregularized; the mean
       NFE of the warm-up's second half is the *reference* $N_0$ (the relative target is
       $N = \text{target}\cdot N_0$).
    2. *Start*: at the end of the warm-up the weight starts at `init`, or, when `init` is
       `None` (default), at $w_0 = \rho\,\max|\mathcal{L}| / R$ with $\rho$ =
       `init_ratio`, $\max|\mathcal{L}|$ the largest task loss of the warm-up (typically
       the first: a fitted training loss can be near 0) and $R$ the regularizer's
       unweighted value at that step: the penalty starts as a fixed fraction $\rho$ of the
       loss's scale, whatever the units of either.
    3. *Adapt*: with $e = \operatorname{clip}(\log(\bar N / N), -1, 1)$, where $\bar N$ is
       an exponential moving average of the measured NFE (decay `average`), after every
       step
       $$I \leftarrow I + \eta\,e, \qquad \log w = I + \kappa\,e,$$
       a proportional-integral controller in log space (as adaptive step-size controllers
       are, Söderlind 2002): the integral $I$ (started at $\log w_0$) is the slow dual
       ascent on $\mathbb{E}[\mathrm{NFE}] \le N$; the proportional term ($\kappa$ =
       `gain`) pushes at once while solves are over budget and *lets go at once* when they
       fall below it. The cost answers the weight with a lag of tens of optimiser steps; a
       pure integral fast enough to matter overshoots through that lag and collapses the
       model (measured: see docs/training.md), the proportional term damps it. Both are
       scale-free: they depend on the *ratio* NFE/N, never on the loss's or the penalty's
       units, so $\eta$ and $\kappa$ need no tuning per problem.

    NFE is the number of vector-field evaluations per solve that the loss reports for the
    step (`aux["num_fevals"]`, averaged over a `vmap`ped batch). The reference is measured
    early in training: a model whose unregularized cost keeps growing afterwards is held
    to a fraction of its *early* cost (stricter than of its final one); `docs/training.md`
    shows both on the generalization suite.

    **Arguments:**

    - `target`: the budget as a fraction of the warm-up NFE, in (0, 1] (e.g. 0.5). Give
      exactly one of `target` and `target_nfe`.
    - `target_nfe`: the budget as an absolute NFE per solve (> 0).
    - `lr`: $\eta$, the integral gain: the largest change of $I$ per step (> 0; default
      0.02: a factor of about 2 in 35 steps at twice the budget).
    - `gain`: $\kappa$, the proportional gain (>= 0; default 1: $w$ is $e\times$ its
      integral at $e\times$ the budget).
    - `average`: the decay of the NFE's moving average, in [0, 1) (default 0.9).
    - `warmup`: unregularized steps before the weight starts (>= 1 with `target`, whose
      reference they measure), or a fraction in (0, 1) of the training steps (`ndes.fit`
      resolves it; see `for_steps`). Default: 40 % of training with `target` (the
      unregularized NFE grows while the model learns, so a short warm-up measures too low
      a reference: see docs/training.md); with `target_nfe`, 0 when `init` is given (start
      there), else 1.
    - `init`: the starting weight (> 0), or `None` to start at `init_ratio` of the loss.
    - `init_ratio`: $\rho$ (> 0).
    - `max_weight`: optional upper clip of the weight.

    **Reference:** the constrained-optimisation view of a cost budget follows Platt & Barr,
    "Constrained differential optimization", NeurIPS 1987 (gradient ascent on the
    multiplier); the log-space step is the multiplicative-weights form of that ascent.
    """

    target: float | None = eqx.field(static=True, default=None)
    target_nfe: float | None = eqx.field(static=True, default=None)
    lr: float = eqx.field(static=True, default=0.02)
    gain: float = eqx.field(static=True, default=1.0)
    average: float = eqx.field(static=True, default=0.9)
    warmup: int | float | None = eqx.field(static=True, default=None)
    init: float | None = eqx.field(static=True, default=None)
    init_ratio: float = eqx.field(static=True, default=0.1)
    max_weight: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        def number(x):
            return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x

        if (self.target is None) == (self.target_nfe is None):
            raise ValueError(
                "BudgetWeight needs exactly one of target= (a fraction of the unregularized "
                "NFE, e.g. 0.5) or target_nfe= (an absolute NFE per solve); got "
                f"target={self.target!r}, target_nfe={self.target_nfe!r}."
            )
        if self.target is not None and not (number(self.target) and 0 < self.target <= 1):
            raise ValueError(
                f"BudgetWeight(target={self.target!r}) must be a fraction in (0, 1]: the share "
                "of the unregularized cost you are willing to pay (e.g. 0.5)."
            )
        if self.target_nfe is not None and not (number(self.target_nfe) and self.target_nfe > 0):
            raise ValueError(
                f"BudgetWeight(target_nfe={self.target_nfe!r}) must be a positive number: the "
                "function evaluations per solve you are willing to pay."
            )
        if not (number(self.lr) and self.lr > 0):
            raise ValueError(f"BudgetWeight(lr={self.lr!r}) must be a positive number.")
        if not (number(self.gain) and self.gain >= 0):
            raise ValueError(f"BudgetWeight(gain={self.gain!r}) must be a non-negative number.")
        if not (number(self.average) and 0 <= self.average < 1):
            raise ValueError(f"BudgetWeight(average={self.average!r}) must lie in [0, 1).")
        min_warmup = 1 if (self.target is not None or self.init is None) else 0
        fraction = isinstance(self.warmup, float) and 0.0 < self.warmup < 1.0
        if (
            self.warmup is not None
            and not fraction
            and not (
                isinstance(self.warmup, int)
                and not isinstance(self.warmup, bool)
                and self.warmup >= min_warmup
            )
        ):
            why = (
                "a relative target measures its reference NFE during the warm-up"
                if self.target is not None
                else "init=None sets the starting weight from the loss after the warm-up"
            )
            raise ValueError(
                f"BudgetWeight(warmup={self.warmup!r}) must be an int >= {min_warmup}"
                + (f" ({why})" if min_warmup else "")
                + ", or a fraction in (0, 1) of the training steps."
            )
        if self.init is not None and not (number(self.init) and self.init > 0):
            raise ValueError(
                f"BudgetWeight(init={self.init!r}) must be a positive number, or None to start "
                "at init_ratio times the loss."
            )
        if not (number(self.init_ratio) and self.init_ratio > 0):
            raise ValueError(
                f"BudgetWeight(init_ratio={self.init_ratio!r}) must be a positive number."
            )
        if self.max_weight is not None and not (
            number(self.max_weight) and self.max_weight >= (self.init or 0.0)
        ):
            raise ValueError(
                f"BudgetWeight(max_weight={self.max_weight!r}) must be a number >= "
                f"init={self.init!r}."
            )

    @property
    def warmup_steps(self) -> int:
        """`warmup` in steps. Defaults: 40 % of training for a relative target (resolved by
        `for_steps`, which `ndes.fit` calls); for an absolute target none with an `init`
        (start there at once), else 1 (one step measures the loss and the penalty that set
        the starting weight)."""
        w = self.warmup
        if w is None and self.target is not None:
            w = 0.4
        if isinstance(w, float):
            raise ValueError(
                f"BudgetWeight(target={self.target!r}) warms up for a fraction ({w}) of the "
                "training steps, which only ndes.fit knows; in your own loop pass "
                "warmup=N steps, or call budget.for_steps(total_steps) first."
            )
        if w is not None:
            return w
        return 0 if self.init is not None else 1

    def for_steps(self, total_steps: int) -> "BudgetWeight":
        """This budget with a fractional (or default) `warmup` turned into steps of a run of
        `total_steps` (at least 1)."""
        w = self.warmup
        if w is None and self.target is not None:
            w = 0.4
        if not isinstance(w, float):
            return self
        return dataclasses.replace(self, warmup=max(1, int(round(w * total_steps))))

    def init_state(self, dtype=None) -> BudgetState:
        """The state before the first step (weight 0 during the warm-up, else `init`)."""
        dtype = jnp.result_type(float) if dtype is None else dtype
        w0 = self.init if self.warmup_steps == 0 else 0.0
        return BudgetState(
            weight=jnp.asarray(w0, dtype),
            reference_nfe=jnp.zeros((), dtype),
            loss_scale=jnp.zeros((), dtype),
            nfe_average=jnp.zeros((), dtype),
            log_integral=jnp.log(jnp.asarray(max(w0, _TINY), dtype)),
            step=jnp.zeros((), jnp.int32),
        )

    def budget(self, state: BudgetState) -> Float[Array, ""]:
        """The target NFE $N$ in force (the relative target times the reference)."""
        if self.target_nfe is not None:
            return jnp.asarray(self.target_nfe, state.weight.dtype)
        return self.target * state.reference_nfe

    def update(
        self,
        state: BudgetState,
        nfe: Float[ArrayLike, ""],
        loss: Float[ArrayLike, ""] | None = None,
        value: Float[ArrayLike, ""] | None = None,
    ) -> BudgetState:
        """One step of the rule (see the class docstring); pure and jit-safe.

        **Arguments:**

        - `state`: the current `BudgetState`.
        - `nfe`: the function evaluations per solve measured at this step.
        - `loss`, `value`: the task loss and the regularizer's unweighted value
          (`sol.penalty_terms[name]`) at this step; needed only when `init` is `None`
          (they set the starting weight at the end of the warm-up).

        **Returns:** the next `BudgetState`. Gradients are stopped: the weight is a dual
        variable, not a parameter.
        """
        sg = jax.lax.stop_gradient
        dtype = state.weight.dtype
        nfe = sg(jnp.asarray(nfe, dtype))
        k = state.step
        # Reference: running mean of the NFE over the warm-up's second half.
        lo = self.warmup_steps // 2
        in_ref = (k >= lo) & (k < self.warmup_steps)
        n_seen = (k - lo + 1).astype(dtype)
        ref = jnp.where(
            in_ref, state.reference_nfe + (nfe - state.reference_nfe) / n_seen, state.reference_nfe
        )
        # Start value at the end of the warm-up.
        loss_scale = state.loss_scale
        if self.init is not None:
            w_start = jnp.asarray(self.init, dtype)
        else:
            if loss is None or value is None:
                raise ValueError(
                    "BudgetWeight(init=None).update needs loss= and value= (the task loss and "
                    "the regularizer's unweighted value) to set the starting weight; pass them, "
                    "or give BudgetWeight an explicit init=."
                )
            loss = sg(jnp.abs(jnp.asarray(loss, dtype)))
            value = sg(jnp.asarray(value, dtype))
            loss_scale = jnp.where(
                k < self.warmup_steps, jnp.maximum(state.loss_scale, loss), state.loss_scale
            )
            w_start = self.init_ratio * loss_scale / jnp.maximum(value, _TINY)
        # Adapt: a PI controller on the log of the (averaged) NFE over the budget.
        avg = jnp.where(k == 0, nfe, self.average * state.nfe_average + (1 - self.average) * nfe)
        budget = self.target_nfe if self.target_nfe is not None else self.target * ref
        error = jnp.clip(jnp.log(jnp.maximum(avg, _TINY) / jnp.maximum(budget, _TINY)), -1.0, 1.0)
        warmup = self.warmup_steps
        starting = k + 1 == warmup
        log_integral = jnp.where(
            starting,
            jnp.log(jnp.maximum(w_start, _TINY)),
            jnp.where(k + 1 < warmup, state.log_integral, state.log_integral + self.lr * error),
        )
        if self.max_weight is not None:
            log_integral = jnp.minimum(log_integral, jnp.log(self.max_weight))
        adapted = jnp.exp(log_integral + jnp.where(starting, 0.0, self.gain * error))
        weight = jnp.where(k + 1 < warmup, 0.0, adapted)
        weight = jnp.where(jnp.isfinite(weight), weight, state.weight)
        log_integral = jnp.where(jnp.isfinite(log_integral), log_integral, state.log_integral)
        if self.max_weight is not None:
            weight = jnp.minimum(weight, self.max_weight)
        return BudgetState(
            weight=weight.astype(dtype),
            reference_nfe=ref,
            loss_scale=loss_scale,
            nfe_average=avg,
            log_integral=log_integral.astype(dtype),
            step=k + 1,
        )

    def __call__(self, train_step):
        raise ValueError(
            "A BudgetWeight gets its value from its BudgetState: under ndes.fit pass the "
            "regularizer to fit(..., regularizers=...); in your own loop use "
            "regularizer with weight=budget_state.weight and call BudgetWeight.update after "
            "each step (see docs/training.md)."
        )


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
