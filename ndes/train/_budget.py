"""BudgetWeight: a regularizer weight set by a cost budget instead of by hand."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .._checks import finite_real

__all__ = ["BudgetState", "BudgetWeight"]

_TINY = 1e-12


def _plain_float(x):
    """A NumPy or 0-d array scalar as a Python float (these fields are static: hashable
    Python numbers, not arrays); anything else unchanged, for `__check_init__` to judge."""
    if isinstance(x, np.generic | np.ndarray | jax.Array) and finite_real(x) is not None:
        return float(x)
    return x


class BudgetState(eqx.Module):
    """The adapted state of one `BudgetWeight` (all scalar arrays; a pytree, checkpointed).

    - `weight`: the weight to use at the next step (0 until the budget starts).
    - `reference_nfe`: the unregularized NFE: the moving average of the NFE until the
      budget starts, then frozen; what a relative `target` is a fraction of.
    - `loss_scale`: the highest moving average of the task loss before the start (typically
      the initial loss): the scale of "has the model learned" and of the guard's floor.
    - `nfe_average`, `loss_average`: exponential moving averages of the measured NFE and
      task loss (one batch's values are noisy).
    - `loss_best`: the lowest `loss_average` since the budget started (the guard's anchor).
    - `log_integral`: log of the weight once started.
    - `log_start`: log of the starting weight, the weight's floor.
    - `started`: whether the budget has started.
    - `held`: how many steps the quality guard has released the weight (a diagnostic: a
      budget that is held most of the time cannot be met at the loss it allows).
    - `step`: how many updates have been made.
    """

    weight: Float[Array, ""]
    reference_nfe: Float[Array, ""]
    loss_scale: Float[Array, ""]
    nfe_average: Float[Array, ""]
    loss_average: Float[Array, ""]
    loss_best: Float[Array, ""]
    log_integral: Float[Array, ""]
    log_start: Float[Array, ""]
    started: Bool[Array, ""]
    held: Int[Array, ""]
    step: Int[Array, ""]


class BudgetWeight(eqx.Module):
    r"""A regularizer weight adapted so that a solve costs a stated budget.

    The user states the cost, not a weight: `target=0.5` asks for half the function
    evaluations (NFE) the model takes without the penalty; `target_nfe=60` for an absolute
    NFE per solve. Training finds the weight. Use it in place of a number as any ndes
    regularizer's `weight` under `ndes.fit`
    (`ndes.ErrorEstimate(weight=ndes.BudgetWeight(target=0.5))`), or drive it by hand in
    your own loop with the optax-style pair `init_state()` / `update(state, nfe, loss, value)`.

    **The rule.** Three phases, all inside one jitted step (no recompiles). $\bar N$ and
    $\bar{\mathcal L}$ are exponential moving averages of the measured NFE and task loss
    (decays `average` and `loss_average`).

    1. *Warm-up*: the weight is 0 for at least `warmup` steps, and until the model has
       learned: $\bar{\mathcal L} \le \mathcal L_0 - \text{learned}\,|\mathcal L_0|$, with
       $\mathcal L_0$ the highest $\bar{\mathcal L}$ so far (typically the initial loss).
       A penalty switched on while the model is still on its initial plateau keeps it there
       (measured: docs/training.md). The reference $N_0$ is $\bar N$ at the start; a
       relative budget is $N = \text{target}\cdot N_0$.
    2. *Start*: the weight starts at `init`, or, when `init` is `None` (default), at
       $w_0 = \rho\,|\bar{\mathcal L}| / R$ ($\rho$ = `init_ratio`, $R$ the regularizer's
       unweighted value at that step): the penalty starts as a small fraction of the
       *current* loss, whatever the units of either.
    3. *Adapt*: with $e = \operatorname{clip}(\log(\bar N / N), -1, 1)$, after every step
       $$\log w \leftarrow \log w + \begin{cases} \eta\,e & e > 0 \\ \eta_r\,e & e \le 0
       \end{cases}$$
       a multiplicative (log-space) dual ascent on $\mathbb E[\mathrm{NFE}] \le N$ that
       raises the weight slowly ($\eta$ = `lr`) and releases it fast ($\eta_r$ =
       `release`): the cost answers the weight with a lag of tens of steps, and a weight
       too high for that long collapses the model, which does not come back (measured:
       docs/training.md); a weight too low only costs time.
       **Quality guard** (`tolerance`): while
       $\bar{\mathcal L} > \mathcal L^\ast + \text{tolerance}\cdot
       \max(|\mathcal L^\ast|, \text{floor}\,|\mathcal L_0|)$ (a band $b$ above
       $\mathcal L^\ast$, the lowest $\bar{\mathcal L}$ since the start), the weight is
       released whatever the cost, the faster the further the loss is out of the band:
       $e = -\min(1, \text{excess}/b)$. The weight never falls below its start $w_0$ (a
       penalty of a hundredth of the loss, harmless on every problem measured). When the
       budget and "nearly as good" conflict, the loss wins and `BudgetState.held` counts
       the steps it did.

    Every quantity is a ratio (NFE to budget, loss to its own scale), so the defaults do
    not depend on the units of the loss or the penalty.

    NFE is the number of vector-field evaluations per solve that the loss reports for the
    step (`aux["num_fevals"]`, averaged over a `vmap`ped batch).

    **Arguments:**

    - `target`: the budget as a fraction of the unregularized NFE, in (0, 1] (e.g. 0.5).
      Give exactly one of `target` and `target_nfe`. The reference is the NFE measured up
      to the start (the end of the warm-up), not the cost unregularized training would end
      at: where that cost keeps growing after the start, the budget is a fraction of an
      earlier, smaller cost.
    - `target_nfe`: the budget as an absolute NFE per solve (> 0).
    - `lr`: $\eta$, the raise per step at $e = 1$ (> 0; default 0.1: at twice the budget
      the weight doubles in 10 steps).
    - `release`: $\eta_r$, the release per step at $e = -1$ (> 0; default 0.25: the guard
      halves the weight in 3 steps).
    - `average`, `loss_average`: the decays of the moving averages, in [0, 1) (defaults
      0.9 and 0.8).
    - `tolerance`: the quality guard's allowed rise of the task loss, relative (default
      0.1), or `None` to pursue the budget whatever the loss.
    - `floor`: the guard's floor as a fraction of the initial loss $|\mathcal L_0|$
      (default 0.05): a fitted training loss near 0 would otherwise allow no rise at all.
    - `learned`: the fall of the loss below its warm-up high that starts the budget
      (default 0.1; 0 starts at the end of `warmup`).
    - `warmup`: steps before the weight may start (>= 1 with `target`, whose reference they
      measure), or a fraction in (0, 1) of the training steps (`ndes.fit` resolves it; see
      `for_steps`). Default: 40 % of training with `target`; with `target_nfe`, 0 when
      `init` is given (start there, at once), else 1.
    - `init`: the starting weight (> 0), or `None` to start at `init_ratio` of the loss.
    - `init_ratio`: $\rho$ (> 0; default 0.01).
    - `max_weight`: optional upper clip of the weight.

    **Reference:** the constrained-optimisation view of a cost budget follows Platt & Barr,
    "Constrained differential optimization", NeurIPS 1987 (gradient ascent on the
    multiplier); the log-space step is the multiplicative-weights form of that ascent.
    """

    target: float | None = eqx.field(static=True, default=None, converter=_plain_float)
    target_nfe: float | None = eqx.field(static=True, default=None, converter=_plain_float)
    lr: float = eqx.field(static=True, default=0.1, converter=_plain_float)
    release: float = eqx.field(static=True, default=0.25, converter=_plain_float)
    average: float = eqx.field(static=True, default=0.9, converter=_plain_float)
    loss_average: float = eqx.field(static=True, default=0.8, converter=_plain_float)
    tolerance: float | None = eqx.field(static=True, default=0.1, converter=_plain_float)
    floor: float = eqx.field(static=True, default=0.05, converter=_plain_float)
    learned: float = eqx.field(static=True, default=0.1, converter=_plain_float)
    warmup: int | float | None = eqx.field(static=True, default=None)
    init: float | None = eqx.field(static=True, default=None, converter=_plain_float)
    init_ratio: float = eqx.field(static=True, default=0.01, converter=_plain_float)
    max_weight: float | None = eqx.field(static=True, default=None, converter=_plain_float)

    def __check_init__(self):
        def number(x):  # a finite real (NumPy and 0-d array scalars too), not a bool
            return finite_real(x) is not None

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
        for name in ("lr", "release"):
            v = getattr(self, name)
            if not (number(v) and v > 0):
                raise ValueError(f"BudgetWeight({name}={v!r}) must be a positive number.")
        for name in ("average", "loss_average"):
            v = getattr(self, name)
            if not (number(v) and 0 <= v < 1):
                raise ValueError(f"BudgetWeight({name}={v!r}) must lie in [0, 1).")
        if self.tolerance is not None and not (number(self.tolerance) and self.tolerance >= 0):
            raise ValueError(
                f"BudgetWeight(tolerance={self.tolerance!r}) must be a non-negative number (the "
                "allowed relative rise of the loss, e.g. 0.1), or None to disable the guard."
            )
        for name in ("floor", "learned"):
            v = getattr(self, name)
            if not (number(v) and 0 <= v < 1):
                raise ValueError(f"BudgetWeight({name}={v!r}) must lie in [0, 1).")
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
        """The state before the first step (weight 0 until the start, or `init` at once
        when there is no warm-up)."""
        dtype = jnp.result_type(float) if dtype is None else dtype
        at_once = self.warmup_steps == 0
        w0 = self.init if at_once else 0.0
        zero = jnp.zeros((), dtype)
        return BudgetState(
            weight=jnp.asarray(w0, dtype),
            reference_nfe=zero,
            loss_scale=zero,
            nfe_average=zero,
            loss_average=zero,
            loss_best=zero,
            log_integral=jnp.log(jnp.asarray(max(w0, _TINY), dtype)),
            log_start=jnp.log(jnp.asarray(max(w0, _TINY), dtype)),
            started=jnp.asarray(at_once),
            held=jnp.zeros((), jnp.int32),
            step=jnp.zeros((), jnp.int32),
        )

    def budget(self, state: BudgetState) -> Float[Array, ""]:
        """The target NFE $N$ in force (the relative target times the reference)."""
        if self.target_nfe is not None:
            return jnp.asarray(self.target_nfe, state.weight.dtype)
        return self.target * state.reference_nfe

    def _needs_loss(self) -> bool:
        return self.init is None or self.tolerance is not None or self.learned > 0

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
        - `loss`: the task loss at this step (without the penalty); needed unless
          `tolerance=None`, `learned=0` and `init` is given.
        - `value`: the regularizer's unweighted value (`sol.penalty_terms[name]`); needed
          when `init` is `None` (it sets the starting weight).

        **Returns:** the next `BudgetState`. Gradients are stopped: the weight is a dual
        variable, not a parameter.
        """
        sg = jax.lax.stop_gradient
        dtype = state.weight.dtype
        nfe = sg(jnp.asarray(nfe, dtype))
        if loss is None:
            if self._needs_loss():
                raise ValueError(
                    "BudgetWeight.update needs loss= (the task loss, without the penalty): it "
                    "tells when the model has learned, guards the loss, and sets the start. "
                    "Pass it, or use tolerance=None, learned=0 and an explicit init=."
                )
            loss = jnp.zeros((), dtype)
        if self.init is None and value is None:
            raise ValueError(
                "BudgetWeight(init=None).update needs value= (the regularizer's unweighted "
                "value, sol.penalty_terms[name]) to set the starting weight; pass it, or give "
                "BudgetWeight an explicit init=."
            )
        loss = sg(jnp.asarray(loss, dtype))
        k, started = state.step, state.started
        first = k == 0
        avg = jnp.where(first, nfe, self.average * state.nfe_average + (1 - self.average) * nfe)
        la = self.loss_average
        lavg = jnp.where(first, loss, la * state.loss_average + (1 - la) * loss)
        scale = jnp.where(
            started, state.loss_scale, jnp.where(first, lavg, jnp.maximum(state.loss_scale, lavg))
        )
        learned = lavg <= scale - self.learned * jnp.abs(scale)
        starting = ~started & (k + 1 >= self.warmup_steps) & learned
        ref = jnp.where(started, state.reference_nfe, avg)
        budget = self.target_nfe if self.target_nfe is not None else self.target * ref
        if self.init is not None:
            w_start = jnp.asarray(self.init, dtype)
        else:
            value = sg(jnp.asarray(value, dtype))
            w_start = self.init_ratio * jnp.abs(lavg) / jnp.maximum(value, _TINY)
        best = jnp.where(starting | first, lavg, jnp.minimum(state.loss_best, lavg))
        best = jnp.where(started | starting, best, state.loss_best)
        error = jnp.clip(jnp.log(jnp.maximum(avg, _TINY) / jnp.maximum(budget, _TINY)), -1, 1)
        if self.tolerance is None:
            held = jnp.zeros((), bool)
        else:
            band = self.tolerance * jnp.maximum(jnp.abs(best), self.floor * jnp.abs(scale))
            excess = (lavg - best - band) / jnp.maximum(band, _TINY)
            held = started & (excess > 0)
            error = jnp.where(held, jnp.minimum(error, -jnp.minimum(excess, 1.0)), error)
        delta = jnp.where(error > 0, self.lr * error, self.release * error)
        log_start = jnp.where(starting, jnp.log(jnp.maximum(w_start, _TINY)), state.log_start)
        log_integral = jnp.where(
            starting,
            log_start,
            jnp.where(
                started, jnp.maximum(state.log_integral + delta, log_start), state.log_integral
            ),
        )
        if self.max_weight is not None:
            log_integral = jnp.minimum(log_integral, jnp.log(self.max_weight))
        log_integral = jnp.where(jnp.isfinite(log_integral), log_integral, state.log_integral)
        on = started | starting
        weight = jnp.where(on, jnp.exp(log_integral), 0.0)
        weight = jnp.where(jnp.isfinite(weight), weight, state.weight)
        return BudgetState(
            weight=weight.astype(dtype),
            reference_nfe=ref,
            loss_scale=scale,
            nfe_average=avg,
            loss_average=lavg,
            loss_best=best,
            log_integral=log_integral.astype(dtype),
            log_start=log_start.astype(dtype),
            started=on,
            held=state.held + held.astype(jnp.int32),
            step=k + 1,
        )

    def __call__(self, train_step):
        raise ValueError(
            "A BudgetWeight gets its value from its BudgetState: under ndes.fit pass the "
            "regularizer to fit(..., regularizers=...); in your own loop use "
            "regularizer with weight=budget_state.weight and call BudgetWeight.update after "
            "each step (see docs/training.md)."
        )
