"""RandomEndTime (Ghosh et al. 2020, "STEER"): a randomly perturbed end time during training."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._base import AbstractEndTime, Problem

__all__ = ["RandomEndTime"]


def _concrete(x) -> float | None:
    try:
        return float(np.asarray(x))
    except Exception:  # a tracer
        return None


class RandomEndTime(AbstractEndTime):
    r"""Solve to a random end time $\tilde t_1 \sim U(t_1 - b, t_1 + b)$ (STEER).

    Ghosh et al. found that integrating to a slightly different end time at every training
    step makes the learned dynamics simpler and cheaper to solve, at no cost: the solve is
    just shorter or longer. There is no penalty term (nothing is added to `Solution.penalty`
    or `penalty_terms`); `Solution.t1` is the sampled end time and `ys` with
    `SaveAt(t1=True)` is the state there. For a solve backwards in time the end time is
    perturbed the same way ($b$ is a duration). Use it for training only: evaluate with
    `regularizers=()`.

    `SaveAt(ts=...)` is accepted when every time lies within the shortest possible interval
    (between `t0` and $t_1 - b$); `diffrax.StepTo` is refused (its grid fixes $t_1$).

    **Arguments:**

    - `b`: the half-width of the perturbation, in units of time: `0 <= b < |t1 - t0|`.
    - `key`: a PRNG key (`jax.random.key(...)`); pass a fresh one per training step (and
      one per trajectory under `jax.vmap` to perturb every trajectory independently).

    **Reference:** Ghosh, Behl, Dupont, Torr, Namboodiri, "STEER: Simple Temporal
    Regularization For Neural ODEs", NeurIPS 2020.
    """

    b: float
    key: PRNGKeyArray | None = None

    def __check_init__(self):
        b = _concrete(self.b)
        if b is not None and not b >= 0:
            raise ValueError(
                f"RandomEndTime(b={self.b!r}) must be >= 0: it is the half-width of the "
                "interval t1 +- b from which the end time is drawn."
            )
        if self.key is None:
            raise ValueError(
                "RandomEndTime needs key= (a PRNG key to draw the end time), e.g. "
                "RandomEndTime(b, key=jax.random.key(step)); pass a fresh key per step."
            )

    def bind(self, problem: Problem) -> "RandomEndTime":
        t0, t1, saveat = problem.t0, problem.t1, problem.saveat
        stepsize_controller = problem.stepsize_controller
        a, c, b = _concrete(t0), _concrete(t1), _concrete(self.b)
        if a is not None and c is not None and b is not None and not b < abs(c - a):
            raise ValueError(
                f"RandomEndTime(b={b}) must be smaller than |t1 - t0| = {abs(c - a)}, or the "
                "sampled end time could fall before t0; choose a smaller b."
            )
        if isinstance(stepsize_controller, diffrax.StepTo):
            raise ValueError(
                "RandomEndTime changes t1, which diffrax.StepTo(ts=...) fixes as its last "
                "step; use ConstantStepSize or an adaptive controller."
            )
        subs = jtu.tree_leaves(saveat.subs, is_leaf=lambda x: isinstance(x, diffrax.SubSaveAt))
        for sub in subs:
            if sub.ts is None:
                continue
            ts = _concrete_array(sub.ts)
            if ts is None or a is None or c is None or b is None:
                raise ValueError(
                    "RandomEndTime with SaveAt(ts=...) needs concrete t0, t1, b and ts to "
                    "check that every save time precedes the earliest possible end time; use "
                    "SaveAt(t1=True) or pass concrete values."
                )
            if np.any(np.abs(ts - a) > abs(c - a) - b):
                raise ValueError(
                    f"RandomEndTime(b={b}): SaveAt(ts=...) asks for times beyond t1 - b = "
                    f"{c - np.sign(c - a) * b}, which the perturbed solve may not reach. Save at "
                    "times within [t0, t1 - b] or use SaveAt(t1=True)."
                )
        return self

    def end_time(self, t0: ArrayLike, t1: ArrayLike) -> Float[Array, ""]:
        """The sampled end time $t_1 + U(-b, b)$."""
        dtype = jnp.result_type(t0, t1, float)
        b = jnp.asarray(self.b, dtype)
        span = jnp.abs(jnp.asarray(t1, dtype) - jnp.asarray(t0, dtype))
        b = eqx.error_if(
            b,
            (b < 0) | (b >= span),
            "RandomEndTime(b=...) must satisfy 0 <= b < |t1 - t0|; choose a smaller b.",
        )
        u = jr.uniform(self.key, (), dtype, minval=-1.0, maxval=1.0)
        return jnp.asarray(t1, dtype) + u * b


def _concrete_array(x):
    try:
        return np.asarray(x, dtype=np.float64)
    except Exception:
        return None
