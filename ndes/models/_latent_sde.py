"""Latent SDE (Li, Wong, Chen, Duvenaud 2020; Kidger 2021, "On Neural Differential Equations",
latent SDEs).

Generative model (prior):   z0 ~ N(0, I),  dz = f_prior(t, z) dt + g(z) dW,
                            x_i ~ p(x | decoder(z(t_i))).
Variational posterior:      z0 ~ N(μ, σ²) from a GRU encoder run backwards over the observations,
                            dz = f_post(t, z, c(t)) dt + g(z) dW   (same diagonal diffusion g).

Itô notation, as the default solver (`diffrax.Euler()`, Euler--Maruyama) converges to the Itô
solution; a Stratonovich solver (`diffrax.Heun()`) gives the drifts Stratonovich meaning (the
ELBO is the same formula for diagonal noise; see docs/latent_sde.md).

ELBO = E_q[Σ_i log p(x_i | z(t_i))] − KL(q(z0) ‖ p(z0)) − E_q[∫ ½‖(f_post − f_prior)/g‖² dt], the
path KL (Girsanov) being integrated as an extra state along the posterior solve, so it uses exactly
the same Brownian sample and the same steps as the latent path.
"""

from __future__ import annotations

from collections.abc import Sequence

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._common import SolverSettings
from ._latent_sde_batch import check_series, elbo_batch, posterior_single, solve_latent
from ._sde_checks import check_sde_config
from ._sde_solve import SDESettings

__all__ = ["LatentSDE"]


