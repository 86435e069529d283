"""Two-dimensional toy densities for flows and diffusion models, generated from a PRNG key.

The four shapes follow FFJORD's `lib/toy_data.py` (Grathwohl et al. 2019, `rtqichen/ffjord`),
the common benchmark of continuous normalizing flows and score-based models on the plane:

- `"8gaussians"`: eight Gaussians (std 0.5/1.414) on a circle of radius 4/1.414;
- `"pinwheel"`: five curved arms (radial std 0.3, tangential std 0.1, rate 0.25), scaled by 2;
- `"moons"`: two interleaved half circles (scikit-learn's `make_moons` shape, noise 0.1),
  scaled by 2 and shifted by (-1, -0.2) as FFJORD does;
- `"2spirals"`: two interleaved spirals (FFJORD's recipe: radius ~ sqrt(U) * 540 degrees,
  uniform jitter 0.5, divided by 3, Gaussian noise 0.1).

Each is a pure function of its key: the same key gives the same points. FFJORD draws the
class of each point by `n // classes` blocks; here every point draws its component
independently, so any `n` is allowed and the mixture weights are exact in expectation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_int

__all__ = ["toy_2d", "TOY_2D_NAMES"]


# FFJORD's 8 Gaussians: centres on a circle of radius 4, std 0.5, all divided by 1.414.
_EIGHT_RADIUS, _EIGHT_STD, _EIGHT_SCALE = 4.0, 0.5, 1.414


def _eight_gaussians(key, n, dtype):
    k_c, k_n = jr.split(key)
    angles = jnp.arange(8, dtype=dtype) * (2 * math.pi / 8)
    centers = _EIGHT_RADIUS * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)
    idx = jr.randint(k_c, (n,), 0, 8)
    x = centers[idx] + _EIGHT_STD * jr.normal(k_n, (n, 2), dtype)
    return x / _EIGHT_SCALE


def _eight_gaussians_mixture() -> tuple[np.ndarray, np.ndarray]:
    """The exact mixture `toy_2d("8gaussians", ...)` samples: means `(8, 2)` and covariances
    `(8, 2, 2)` (float64, equal weights), e.g. for `ndes.diffusion.GaussianMixtureScore`."""
    angles = np.arange(8) * (2 * math.pi / 8)
    means = _EIGHT_RADIUS * np.stack([np.cos(angles), np.sin(angles)], -1) / _EIGHT_SCALE
    covs = np.broadcast_to((_EIGHT_STD / _EIGHT_SCALE) ** 2 * np.eye(2), (8, 2, 2))
    return means, covs


def _pinwheel(key, n, dtype):
    radial_std, tangential_std, num_classes, rate = 0.3, 0.1, 5, 0.25
    k_c, k_n = jr.split(key)
    rads = jnp.linspace(0, 2 * math.pi, num_classes, endpoint=False, dtype=dtype)
    labels = jr.randint(k_c, (n,), 0, num_classes)
    feats = jr.normal(k_n, (n, 2), dtype) * jnp.array([radial_std, tangential_std], dtype)
    feats = feats.at[:, 0].add(1.0)
    angles = rads[labels] + rate * jnp.exp(feats[:, 0])
    c, s = jnp.cos(angles), jnp.sin(angles)
    rot = jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)  # (n, 2, 2)
    return 2.0 * jnp.einsum("ti,tij->tj", feats, rot)


def _moons(key, n, dtype):
    k_c, k_t, k_n = jr.split(key, 3)
    upper = jr.bernoulli(k_c, 0.5, (n,))
    theta = jr.uniform(k_t, (n,), dtype, 0.0, math.pi)
    outer = jnp.stack([jnp.cos(theta), jnp.sin(theta)], -1)
    inner = jnp.stack([1.0 - jnp.cos(theta), 0.5 - jnp.sin(theta)], -1)
    x = jnp.where(upper[:, None], outer, inner) + 0.1 * jr.normal(k_n, (n, 2), dtype)
    return 2.0 * x + jnp.array([-1.0, -0.2], dtype)


def _two_spirals(key, n, dtype):
    k_c, k_r, k_j, k_n = jr.split(key, 4)
    r = jnp.sqrt(jr.uniform(k_r, (n,), dtype)) * 540 * (2 * math.pi) / 360
    jitter = jr.uniform(k_j, (n, 2), dtype) * 0.5
    arm = jnp.stack([-jnp.cos(r) * r, jnp.sin(r) * r], -1) + jitter
    sign = jnp.where(jr.bernoulli(k_c, 0.5, (n,)), 1.0, -1.0).astype(dtype)
    return sign[:, None] * arm / 3.0 + 0.1 * jr.normal(k_n, (n, 2), dtype)


_TOYS: dict[str, Callable] = {
    "8gaussians": _eight_gaussians,
    "pinwheel": _pinwheel,
    "moons": _moons,
    "2spirals": _two_spirals,
}
TOY_2D_NAMES: tuple[str, ...] = tuple(_TOYS)


def toy_2d(name: str, n: int, *, key: PRNGKeyArray, dtype=None) -> Float[Array, "n 2"]:
    """`n` points of the 2-D toy density `name`, FFJORD's benchmark shapes.

    **Arguments:**

    - `name`: one of `"8gaussians"`, `"pinwheel"`, `"moons"`, `"2spirals"` (`TOY_2D_NAMES`).
    - `n`: number of points, a positive int.
    - `key`: the PRNG key; the same key gives the same points.
    - `dtype`: floating dtype of the result (default: JAX's default float, float32 unless
      `jax_enable_x64`).

    **Returns:** an array of shape `(n, 2)`; every shape lies roughly within `[-4, 4]^2`
    (unstandardised, as FFJORD trains on them).

    **Reference:** Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud, "FFJORD: free-form
    continuous dynamics for scalable reversible generative models", ICLR 2019
    (`rtqichen/ffjord`, `lib/toy_data.py`).
    """
    if name not in _TOYS:
        raise ValueError(
            f"toy_2d: name={name!r} is not a 2-D toy; use one of {', '.join(TOY_2D_NAMES)}."
        )
    n = check_int(n, "n", "toy_2d", hint=" (the number of points)")
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"toy_2d: dtype={dtype} must be a floating dtype, e.g. jnp.float32.")
    return jax.jit(_TOYS[name], static_argnums=(1, 2))(key, int(n), dtype)
