"""LocalErrorEstimate / LocalStiffnessEstimate (Pal, Ma, Shah, Rackauckas 2023).

Instead of accumulating the solver's error (or stiffness) estimate over every accepted step,
sample one time $t_s$ per trajectory per call, take the state $y(t_s)$ from the solve with its
gradient stopped, make **one** extra differentiable step of the same solver from there, and
penalise that step's estimate. The expensive part of the global regularizers -- back-propagating
through the estimate of every step -- becomes one step.

How $y(t_s)$ is obtained without the (slow) global dense output: a per-step hook
(`_Sampler`, a `RegularizedSolver` hook whose state lives in the solver state, so only accepted
steps count) records it during the solve:

- `sampling="unbiased"`: $t_s \\sim U(t_0, t_1)$ is drawn before the solve. Every accepted step
  $[t_j, t_{j+1})$ with $t_j \\le t_s$ overwrites the record with its own interpolant evaluated
  at $t_s$ (`solver.interpolation_cls(**dense_info).evaluate(t_s)`, the same polynomial diffrax's
  dense output would use) and its step size $h_j$; the last such step is the one containing
  $t_s$. The extra step runs from $t_s$ to $\\min(t_s + h_j, t_1)$ (so that an SDE's Brownian
  path or a CDE's control is never queried beyond the solve's interval).
- `sampling="biased"`: reservoir sampling over the accepted steps (step $n$ replaces the record
  with probability $1/n$, drawn from `fold_in(key, n)`), recording $(t_j, y_j, t_{j+1})$: a uniform
  choice among the accepted step start times (the end time is never a start). The extra step
  then repeats step $j$ exactly, so its value is step $j$'s term of the global estimate.

The step size is the solver's own accepted step there (the controller's choice at $t_s$), held
constant in the gradient, as in the paper.

A local regularizer wraps a step estimate: `AbstractLocalRegularizer.estimate()` names the
`AbstractStepRegularizer` whose `step_value` is applied to the extra step; everything above is
written once here for every estimate.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._base import AbstractRegularizer, AbstractStepHook, Problem, StepInfo, Weight
from ._error import ErrorEstimate
from ._step import AbstractStepRegularizer
from ._stiffness import StiffnessEstimate

__all__ = [
    "AbstractLocalRegularizer",
    "LocalErrorEstimate",
    "LocalStiffnessEstimate",
    "LocalSample",
    "make_sampler",
    "local_step_values",
]

Sampling = Literal["unbiased", "biased"]
_SAMPLINGS = ("unbiased", "biased")


class AbstractLocalRegularizer(AbstractRegularizer):
    """A step estimate read off one extra solver step from a sampled time of the solve.

    A subclass declares its fields and gives `estimate()`: the step regularizer
    (`AbstractStepRegularizer`) whose `step_value` is taken on the extra step. Its weight is
    this regularizer's; its aggregate is irrelevant (one step). Sampling, the extra step, the
    per-trajectory mean of a joint batch, the check and the cost are implemented here, once,
    for every estimate -- a new step regularizer is made local by a final class of a few
    lines.

    **Fields a subclass declares:** `weight`, `batch_axis`, `batch_size` as in
    `AbstractRegularizer` (a joint batch takes the estimate per trajectory and averages);
    `sampling` (static): `"unbiased"` ($t_s \\sim U(t_0, t_1)$, the concrete classes'
    default) or `"biased"` ($t_s$ uniform over the accepted step start times, as Pal et al.
    2023); `key`: the PRNG key that draws $t_s$, required (`None` raises `ValueError`),
    fresh per training step.
    """

    sampling: eqx.AbstractVar[Sampling]
    key: eqx.AbstractVar[PRNGKeyArray | None]

    def __check_init__(self):
        if not (isinstance(self.sampling, str) and self.sampling in _SAMPLINGS):
            raise ValueError(
                f"{self.name}(sampling={self.sampling!r}) must be 'unbiased' (t_s ~ U(t0, t1)) "
                "or 'biased' (uniform over the solver's accepted step start times)."
            )
        if self.key is None:
            raise ValueError(
                f"{self.name}(sampling={self.sampling!r}) needs key= (a PRNG key to draw the "
                f"sample time), e.g. {self.name}(weight, key=jax.random.key(step)); pass a "
                "fresh key per training step (one per trajectory under jax.vmap). To switch "
                "the regularizer off for evaluation, pass regularizers=() instead."
            )

    @abc.abstractmethod
    def estimate(self) -> AbstractStepRegularizer:
        """The step regularizer whose `step_value` this one takes on the extra step (with
        this regularizer's `weight`, `batch_axis` and `batch_size`)."""

    def bind(self, problem: Problem) -> "AbstractLocalRegularizer":
        """The estimate's check, with this regularizer's name in the message."""
        g = self.estimate()
        try:
            g.bind(problem)
        except ValueError as e:
            raise ValueError(str(e).replace(type(g).__name__, self.name)) from None
        return self

    def local_value(self, estimate: AbstractStepRegularizer, info: StepInfo) -> Float[Array, ""]:
        """The value of the extra step `info` (the batch mean of a joint solve's)."""
        v = estimate.trajectory_values(info)
        return jnp.mean(v) if jnp.ndim(v) else v


class LocalErrorEstimate(AbstractLocalRegularizer):
    r"""Penalise the solver's local error estimate of one step from a sampled time.

    Per trajectory and call, one time $t_s$ is sampled (see `sampling`), the state $y(t_s)$ is
    taken from the solve with its gradient stopped, and one extra step of the same solver is
    made from $(t_s, y(t_s))$ with the solve's own step size $h$ there (gradient stopped).
    The penalty is that step's normalised error times its length,

    $$R = E\,|h|, \qquad E = \operatorname{norm}\Big(\frac{e}{\mathrm{atol} +
    \mathrm{rtol}\cdot\max(|y(t_s)|, |y_1|)}\Big),$$

    exactly the per-step term of `ndes.ErrorEstimate` (same norm, same tolerances, same
    `differentiate_scale`), so its expectation over `sampling="biased"` is the global
    penalty divided by the number of accepted steps. Units: time (normalised error times
    step length), per trajectory.

    **Cost.** One extra step -- a full step including the first stage, e.g. 7 evaluations
    for Tsit5 -- counted in `stats["num_fevals"]`; the backward pass goes through that one
    step only, instead of through the estimate of every step. Several local regularizers in
    one solve share one sampled time and one extra step.

    **Gradients** flow into the vector field's parameters and `args` through the extra step;
    $y(t_s)$, $t_s$ and $h$ are constants (the gradient with respect to `y0` is zero).

    Works with every solver with an embedded error estimate (as `ndes.ErrorEstimate`), ODEs
    and SDEs (the extra step queries the Brownian path on $[t_s, t_s + h]$, so use
    `VirtualBrownianTree`).

    **Arguments:**

    - `weight`: a finite non-negative number or a schedule (callable of the training step).
    - `sampling`: `"unbiased"` (default): $t_s \sim U(t_0, t_1)$; `"biased"`: $t_s$ uniform
      over the accepted step start times ($t_1$ excluded), as in the paper.
    - `key`: a PRNG key (`jax.random.key(...)`), required; pass a fresh one per training
      step, and one per trajectory under `jax.vmap` so that trajectories sample different
      times (one key for a joint batch solve: the time is shared, as the steps are).
    - `rtol`, `atol`, `norm`, `differentiate_scale`: as in `ndes.ErrorEstimate`; `None`
      takes the tolerances from the adaptive controller.
    - `batch_axis`, `batch_size`: for a batch solved jointly as one state, $E$ is taken per
      trajectory and averaged (as `ndes.ErrorEstimate`); set by
      `NeuralODE(batch_mode="joint")`.

    Switch it off for evaluation by passing `regularizers=()`.

    **Reference:** Pal, Ma, Shah, Rackauckas, "Locally Regularized Neural Differential
    Equations: Some Black Boxes Were Meant to Remain Closed!", ICML 2023.
    """

    weight: Weight = 1.0
    sampling: Sampling = eqx.field(default="unbiased", static=True)
    key: PRNGKeyArray | None = None
    rtol: float | None = None
    atol: float | None = None
    norm: Callable[[PyTree], Float[Array, ""]] | None = eqx.field(default=None, static=True)
    differentiate_scale: bool = eqx.field(default=False, static=True)
    batch_axis: int | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)

    def estimate(self) -> ErrorEstimate:
        return ErrorEstimate(
            weight=self.weight,
            rtol=self.rtol,
            atol=self.atol,
            norm=self.norm,
            aggregate="sum",
            differentiate_scale=self.differentiate_scale,
            batch_axis=self.batch_axis,
            batch_size=self.batch_size,
        )


