r"""Forward noising SDEs of score-based diffusion models: VP (linear and cosine schedules) and VE.

Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole, "Score-based generative modeling through
stochastic differential equations", ICLR 2021 (eqs. 9, 11 and App. B; their `sde_lib.py`);
the cosine schedule of Nichol & Dhariwal, "Improved denoising diffusion probabilistic models",
ICML 2021 (eq. 17) in the continuous-time form of DPM-Solver's `NoiseScheduleVP`
(Lu et al. 2022, `LuChengTHU/dpm-solver`).

Every SDE here is linear, $dx = f(t)\,x\,dt + g(t)\,dW$, so the transition from a data point
$x_0$ is Gaussian in closed form, $x_t \mid x_0 \sim \mathcal N(\alpha_t x_0, \sigma_t^2 I)$;
`marginal(t)` returns $(\alpha_t, \sigma_t)$.
"""

from __future__ import annotations

import abc
import math
from typing import Literal

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import check_positive

__all__ = ["AbstractDiffusionSDE", "VPSDE", "VESDE"]

Schedule = Literal["linear", "cosine"]


class AbstractDiffusionSDE(eqx.Module):
    r"""A linear forward SDE $dx = f(t)\,x\,dt + g(t)\,dW$ on $[0, T]$ with Gaussian
    transitions $x_t \mid x_0 \sim \mathcal N(\alpha_t x_0, \sigma_t^2 I)$.

    Subclasses give `log_alpha(t)`, `sigma(t)`, `drift_coef(t)` ($f(t)$), `diffusion(t)`
    ($g(t)$), `prior_std` and `T`. Times are in the SDE's own unit (`[0, T]`)."""

    T: eqx.AbstractVar[float]

    @abc.abstractmethod
    def log_alpha(self, t: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """$\\log\\alpha_t$, the log of the mean coefficient of $x_t \\mid x_0$."""

    @abc.abstractmethod
    def sigma(self, t: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """$\\sigma_t$, the standard deviation of $x_t \\mid x_0$."""

    @abc.abstractmethod
    def drift_coef(self, t: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """$f(t)$ of the drift $f(t)\\,x$."""

    @abc.abstractmethod
    def diffusion(self, t: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """$g(t)$, the (scalar) diffusion coefficient."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """The standard deviation of the prior $\\mathcal N(0, s^2 I)$ approximating $p_T$."""

    def drift(self, t: Float[ArrayLike, ""], x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """The forward drift $f(t)\\,x$."""
        return self.drift_coef(t) * x

    def marginal(
        self, t: Float[ArrayLike, "..."]
    ) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
        """$(\\alpha_t, \\sigma_t)$: $x_t = \\alpha_t x_0 + \\sigma_t\\varepsilon$,
        $\\varepsilon \\sim \\mathcal N(0, I)$."""
        return jnp.exp(self.log_alpha(t)), self.sigma(t)

    def marginal_mean_std(
        self, t: Float[ArrayLike, ""], x0: Float[Array, "*shape"]
    ) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
        """The mean $\\alpha_t x_0$ and standard deviation $\\sigma_t$ of $x_t \\mid x_0$."""
        alpha, sigma = self.marginal(t)
        return alpha * x0, sigma

    def perturb(
        self, key: PRNGKeyArray, t: Float[ArrayLike, "..."], x0: Float[Array, "*shape"]
    ) -> tuple[Float[Array, "*shape"], Float[Array, "*shape"]]:
        """A draw of $x_t \\mid x_0$ and its noise: `(alpha_t * x0 + sigma_t * eps, eps)`."""
        eps = jr.normal(key, jnp.shape(x0), jnp.result_type(x0))
        alpha, sigma = self.marginal(t)
        return alpha * x0 + sigma * eps, eps

    def log_snr(self, t: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """The half log signal-to-noise ratio $\\lambda_t = \\log\\alpha_t - \\log\\sigma_t$
        (DPM-Solver's $\\lambda$), decreasing in $t$."""
        return self.log_alpha(t) - jnp.log(self.sigma(t))

    def prior_sample(
        self, key: PRNGKeyArray, shape: tuple[int, ...], dtype=None
    ) -> Float[Array, "..."]:
        """Draws from the prior $\\mathcal N(0, s^2 I)$, $s$ = `prior_std`, of `shape`."""
        return self.prior_std * jr.normal(key, shape, dtype or jnp.result_type(float))

    def prior_log_prob(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """The prior log-density of one sample `x` of shape `(d,)` (nats)."""
        s = self.prior_std
        return -0.5 * (jnp.sum(jnp.square(x)) / s**2 + x.size * math.log(2 * math.pi * s**2))

    # The CNF base-distribution protocol (`log_prob`, `sample`), so that the probability-flow
    # ODE can be an `ndes.CNF` with this SDE's prior as its base.
    def log_prob(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """Same as `prior_log_prob` (the `ndes.CNF` base protocol)."""
        return self.prior_log_prob(x)

    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...], dtype) -> Float[Array, "..."]:
        """Same as `prior_sample` (the `ndes.CNF` base protocol)."""
        return self.prior_sample(key, shape, dtype)


class VPSDE(AbstractDiffusionSDE):
    r"""The variance-preserving SDE $dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)}\,dW$
    (Song et al. 2021, eq. 11; the continuous limit of DDPM).

    Marginals: $\alpha_t = \exp(-\tfrac12\int_0^t\beta)$, $\sigma_t^2 = 1 - \alpha_t^2$; the
    prior is $\mathcal N(0, I)$.

    - `schedule="linear"` (Song et al.): $\beta(t) = \beta_{\min} + t(\beta_{\max} -
      \beta_{\min})$ on $[0, 1]$, so $\log\alpha_t = -\tfrac14 t^2(\beta_{\max} -
      \beta_{\min}) - \tfrac12 t\beta_{\min}$. Defaults $\beta_{\min}=0.1$,
      $\beta_{\max}=20$.
    - `schedule="cosine"` (Nichol & Dhariwal 2021, eq. 17, $\bar\alpha_t = \alpha_t^2$):
      $\log\alpha_t = \log\cos(\tfrac{\pi}{2}\tfrac{t+s}{1+s}) -
      \log\cos(\tfrac{\pi}{2}\tfrac{s}{1+s})$, $s = 0.008$, so
      $\beta(t) = \tfrac{\pi}{1+s}\tan(\tfrac{\pi}{2}\tfrac{t+s}{1+s})$. $\beta$ is infinite at
      $t=1$; as in DPM-Solver's reference code, `T` is cut where $\beta(T) =$ `beta_max`
      (default 999, giving $T \approx 0.9946$).

    **Arguments:** `schedule`, `beta_min`, `beta_max` (both positive, `beta_max >= beta_min`;
    for the cosine schedule only `beta_max`, the cut-off, is used), `cosine_s`.
    """

    schedule: str = eqx.field(static=True)
    beta_min: float = eqx.field(static=True)
    beta_max: float = eqx.field(static=True)
    cosine_s: float = eqx.field(static=True)
    T: float = eqx.field(static=True)

    def __init__(
        self,
        schedule: Schedule = "linear",
        *,
        beta_min: float = 0.1,
        beta_max: float | None = None,
        cosine_s: float = 0.008,
    ):
        if schedule not in ("linear", "cosine"):
            raise ValueError(
                f"VPSDE: schedule={schedule!r} is not a known beta schedule; use 'linear' "
                "(Song et al. 2021) or 'cosine' (Nichol & Dhariwal 2021)."
            )
        if beta_max is None:
            beta_max = 20.0 if schedule == "linear" else 999.0
        fix = "; e.g. beta_min=0.1, beta_max=20 for the linear schedule"
        self.beta_min = check_positive(beta_min, "beta_min", "VPSDE", fix)
        self.beta_max = check_positive(beta_max, "beta_max", "VPSDE", fix)
        self.cosine_s = check_positive(cosine_s, "cosine_s", "VPSDE", "; the usual value is 0.008")
        if schedule == "linear" and self.beta_max < self.beta_min:
            raise ValueError(
                f"VPSDE: beta_max={self.beta_max} is smaller than beta_min={self.beta_min}; the "
                "linear schedule increases from beta_min to beta_max."
            )
        self.schedule = schedule
        if schedule == "linear":
            self.T = 1.0
        else:
            s = self.cosine_s
            self.T = math.atan(self.beta_max * (1 + s) / math.pi) * 2 * (1 + s) / math.pi - s

    def _cos_arg(self, t):
        s = self.cosine_s
        return (jnp.asarray(t) + s) / (1 + s) * (math.pi / 2)

    def log_alpha(self, t):
        t = jnp.asarray(t)
        if self.schedule == "linear":
            return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        s = self.cosine_s
        return jnp.log(jnp.cos(self._cos_arg(t))) - math.log(math.cos(s / (1 + s) * math.pi / 2))

    def sigma(self, t):
        # sqrt(1 - alpha^2) = sqrt(-expm1(2 log alpha)), accurate for small t.
        return jnp.sqrt(-jnp.expm1(2 * self.log_alpha(t)))

    def beta(self, t: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """$\\beta(t) = -2\\,\\tfrac{d}{dt}\\log\\alpha_t$."""
        t = jnp.asarray(t)
        if self.schedule == "linear":
            return self.beta_min + t * (self.beta_max - self.beta_min)
        return math.pi / (1 + self.cosine_s) * jnp.tan(self._cos_arg(t))

    def drift_coef(self, t):
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        return jnp.sqrt(self.beta(t))

    @property
    def prior_std(self) -> float:
        return 1.0

    def inverse_log_snr(self, lam: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """The time $t$ with $\\lambda_t$ = `lam` (DPM-Solver's `inverse_lambda`, Lu et al.
        2022, App. for the linear schedule; the cosine inverse as in their reference code)."""
        lam = jnp.asarray(lam)
        # log alpha = -0.5 log(1 + exp(-2 lam))
        la = 0.5 * jnp.logaddexp(0.0, -2.0 * lam)  # = -log alpha
        if self.schedule == "linear":
            b0, b1 = self.beta_min, self.beta_max
            tmp = 4.0 * (b1 - b0) * la
            delta = b0**2 + tmp
            return tmp / (jnp.sqrt(delta) + b0) / (b1 - b0)
        s = self.cosine_s
        log_alpha0 = math.log(math.cos(s / (1 + s) * math.pi / 2))
        return jnp.arccos(jnp.exp(-la + log_alpha0)) * 2 * (1 + s) / math.pi - s


class VESDE(AbstractDiffusionSDE):
    r"""The variance-exploding SDE $dx = \sqrt{d[\sigma^2(t)]/dt}\,dW$ with
    $\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t$ on $[0, 1]$ (Song et al. 2021,
    eq. 9; the continuous limit of SMLD/NCSN).

    $g(t) = \sigma(t)\sqrt{2\log(\sigma_{\max}/\sigma_{\min})}$, $\alpha_t = 1$ and the exact
    transition std $\sigma_t = \sqrt{\sigma(t)^2 - \sigma_{\min}^2}$ (the variance
    accumulated from time 0; Song et al.'s code uses $\sigma(t)$ itself, which treats the
    data as already smoothed by $\sigma_{\min}$). The prior is $\mathcal N(0,
    \sigma_{\max}^2 I)$.

    **Arguments:** `sigma_min` (default 0.01), `sigma_max` (default 50; choose it about the
    largest distance between data points, Song & Ermon 2020), `sigma_max > sigma_min > 0`.
    """

    sigma_min: float = eqx.field(static=True)
    sigma_max: float = eqx.field(static=True)
    T: float = eqx.field(static=True)

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        fix = "; e.g. sigma_min=0.01, sigma_max=50"
        self.sigma_min = check_positive(sigma_min, "sigma_min", "VESDE", fix)
        self.sigma_max = check_positive(sigma_max, "sigma_max", "VESDE", fix)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"VESDE: sigma_max={self.sigma_max} must be larger than sigma_min={self.sigma_min}."
            )
        self.T = 1.0

    def _sigma_t(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** jnp.asarray(t)

    def log_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def sigma(self, t):
        # sigma_min * sqrt(r^(2t) - 1), r = sigma_max / sigma_min
        log_r = math.log(self.sigma_max / self.sigma_min)
        return self.sigma_min * jnp.sqrt(jnp.expm1(2 * log_r * jnp.asarray(t)))

    def drift_coef(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def diffusion(self, t):
        return self._sigma_t(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    @property
    def prior_std(self) -> float:
        return self.sigma_max
