r"""The exact score of Gaussian-mixture data under a linear forward SDE, for checking samplers
and likelihoods against closed forms."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._sde import AbstractDiffusionSDE

__all__ = ["GaussianMixtureScore"]


class GaussianMixtureScore(eqx.Module):
    r"""The exact score $\nabla_x\log p_t(x)$ when the data are a Gaussian mixture
    $\sum_k w_k\,\mathcal N(\mu_k, \Sigma_k)$: under $x_t = \alpha_t x_0 + \sigma_t\varepsilon$
    the marginal is $p_t = \sum_k w_k\,\mathcal N(\alpha_t\mu_k,\ \alpha_t^2\Sigma_k +
    \sigma_t^2 I)$. Use it as the network of a `ScoreModel(..., parametrisation="score")`.

    **Arguments:** `means` `(K, d)`, `covs` `(K, d, d)` (symmetric positive definite),
    `weights` `(K,)` (positive; normalised here; default uniform), `sde`. One component
    (`K = 1`) is a Gaussian.
    """

    means: Float[Array, "K d"]
    covs: Float[Array, "K d d"]
    log_weights: Float[Array, " K"]
    sde: AbstractDiffusionSDE
    data_size: int = eqx.field(static=True)

    def __init__(
        self,
        means: Float[ArrayLike, "K d"],
        covs: Float[ArrayLike, "K d d"],
        sde: AbstractDiffusionSDE,
        weights: Float[ArrayLike, " K"] | None = None,
    ):
        means, covs = jnp.asarray(means), jnp.asarray(covs)
        if means.ndim != 2 or covs.shape != means.shape + means.shape[-1:]:
            raise ValueError(
                f"GaussianMixtureScore: means must have shape (K, d) and covs (K, d, d); got "
                f"{means.shape} and {covs.shape}."
            )
        k = means.shape[0]
        weights = jnp.ones(k) if weights is None else jnp.asarray(weights)
        if weights.shape != (k,):
            raise ValueError(
                f"GaussianMixtureScore: weights must have shape ({k},); got {weights.shape}."
            )
        self.means, self.covs, self.sde = means, covs, sde
        self.log_weights = jnp.log(weights) - jnp.log(jnp.sum(weights))
        self.data_size = int(means.shape[1])

    def _components(self, t, x):
        alpha, sigma = self.sde.marginal(t)
        d = self.data_size
        cov = alpha**2 * self.covs + sigma**2 * jnp.eye(d, dtype=self.covs.dtype)
        diff = x - alpha * self.means  # (K, d)
        chol = jnp.linalg.cholesky(cov)
        sol = jax.vmap(lambda c, v: jax.scipy.linalg.cho_solve((c, True), v))(chol, diff)
        logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
        logp = -0.5 * (jnp.sum(diff * sol, -1) + logdet + d * math.log(2 * math.pi))
        return logp + self.log_weights, sol

    def log_prob(self, t: Float[ArrayLike, ""], x: Float[Array, " d"]) -> Float[Array, ""]:
        """$\\log p_t(x)$ of one sample (nats)."""
        logp, _ = self._components(t, x)
        return jax.nn.logsumexp(logp)

    def __call__(self, t: Float[ArrayLike, ""], x: Float[Array, " d"]) -> Float[Array, " d"]:
        """The score $\\nabla_x\\log p_t(x)$ of one sample `x` of shape `(d,)`."""
        logp, sol = self._components(t, x)
        resp = jax.nn.softmax(logp)
        return -jnp.sum(resp[:, None] * sol, 0)

    def mean_cov(self, t: Float[ArrayLike, ""] = 0.0) -> tuple[Array, Array]:
        """The mean `(d,)` and covariance `(d, d)` of $p_t$."""
        alpha, sigma = self.sde.marginal(t)
        w = jnp.exp(self.log_weights)
        mu = alpha * self.means
        mean = jnp.sum(w[:, None] * mu, 0)
        d = self.data_size
        within = alpha**2 * self.covs + sigma**2 * jnp.eye(d, dtype=self.covs.dtype)
        c = mu - mean
        cov = jnp.sum(w[:, None, None] * (within + c[:, :, None] * c[:, None, :]), 0)
        return mean, cov