class LocalStiffnessEstimate(AbstractLocalRegularizer):
    r"""Penalise Shampine's stiffness estimate of one step from a sampled time.

    As `ndes.LocalErrorEstimate` (one sampled time $t_s$, the state there with its gradient
    stopped, one extra differentiable step of size $h$), but the penalty is that step's
    $\hat\lambda\,|h|$, the per-step value of `ndes.StiffnessEstimate`: $\hat\lambda =
    \lVert f(t+h, y_1) - f(t+h, g)\rVert / \lVert y_1 - g\rVert$ from the last two stages of
    an FSAL method, no evaluations beyond the extra step. Dimensionless, per trajectory.

    **Cost:** one extra step (7 evaluations for Tsit5), shared with any other local
    regularizer in the same solve and counted in `stats["num_fevals"]`.

    Supported solvers: Tsit5, Dopri5, Dopri8 (`ValueError` otherwise).

    **Arguments:**

    - `weight`: a finite non-negative number or a schedule (callable of the training step).
    - `sampling`, `key`: as in `ndes.LocalErrorEstimate`.
    - `batch_axis`, `batch_size`: per-trajectory estimates of a joint batch solve, averaged.

    **Reference:** Pal, Ma, Shah, Rackauckas, "Locally Regularized Neural Differential
    Equations: Some Black Boxes Were Meant to Remain Closed!", ICML 2023.
    """

    weight: Weight = 1.0
    sampling: Sampling = eqx.field(default="unbiased", static=True)
    key: PRNGKeyArray | None = None
    batch_axis: int | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)

    def estimate(self) -> StiffnessEstimate:
        return StiffnessEstimate(
            weight=self.weight,
            aggregate="sum",
            batch_axis=self.batch_axis,
            batch_size=self.batch_size,
        )


