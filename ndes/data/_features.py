"""Neural-CDE features: [time, fill-forward values, cumulative observation intensity] + coefficients."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


def _fill_forward(x: np.ndarray) -> np.ndarray:
    # x: (L, C); leading NaNs take the first observed value of that channel.
    out = x.copy()
    for c in range(x.shape[1]):
        col = out[:, c]
        obs = np.flatnonzero(~np.isnan(col))
        if obs.size == 0:
            raise ValueError(
                f"channel {c} of a series is entirely NaN; drop that series or channel before building features."
            )
        idx = np.maximum.accumulate(np.where(np.isnan(col), 0, np.arange(len(col))))
        idx[: obs[0]] = obs[0]
        out[:, c] = col[idx]
    return out


def cde_features(
    times: Float[np.ndarray, "N L"], values: Float[np.ndarray, "N L C"]
) -> Float[np.ndarray, "N L 2*C+1"]:
    """Build NaN-free features `[t, ffill(values), cumulative observation count per channel]`.

    Leading NaNs are filled with the series' first observed value (so no statistic leaks from
    other series); padding after the last valid point is forward-filled too, making the path
    constant there. Raises `ValueError` for an all-NaN channel or non-increasing times.
    """
    times = np.asarray(times, dtype=float)
    values = np.asarray(values, dtype=float)
    if values.ndim != 3 or times.shape != values.shape[:2]:
        raise ValueError(
            f"times must have shape (N, L) matching values (N, L, C); got {times.shape}, {values.shape}."
        )
    if np.any(np.diff(times, axis=1) <= 0):
        raise ValueError(
            "times must be strictly increasing along each series; pad with increasing times."
        )
    filled = np.stack([_fill_forward(v) for v in values])
    intensity = np.cumsum(~np.isnan(values), axis=1).astype(float)
    return np.concatenate([times[..., None], filled, intensity], axis=-1)


def hermite_coefficients(times: Float[Array, "N L"], features: Float[Array, "N L D"]):
    """Backward-Hermite cubic coefficients for `diffrax.CubicInterpolation(ts, coeffs)`, vmapped over N."""
    if np.isnan(np.asarray(features)).any():
        raise ValueError("features contain NaN; build them with cde_features first.")
    return jax.vmap(diffrax.backward_hermite_coefficients)(
        jnp.asarray(times), jnp.asarray(features)
    )


def linear_coefficients(times: Float[Array, "N L"], features: Float[Array, "N L D"]):
    """`diffrax.LinearInterpolation(ts, ys)` needs only (ts, ys): returned as NaN-checked arrays."""
    if np.isnan(np.asarray(features)).any():
        raise ValueError("features contain NaN; build them with cde_features first.")
    return jnp.asarray(times), jnp.asarray(features)
