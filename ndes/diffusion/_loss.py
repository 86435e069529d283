r"""The denoising score-matching loss (Vincent 2011; Song et al. 2021, eq. 7), as an `ndes.fit`
`loss_fn`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import check_int, check_positive
from ._score import ScoreModel

__all__ = ["DSMLoss", "WEIGHTINGS"]

Weighting = Literal["sigma2", "likelihood", "none"]
WEIGHTINGS = ("sigma2", "likelihood", "none")


def _batch_x(batch: Any) -> Array:
    x = batch[0] if isinstance(batch, tuple | list) else batch
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(
            f"DSMLoss: the batch must be data of shape (B, d) (or a tuple whose first entry "
            f"is); got shape {x.shape}."
        )
    return x


class DSMLoss(eqx.Module):
    r"""Denoising score matching with time weighting $\lambda(t)$ and a lower cut-off
    $\epsilon$ for $t$ (Song et al. 2021, eq. 7):

    $$\mathcal L(\theta) = \mathbb E_{t \sim U(\epsilon, T)}\,\mathbb E_{x_0, \varepsilon}
    \Big[\lambda(t)\,\big\lVert s_\theta(t, \alpha_t x_0 + \sigma_t\varepsilon)
    + \varepsilon/\sigma_t\big\rVert^2\Big],$$

    the squared norm summed over the `d` coordinates (Song et al.'s `reduce_mean=False`)
    and averaged over the batch. `weighting`: `"sigma2"` (default) $\lambda = \sigma_t^2$,
    which for the noise parametrisation is DDPM's $\lVert\hat\varepsilon -
    \varepsilon\rVert^2$ (Ho et al. 2020); `"likelihood"` $\lambda = g(t)^2$ (Song, Durkan,
    Murray, Ermon 2021, "Maximum likelihood training of score-based diffusion models"); `"none"`
    $\lambda = 1$. The residual is computed as $\sigma_t s + \varepsilon = \varepsilon -
    \hat\varepsilon$, finite for both parametrisations.

    A `loss_fn` for `ndes.fit`: `DSMLoss()(model, batch, *, key, regularizers, train_step)`
    with `model` a `ScoreModel` and `batch` data of shape `(B, d)` (or a tuple whose first
    entry is). Score matching takes no solve, so the penalty is 0, unless `flow_samples > 0`
    and regularizers are given: then the loss also solves the probability-flow ODE
    (`probability_flow_sample`) from `flow_samples` prior draws with those regularizers and
    returns its penalty and counters (a regularized fine-tuning phase; see the diffusion
    guide).

    **Arguments:**

    - `eps`: the lower cut-off of $t$ (default `1e-5`, Song et al.'s choice for VP; use
      `1e-3`-ish for coarse models). Must lie in `(0, T)`.
    - `weighting`: see above.
    - `flow_samples`, `flow_rtol`, `flow_atol`, `flow_eps`: the regularized probability-flow
      solve (Tsit5, PID controller) used only with regularizers.
    """

    eps: float = eqx.field(static=True)
    weighting: str = eqx.field(static=True)
    flow_samples: int = eqx.field(static=True)
    flow_rtol: float = eqx.field(static=True)
    flow_atol: float = eqx.field(static=True)
    flow_eps: float = eqx.field(static=True)

    def __init__(
        self,
        eps: float = 1e-5,
        weighting: Weighting = "sigma2",
        *,
        flow_samples: int = 0,
        flow_rtol: float = 1e-3,
        flow_atol: float = 1e-3,
        flow_eps: float = 1e-3,
    ):
        eps = check_positive(
            eps,
            "eps",
            "DSMLoss",
            " (the lower cut-off for t, e.g. 1e-5); at t=0 the target eps/sigma_t is infinite",
        )
        if weighting not in WEIGHTINGS:
            raise ValueError(
                f"DSMLoss: weighting={weighting!r} is unknown; use 'sigma2' (lambda=sigma_t^2, "
                "the default), 'likelihood' (lambda=g(t)^2) or 'none' (lambda=1)."
            )
        flow_samples = check_int(flow_samples, "flow_samples", "DSMLoss", minimum=0)
        self.eps, self.weighting, self.flow_samples = eps, weighting, flow_samples
        self.flow_rtol, self.flow_atol, self.flow_eps = (
            float(flow_rtol),
            float(flow_atol),
            float(flow_eps),
        )

    def per_sample(
        self,
        model: ScoreModel,
        x0: Float[Array, "B d"],
        key: PRNGKeyArray,
    ) -> Float[Array, " B"]:
        """The weighted loss of each sample (before the batch mean), with `t` drawn
        uniformly on `[eps, T]` per sample."""
        sde = model.sde
        if not self.eps < sde.T:
            raise ValueError(
                f"DSMLoss: eps={self.eps} must be below the SDE's final time T={sde.T}."
            )
        k_t, k_n = jr.split(key)
        t = jr.uniform(k_t, (x0.shape[0],), x0.dtype, self.eps, sde.T)
        xt, noise = jax.vmap(sde.perturb)(jr.split(k_n, x0.shape[0]), t, x0)
        pred = jax.vmap(model.noise)(t, xt)
        sq = jnp.sum(jnp.square(noise - pred), axis=-1)  # = ||sigma s + eps||^2
        if self.weighting == "sigma2":
            return sq
        sigma2 = jnp.square(sde.sigma(t))
        if self.weighting == "likelihood":
            return jnp.square(sde.diffusion(t)) / sigma2 * sq
        return sq / sigma2

    def __call__(
        self,
        model: ScoreModel,
        batch: Any,
        *,
        key: PRNGKeyArray,
        regularizers: Sequence = (),
        train_step: ArrayLike | None = None,
    ) -> tuple[Float[Array, ""], dict[str, Any]]:
        """`(loss, aux)` for `ndes.fit`: the batch-mean DSM loss, and `aux` with `penalty`
        (0 without the regularized flow solve), `penalty_terms` and, with it, its counters."""
        if not isinstance(model, ScoreModel):
            raise ValueError(
                f"DSMLoss: model must be an ndes.diffusion.ScoreModel (a network bound to its "
                f"SDE); got {type(model).__name__}."
            )
        x0 = _batch_x(batch)
        k_loss, k_flow = jr.split(key)
        loss = jnp.mean(self.per_sample(model, x0, k_loss))
        regularizers = (
            tuple(regularizers) if isinstance(regularizers, list | tuple) else (regularizers,)
        )
        if regularizers and self.flow_samples > 0:
            from ._samplers import probability_flow_sample

            out = probability_flow_sample(
                model, k_flow, self.flow_samples, rtol=self.flow_rtol, atol=self.flow_atol,
                eps=self.flow_eps, regularizers=regularizers, train_step=train_step,
                dtype=x0.dtype,
            )  # fmt: skip
            aux = {"penalty": out.penalty, "penalty_terms": dict(out.penalty_terms)}
            aux["num_fevals"] = out.nfe
            return loss, aux
        if regularizers:
            raise ValueError(
                "DSMLoss: regularizers were given but score matching takes no solve; set "
                "DSMLoss(flow_samples=N) to regularize the probability-flow ODE of N prior "
                "draws per step, or pass regularizers=()."
            )
        return loss, {"penalty": jnp.zeros((), x0.dtype), "penalty_terms": {}}