# --- the sampler hook ----------------------------------------------------------------------


class LocalSample(eqx.Module):
    """What the sampler recorded: the extra step runs from `t_start` to `t_end` (diffrax's
    normalised time direction) from the state `y`."""

    t_start: Array
    t_end: Array
    y: PyTree[Array]
    count: Array


class _Sampler(AbstractStepHook):
    """Records `(t_s, t_s + h, y(t_s))` on the accepted steps of the solve (see module doc)."""

    time: Array | None  # normalised t_s for "unbiased"; None for "biased"
    key: PRNGKeyArray | None
    t_final: Array  # normalised end of the solve: the extra step never goes beyond it
    time_dtype: Any = eqx.field(static=True)
    y_treedef: Any = eqx.field(static=True)
    y_leaves: tuple[jax.ShapeDtypeStruct, ...] = eqx.field(static=True)

    def init(self, dtype):
        y = jtu.tree_unflatten(self.y_treedef, [jnp.zeros(s.shape, s.dtype) for s in self.y_leaves])
        t = jnp.zeros((), self.time_dtype) if self.time is None else self.time
        t = jnp.asarray(t, self.time_dtype)
        return LocalSample(t, t, y, jnp.zeros((), jnp.int32))

    def update(self, acc: LocalSample, info: StepInfo) -> LocalSample:
        sg = jax.lax.stop_gradient
        t0, t1 = sg(info.t0), sg(info.t1)
        nonempty = t1 > t0
        if self.time is None:
            count = acc.count + nonempty.astype(jnp.int32)
            u = jr.uniform(jr.fold_in(self.key, count), (), self.time_dtype)
            take = nonempty & (u * count < 1)
            t_start, t_end, y = t0, t1, sg(info.y0)
        else:
            count = acc.count + nonempty.astype(jnp.int32)
            ts = self.time
            take = nonempty & (t0 <= ts)
            dense = sg(info.dense_info)
            interp = info.solver.interpolation_cls(t0=t0, t1=t1, **dense)
            t_end = jnp.minimum(ts + (t1 - t0), self.t_final)
            t_start, y = ts, interp.evaluate(ts)

        def pick(new, old):
            return jnp.where(take, jnp.asarray(new).astype(old.dtype), old)

        return LocalSample(
            pick(t_start, acc.t_start),
            pick(t_end, acc.t_end),
            jtu.tree_map(pick, y, acc.y),
            count,
        )

    def finalize(self, acc):
        return acc


