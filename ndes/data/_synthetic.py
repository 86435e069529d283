"""Synthetic data generated from a PRNG key."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


def ornstein_uhlenbeck(
    key: PRNGKeyArray,
    num_paths: int,
    times: Float[Array, " L"],
    *,
    theta: float = 1.0,
    mu: float = 0.0,
    sigma: float = 0.5,
    x0: float | None = None,
) -> Float[Array, "N L"]:
    """Paths of dX = θ(μ − X) dt + σ dW sampled exactly at `times` (shape (L,), increasing).

    Transition: X_{t+h} | X_t ~ N(μ + (X_t − μ)e^{−θh}, σ²(1 − e^{−2θh})/(2θ)).
    `x0=None` draws X_0 from the stationary law N(μ, σ²/(2θ)). Returns shape (num_paths, L).
    """
    if theta <= 0 or sigma <= 0:
        raise ValueError(f"theta and sigma must be positive; got theta={theta}, sigma={sigma}.")
    times = jnp.asarray(times)
    k0, k1 = jax.random.split(key)
    var_inf = sigma**2 / (2 * theta)
    if x0 is None:
        start = mu + jnp.sqrt(var_inf) * jax.random.normal(k0, (num_paths,))
    else:
        start = jnp.full((num_paths,), x0, dtype=times.dtype)
    dt = jnp.diff(times)
    decay = jnp.exp(-theta * dt)
    std = jnp.sqrt(var_inf * (1 - decay**2))
    noise = jax.random.normal(k1, (dt.shape[0], num_paths))

    def step(x, inp):
        a, s, z = inp
        x = mu + (x - mu) * a + s * z
        return x, x

    _, xs = jax.lax.scan(step, start, (decay, std, noise))
    return jnp.concatenate([start[:, None], xs.T], axis=1)
