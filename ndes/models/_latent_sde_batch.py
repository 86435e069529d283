"""`LatentSDE`'s input checks and its batch ELBO: a batch of series on one observation grid
solved as one state (`"joint"`) or per series (`"vmap"`), through the shared SDE engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from ._common import JointField
from ._sde_solve import solve_sde

__all__ = ["check_series", "elbo_batch", "posterior_single", "solve_latent"]


def check_series(ts, values, data_size):
    """`ts` `(n,)` finite and strictly increasing (traced check), `values` `(n, D)`."""
    ts = jnp.asarray(ts)
    values = jnp.asarray(values)
    if ts.ndim != 1:
        raise ValueError(f"`ts` must have shape (num_times,), got shape {ts.shape}.")
    if values.ndim != 2 or values.shape[0] != ts.shape[0] or values.shape[1] != data_size:
        raise ValueError(
            f"`values` must have shape (num_times, data_size) = ({ts.shape[0]}, {data_size}) to "
            f"match `ts` and the model's `data_size`, got shape {values.shape}; mark missing "
            "entries with NaN instead of dropping them."
        )
    if ts.shape[0] < 2:
        raise ValueError(f"`ts` needs at least 2 observation times, got {ts.shape[0]}.")
    ts = eqx.error_if(
        ts, jnp.any(~jnp.isfinite(ts)), "`ts` contains NaN/inf times; times must be finite."
    )
    ts = eqx.error_if(
        ts,
        jnp.any(jnp.diff(ts) <= 0),
        "`ts` must be strictly increasing; sort the observations and merge duplicates.",
    )
    return ts, values


def solve_latent(model, drift, z0, ts, key, regularizers):
    """Solve the latent SDE with state `[z, kl]` (the last channel has zero diffusion) from
    `ts[0]` to `ts[-1]`, saving at `ts`: `ndes.GridBrownianPath` for constant steps,
    `VirtualBrownianTree` for adaptive ones."""
    d = z0.shape[0]
    y0 = jnp.concatenate([z0, jnp.zeros((1,), z0.dtype)])

    def diffusion(t, y, args):
        return jnp.concatenate([model.g(y[:d]), jnp.zeros((1,), y.dtype)])

    return solve_sde(
        drift,
        diffusion,
        ts,
        y0,
        key,
        settings=model.settings,
        sde=model.sde,
        noise="diagonal",
        noise_size=d + 1,
        owner="LatentSDE",
        regularizers=regularizers,
    )


def posterior_single(model, ts, values, key, regularizers):
    mu, std, contexts = model.encode(ts, values)
    kz, kb = jr.split(key)
    z0 = mu + std * jr.normal(kz, mu.shape, mu.dtype)
    d = model.latent_size
    n = ts.shape[0]

    def drift(t, y, args):
        z = y[:d]
        # piecewise-constant context: encoder state at the first observation time >= t
        idx = jnp.clip(jnp.searchsorted(ts, t, side="left"), 0, n - 1)
        c = contexts[idx]
        fp = model.f_post(t, z, c)
        u = (fp - model.f_prior(t, z)) / model.g(z)
        return jnp.concatenate([fp, 0.5 * jnp.sum(u**2, keepdims=True)])

    sol = solve_latent(model, drift, z0, ts, kb, regularizers)
    kl0 = jnp.sum(0.5 * (std**2 + mu**2 - 1.0) - jnp.log(std))
    return sol, kl0


def elbo_batch(
    model, ts, values, key, *, num_samples: int, kl_weight, regularizers: Sequence, batch_mode
):
    """See `LatentSDE.elbo_batch`."""
    values = jnp.asarray(values)
    if values.ndim != 3:
        raise ValueError(
            "LatentSDE.elbo_batch: `values` must have shape (batch, num_times, data_size); got "
            f"shape {values.shape}. For one series use LatentSDE.elbo."
        )
    if num_samples < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
    if batch_mode is None:
        batch_mode = "vmap" if model.settings.adaptive else "joint"
    if batch_mode not in ("joint", "vmap"):
        raise ValueError(
            f"LatentSDE.elbo_batch(batch_mode={batch_mode!r}) must be 'joint' (the batch as one "
            "state, shared steps), 'vmap' (one solve per series) or None (joint for fixed "
            "steps, vmap for adaptive)."
        )
    ts, _ = check_series(ts, values[0], model.data_size)
    B = values.shape[0]
    # S posterior samples per series: series b, sample s is row s * B + b.
    values = jnp.tile(values, (num_samples, 1, 1))
    kz, kb = jr.split(key)
    mu, std, contexts = jax.vmap(lambda v: model.encode(ts, v))(values[:B])
    mu, std = jnp.tile(mu, (num_samples, 1)), jnp.tile(std, (num_samples, 1))
    contexts = jnp.tile(contexts, (num_samples, 1, 1))
    z0 = mu + std * jr.normal(kz, mu.shape, mu.dtype)
    d, n = model.latent_size, ts.shape[0]

    def drift(t, y, context):  # one series, its context path `(n, c)` passed as args
        z = y[:d]
        idx = jnp.clip(jnp.searchsorted(ts, t, side="left"), 0, n - 1)
        fp = model.f_post(t, z, context[idx])
        u = (fp - model.f_prior(t, z)) / model.g(z)
        return jnp.concatenate([fp, 0.5 * jnp.sum(u**2, keepdims=True)])

    def diffusion(t, y, args):
        return jnp.concatenate([model.g(y[:d]), jnp.zeros((1,), y.dtype)])

    y0 = jnp.concatenate([z0, jnp.zeros((z0.shape[0], 1), z0.dtype)], axis=1)
    out = solve_sde(
        drift,
        diffusion,
        ts,
        y0,
        kb,
        settings=dataclasses.replace(model.settings, batch_mode=batch_mode),
        sde=model.sde,
        noise="diagonal",
        noise_size=d + 1,
        owner="LatentSDE",
        regularizers=regularizers,
        args=contexts,
        joint_drift=JointField(drift, args_axis=0),
        sample_drift=lambda c: lambda t, y, args: drift(t, y, c),
        sample_data=contexts,
    )
    ys = out.ys  # (S * B, n, d + 1)
    ll = jax.vmap(model.log_likelihood)(ys[:, :, :d], values)
    kl0 = jnp.sum(0.5 * (std**2 + mu**2 - 1.0) - jnp.log(std), axis=-1)

    def per_series(x):
        return jnp.mean(jnp.reshape(x, (num_samples, B)), axis=0)

    parts = dict(
        loglik=per_series(ll),
        kl0=per_series(kl0),
        path_kl=per_series(ys[:, -1, d]),
        penalty=out.penalty,
        penalty_terms=dict(out.penalty_terms),
        num_fevals=jnp.mean(out.stats["num_fevals"]),
    )
    elbo = parts["loglik"] - kl_weight * (parts["kl0"] + parts["path_kl"])
    return elbo, parts