def shared_sampling(regs) -> tuple[str, Any]:
    """The `(sampling, key)` shared by all local regularizers of one solve (the first key)."""
    samplings = {r.sampling for r in regs}
    if len(samplings) > 1:
        raise ValueError(
            "All local regularizers of one solve share one sampled time and one extra step, "
            f"so they must use the same sampling=...; got {sorted(map(repr, samplings))}."
        )
    key = next((r.key for r in regs if r.key is not None), None)
    return samplings.pop(), key


def _promote(x, time_dtype) -> Array:
    """`x` as an array of `result_type(x, time_dtype)` (diffrax's promotion of `y0`)."""
    x = jnp.asarray(x)
    with jax.numpy_dtype_promotion("standard"):
        dtype = jnp.result_type(x, time_dtype)
    return x.astype(dtype)


def make_sampler(regs, t0, t1, y0) -> tuple[_Sampler, Array]:
    """The sampler hook for the local regularizers `regs` of a solve on `[t0, t1]`, and the
    time direction."""
    sampling, key = shared_sampling(regs)
    time_dtype = jnp.result_type(t0, t1, float)
    t0 = jnp.asarray(t0, time_dtype)
    t1 = jnp.asarray(t1, time_dtype)
    direction = jnp.where(t0 < t1, 1, -1)
    if sampling == "unbiased":
        u = jr.uniform(key, (), time_dtype)
        time = (t0 + u * (t1 - t0)) * direction
    else:
        time = None
    # diffrax promotes the state to the time dtype (float32 `y0` with float64 times under
    # `jax_enable_x64` is solved in float64): record it in the dtype the solve uses.
    y0 = jtu.tree_map(lambda x: _promote(x, time_dtype), y0)
    leaves, treedef = jtu.tree_flatten(y0)
    structs = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves)
    sampler = _Sampler(
        time, key if time is None else None, t1 * direction, time_dtype, treedef, structs
    )
    return sampler, direction


def local_step_values(regs, problem: Problem, sample: LocalSample, solver, direction):
    """One extra step of `solver` (the user's, unwrapped) from the recorded sample; the value
    of every regularizer, the real start time and the step size."""
    terms, args = problem.terms, problem.args
    sg = jax.lax.stop_gradient
    t_a = sg(sample.t_start * direction)
    t_b = sg(sample.t_end * direction)
    # As diffrax does for the solve itself: the state in (at least) the time dtype, so that
    # the step's `y + dt * k` stays in the state's dtype (float32 `y0`, float64 times).
    y = jtu.tree_map(lambda x: _promote(x, t_a.dtype), sg(sample.y))
    state = solver.init(terms, t_a, t_b, y, args)
    y1, y_error, dense_info, _, _ = solver.step(terms, t_a, t_b, y, args, state, False)
    info = StepInfo(terms, solver, t_a, t_b, y, y1, y_error, dense_info, args)
    values = tuple(r.local_value(r.estimate().bind(problem), info) for r in regs)
    return values, t_a, jnp.abs(t_b - t_a)


def step_evaluations(cost) -> tuple[int, ...]:
    """Vector-field evaluations of one fresh step (first stage and initialisation included)."""
    return tuple(
        a + f + i for a, f, i in zip(cost.per_attempt, cost.first_stage, cost.at_init, strict=True)
    )