class LatentSDE(eqx.Module):
    """Latent neural SDE trained by the ELBO (Li et al. 2020, "Scalable Gradients for Stochastic
    Differential Equations", AISTATS; Kidger 2021, "On Neural Differential Equations", §latent
    SDEs).

    The methods work on one series `(ts, values)` (use `jax.vmap` for batches), except
    `elbo_batch`, which takes a batch of series on one grid and solves it as one state.

    **Arguments:**

    - `data_size`: number of observed channels `D`.
    - `latent_size`: latent dimension `d`.
    - `hidden_size`: GRU hidden size of the encoder.
    - `context_size`: size of the context vector fed to the posterior drift.
    - `width`, `depth`: MLP width/depth for the drifts and the diffusion.
    - `key`: PRNG key for the initialisation.
    - `diffusion_scale`, `diffusion_floor`: the diagonal diffusion is `g(z) = diffusion_floor +
      diffusion_scale * sigmoid(MLP(z))`, in `(floor, floor + scale)`; both must be > 0 so that g
      never reaches 0 (the path KL divides by g).
    - `likelihood`: `"gaussian"` or `"laplace"`.
    - `obs_scale`: initial (if `learn_obs_scale`) or fixed observation scale (> 0).
    - `learn_obs_scale`: learn the log of the observation scale.
    - `solver`: a diffrax SDE solver (default `diffrax.Euler()`, Itô Euler–Maruyama).
    - `num_steps`: number of equal steps over `[ts[0], ts[-1]]` of every solve for a constant step
      size (static, so it works with traced `ts`, e.g. `ts` passed as an argument to a jitted
      function, and with a batch of series of different lengths under `jax.vmap`). Alternatively
      `dt0` with concrete `ts`.
    - `dt0`: fixed step size (time units of `ts`; must divide `ts[-1] - ts[0]` into whole steps, and
      `ts` must be concrete), or the adaptive controller's initial step. Ignored when `num_steps` is
      set.
    - `stepsize_controller`: default `diffrax.ConstantStepSize()`; an adaptive controller needs a
      solver with an error estimate (e.g. `diffrax.Heun()`, Stratonovich).
    - `brownian`: `"auto"` (default): constant steps draw every increment of the step grid at once
      from the key (`ndes.GridBrownianPath`, the speed of a hand-written `lax.scan` loop), adaptive
      steps use `diffrax.VirtualBrownianTree`; `"grid"` or `"tree"` force one (`"grid"` needs
      constant steps).
    - `brownian_tol`: the tree's tolerance; default `None` picks it from the controller
      (as `ndes.NeuralSDE` does).
    - `max_steps`: passed to the solver.

    Solves go through the same engine as `NeuralSDE`, with its adjoint default: every step
    checkpointed for fixed steps. Samples are deterministic given the key.
    """

    encoder_cell: eqx.nn.GRUCell
    encoder_out: eqx.nn.Linear  # h0 -> (mu, log_std)
    context_out: eqx.nn.Linear  # h_i -> context c_i
    post_drift: eqx.nn.MLP  # [t, z, c] -> dz
    prior_drift: eqx.nn.MLP  # [t, z] -> dz
    diffusion_mlp: eqx.nn.MLP  # z -> pre-activation of g
    decoder: eqx.nn.Linear  # z -> mean of x
    log_obs_scale: Array
    data_size: int = eqx.field(static=True)
    latent_size: int = eqx.field(static=True)
    context_size: int = eqx.field(static=True)
    diffusion_scale: float = eqx.field(static=True)
    diffusion_floor: float = eqx.field(static=True)
    likelihood: str = eqx.field(static=True)
    learn_obs_scale: bool = eqx.field(static=True)
    settings: SolverSettings
    sde: SDESettings

    def __init__(
        self,
        data_size: int,
        latent_size: int,
        *,
        key: PRNGKeyArray,
        hidden_size: int = 16,
        context_size: int = 8,
        width: int = 32,
        depth: int = 1,
        diffusion_scale: float = 1.0,
        diffusion_floor: float = 1e-2,
        likelihood: str = "gaussian",
        obs_scale: float = 0.1,
        learn_obs_scale: bool = True,
        solver: diffrax.AbstractSolver | None = None,
        dt0: float | None = 0.05,
        num_steps: int | None = None,
        stepsize_controller: diffrax.AbstractStepSizeController | None = None,
        brownian: str = "auto",
        brownian_tol: float | None = None,
        max_steps: int = 4096,
    ):
        if data_size < 1 or latent_size < 1:
            raise ValueError(
                f"`data_size` and `latent_size` must be >= 1, got {data_size}, {latent_size}."
            )
        if not diffusion_scale > 0:
            raise ValueError(
                f"`diffusion_scale` must be > 0 (g = floor + scale*sigmoid(...)), got "
                f"{diffusion_scale}; pass a positive number."
            )
        if not diffusion_floor > 0:
            raise ValueError(
                f"`diffusion_floor` must be > 0 so the diffusion never reaches 0 (the path KL "
                f"divides by g), got {diffusion_floor}; pass e.g. 1e-2."
            )
        if likelihood not in ("gaussian", "laplace"):
            raise ValueError(f"`likelihood` must be 'gaussian' or 'laplace', got {likelihood!r}.")
        if not obs_scale > 0:
            raise ValueError(f"`obs_scale` must be > 0, got {obs_scale}.")
        if dt0 is not None and not dt0 > 0:
            raise ValueError(f"`dt0` must be > 0 or None, got {dt0}.")
        stepsize_controller = (
            diffrax.ConstantStepSize() if stepsize_controller is None else stepsize_controller
        )
        self.settings = SolverSettings(
            diffrax.Euler() if solver is None else solver,
            stepsize_controller,
            None,
            dt0,
            max_steps,
            "joint",
        )
        self.sde = SDESettings(
            num_steps, brownian, None if brownian_tol is None else float(brownian_tol)
        )
        check_sde_config("LatentSDE", self.settings, self.sde, "diagonal", None)
        k = jr.split(key, 7)
        self.encoder_cell = eqx.nn.GRUCell(2 * data_size + 1, hidden_size, key=k[0])
        self.encoder_out = eqx.nn.Linear(hidden_size, 2 * latent_size, key=k[1])
        self.context_out = eqx.nn.Linear(hidden_size, context_size, key=k[2])
        self.post_drift = eqx.nn.MLP(
            1 + latent_size + context_size,
            latent_size,
            width,
            depth,
            activation=jax.nn.softplus,
            key=k[3],
        )
        self.prior_drift = eqx.nn.MLP(
            1 + latent_size, latent_size, width, depth, activation=jax.nn.softplus, key=k[4]
        )
        self.diffusion_mlp = eqx.nn.MLP(
            latent_size, latent_size, width, depth, activation=jax.nn.softplus, key=k[5]
        )
        self.decoder = eqx.nn.Linear(latent_size, data_size, key=k[6])
        # a strong dtype (not weakly typed), so that a jitted train step does not retrace after its
        # first update
        self.log_obs_scale = jnp.full(
            (data_size,), float(jnp.log(obs_scale)), dtype=self.decoder.weight.dtype
        )
        self.data_size = data_size
        self.latent_size = latent_size
        self.context_size = context_size
        self.diffusion_scale = float(diffusion_scale)
        self.diffusion_floor = float(diffusion_floor)
        self.likelihood = likelihood
        self.learn_obs_scale = learn_obs_scale

    # ------------------------------------------------------------------ components
    def f_prior(self, t: ArrayLike, z: Float[Array, " d"]) -> Float[Array, " d"]:
        """Prior drift `f_prior(t, z)`, shape `(d,)`."""
        return self.prior_drift(jnp.concatenate([jnp.reshape(t, (1,)).astype(z.dtype), z]))

    def f_post(
        self, t: ArrayLike, z: Float[Array, " d"], context: Float[Array, " c"]
    ) -> Float[Array, " d"]:
        """Posterior drift `f_post(t, z, c)`, shape `(d,)`."""
        return self.post_drift(jnp.concatenate([jnp.reshape(t, (1,)).astype(z.dtype), z, context]))

    def g(self, z: Float[Array, " d"]) -> Float[Array, " d"]:
        """Shared diagonal diffusion, in `(diffusion_floor, diffusion_floor + diffusion_scale)`,
        shape `(d,)`."""
        return self.diffusion_floor + self.diffusion_scale * jax.nn.sigmoid(self.diffusion_mlp(z))

    def path_kl_integrand(self, t, z, context) -> Float[Array, ""]:
        """`½‖(f_post − f_prior)/g‖²` at `(t, z)` (Li et al. 2020, eq. for the KL between path
        measures)."""
        u = (self.f_post(t, z, context) - self.f_prior(t, z)) / self.g(z)
        return 0.5 * jnp.sum(u**2)

    def encode(
        self, ts: Float[Array, " n"], values: Float[Array, "n D"]
    ) -> tuple[Float[Array, " d"], Float[Array, " d"], Float[Array, "n c"]]:
        """Run the GRU backwards in time over `[value (NaN→0), mask, Δt to the next time]`.

        **Returns:** `(mu, std)` of q(z0), each `(d,)`, and contexts `(n, c)`: `contexts[i]`
        summarises the observations at times `>= ts[i]`.
        """
        mask = jnp.isfinite(values)
        filled = jnp.where(mask, values, 0.0)
        dts = jnp.concatenate([jnp.diff(ts), jnp.zeros((1,), ts.dtype)])
        inputs = jnp.concatenate(
            [filled, mask.astype(filled.dtype), dts[:, None].astype(filled.dtype)], axis=1
        )
        h0 = jnp.zeros((self.encoder_cell.hidden_size,), filled.dtype)

        def step(h, x):
            h = self.encoder_cell(x, h)
            return h, h

        _, hs = jax.lax.scan(step, h0, inputs, reverse=True)  # hs[i] has seen observations i..n-1
        out = self.encoder_out(hs[0])
        mu, log_std = out[: self.latent_size], out[self.latent_size :]
        contexts = jax.vmap(self.context_out)(hs)
        return mu, jnp.exp(log_std), contexts

    def log_likelihood(
        self, zs: Float[Array, "n d"], values: Float[Array, "n D"]
    ) -> Float[Array, ""]:
        """Σ over observed (non-NaN) entries of log p(x | decoder(z))."""
        mask = jnp.isfinite(values)
        x = jnp.where(mask, values, 0.0)
        mean = jax.vmap(self.decoder)(zs)
        log_s = (
            self.log_obs_scale
            if self.learn_obs_scale
            else jax.lax.stop_gradient(self.log_obs_scale)
        )
        if self.likelihood == "gaussian":
            lp = -0.5 * ((x - mean) / jnp.exp(log_s)) ** 2 - log_s - 0.5 * jnp.log(2 * jnp.pi)
        else:
            lp = -jnp.abs(x - mean) / jnp.exp(log_s) - log_s - jnp.log(2.0)
        return jnp.sum(jnp.where(mask, lp, 0.0))

    def elbo(
        self,
        ts: Float[ArrayLike, " n"],
        values: Float[ArrayLike, "n D"],
        key: PRNGKeyArray,
        *,
        num_samples: int = 1,
        kl_weight: float | Float[Array, ""] = 1.0,
        regularizers: Sequence = (),
    ) -> tuple[Float[Array, ""], dict[str, Array]]:
        """Monte-Carlo ELBO of one series, averaged over `num_samples` posterior samples.

        **Arguments:**

        - `ts`: observation times `(n,)`, strictly increasing, finite.
        - `values`: observations `(n, D)`; NaN marks a missing entry (ignored by the likelihood).
        - `key`: PRNG key (z0 sample and Brownian motion); the ELBO is a deterministic function of
          the parameters for a fixed key.
        - `num_samples`: Monte-Carlo samples.
        - `kl_weight`: KL annealing weight β on both KL terms (float or traced scalar from a
          schedule).
        - `regularizers`: ndes regularizers applied to the posterior solve (see `ndes.diffeqsolve`).

        **Returns:** `(elbo, parts)` with `elbo = loglik − β (kl0 + path_kl)` (mean over samples)
        and `parts` a dict of `loglik`, `kl0`, `path_kl`, `penalty` (mean regularization penalty;
        minimise `-elbo + penalty`), `penalty_terms` (each regularizer's unweighted value,
        mean over samples; what `ndes.BudgetWeight` reads), `num_fevals` (mean per posterior
        solve).
        """
        ts, values = check_series(ts, values, self.data_size)
        if num_samples < 1:
            raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")

        def one(k):
            sol, kl0 = posterior_single(self, ts, values, k, regularizers)
            ys = sol.ys
            ll = self.log_likelihood(ys[:, : self.latent_size], values)
            terms = dict(sol.penalty_terms)
            return ll, kl0, ys[-1, self.latent_size], sol.penalty, terms, sol.stats["num_fevals"]

        ll, kl0, pkl, pen, terms, nfe = jax.vmap(one)(jr.split(key, num_samples))
        parts = dict(
            loglik=jnp.mean(ll),
            kl0=jnp.mean(kl0),
            path_kl=jnp.mean(pkl),
            penalty=jnp.mean(pen),
            penalty_terms={k: jnp.mean(v) for k, v in terms.items()},
            num_fevals=jnp.mean(nfe),
        )
        elbo = parts["loglik"] - kl_weight * (parts["kl0"] + parts["path_kl"])
        return elbo, parts

    def elbo_batch(
        self,
        ts: Float[ArrayLike, " n"],
        values: Float[ArrayLike, "B n D"],
        key: PRNGKeyArray,
        *,
        num_samples: int = 1,
        kl_weight: float | Float[Array, ""] = 1.0,
        regularizers: Sequence = (),
        batch_mode: str | None = None,
    ) -> tuple[Float[Array, " B"], dict[str, Array]]:
        """Monte-Carlo ELBO of each of `B` series observed at the same times `ts`.

        The GRU encoder and the context paths run batched; the posterior solves of all
        `B * num_samples` samples are one state `(B * num_samples, d + 1)` with shared steps
        (`batch_mode="joint"`, each sample's drift reading its own series' context) or one
        solve per sample (`"vmap"`); `None` (default) picks joint for fixed steps and vmap
        for an adaptive controller. On fixed steps both modes draw one
        `ndes.GridBrownianPath` of shape `(B * num_samples, d + 1)` and sample `b` sees its
        column `b`, so they give the same ELBO to rounding. Regularizers are per-sample
        quantities averaged over the batch in both modes (as in `ndes.NeuralSDE`).

        **Arguments:** as `elbo`, with `values` of shape `(B, n, D)` (NaN marks a missing
        entry) and `batch_mode`.

        **Returns:** `(elbo, parts)`: `elbo` of shape `(B,)` (mean over samples);
        `parts`: `loglik`, `kl0`, `path_kl` of shape `(B,)`, `penalty` and `penalty_terms`
        (batch means), `num_fevals` (mean per posterior solve; a joint solve counts
        evaluations on the whole batch).
        """
        return elbo_batch(
            self,
            ts,
            values,
            key,
            num_samples=num_samples,
            kl_weight=kl_weight,
            regularizers=regularizers,
            batch_mode=batch_mode,
        )

    def sample_posterior(
        self, ts: Float[ArrayLike, " n"], values: Float[ArrayLike, "n D"], key: PRNGKeyArray
    ) -> tuple[Float[Array, "n d"], Float[Array, "n D"]]:
        """One posterior sample at `ts`: latent path `(n, d)` and decoded mean `(n, D)`."""
        ts, values = check_series(ts, values, self.data_size)
        sol, _ = posterior_single(self, ts, values, key, ())
        zs = sol.ys[:, : self.latent_size]
        return zs, jax.vmap(self.decoder)(zs)

    def sample_prior(
        self,
        ts: Float[ArrayLike, " n"],
        key: PRNGKeyArray,
        z0: Float[Array, " d"] | None = None,
    ) -> tuple[Float[Array, "n d"], Float[Array, "n D"]]:
        """One prior sample at `ts`, starting at `ts[0]` from `z0` (default: z0 ~ p(z0) = N(0, I)).

        For forecasting, pass the posterior latent at the last observed time as `z0` and `ts`
        starting there.
        **Returns:** latent path `(n, d)` and decoded mean `(n, D)`.
        """
        ts = jnp.asarray(ts)
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(f"`ts` must have shape (num_times >= 2,), got {ts.shape}.")
        ts = eqx.error_if(
            ts, jnp.any(~jnp.isfinite(ts)), "`ts` contains NaN/inf times; times must be finite."
        )
        ts = eqx.error_if(ts, jnp.any(jnp.diff(ts) <= 0), "`ts` must be strictly increasing.")
        kz, kb = jr.split(key)
        if z0 is None:
            z0 = jr.normal(kz, (self.latent_size,), self.log_obs_scale.dtype)
        d = self.latent_size

        def drift(t, y, args):
            return jnp.concatenate([self.f_prior(t, y[:d]), jnp.zeros((1,), y.dtype)])

        sol = solve_latent(self, drift, z0, ts, kb, ())
        zs = sol.ys[:, :d]
        return zs, jax.vmap(self.decoder)(zs)

    def observation_scale(self) -> Float[Array, " D"]:
        """Scale of the observation noise (std for Gaussian, b for Laplace)."""
        return jnp.exp(self.log_obs_scale)
