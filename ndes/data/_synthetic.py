"""Synthetic data generated from a PRNG key: cubic spirals, Lotka--Volterra, Ornstein--Uhlenbeck.

Every generator is a pure function of its key: the same key gives the same arrays. Outputs take
the floating dtype of `ts` (float32, or float64 under `jax_enable_x64`).
"""

import math

import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_int, check_positive, finite_real, positive_real

# Chen et al. (2018)'s toy: dy/dt = (y**3) @ A.
_A_SPIRAL = ((-0.1, 2.0), (-2.0, -0.1))


# ---- input checks ---------------------------------------------------------------------------


def _check_times(ts, name: str = "ts") -> Float[Array, " L"]:
    """`ts` as a 1-D floating JAX array; strictly increasing and finite when concrete."""
    ts = jnp.asarray(ts)
    if not jnp.issubdtype(ts.dtype, jnp.floating):
        ts = ts.astype(jnp.result_type(float))
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"{name} must be 1-D with at least 2 times, got shape {ts.shape}.")
    try:
        host = np.asarray(ts)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return ts  # traced inside a caller's jit: cannot check values here
    if not np.isfinite(host).all():
        raise ValueError(f"{name} contains NaN or inf.")
    if np.any(np.diff(host) <= 0):
        raise ValueError(f"{name} must be strictly increasing.")
    return ts


# ---- cubic spirals ---------------------------------------------------------------------------


@jax.jit
def _spiral_solve(ts, A, y0):
    term = diffrax.ODETerm(lambda t, y, args: (y**3) @ A)

    def one(y):
        return diffrax.diffeqsolve(
            term,
            diffrax.Dopri8(),
            ts[0],
            ts[-1],
            None,
            y,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-8),
            max_steps=100_000,
        ).ys

    return jax.vmap(one)(y0)


def spirals(
    key: PRNGKeyArray,
    num: int,
    ts: Float[Array, " L"],
    *,
    radius: tuple[float, float] = (0.5, 1.3),
) -> tuple[Float[Array, "num 2"], Float[Array, "num L 2"]]:
    """`num` trajectories of the cubic spiral `dy/dt = (y**3) @ A`,
    `A = [[-0.1, 2.0], [-2.0, -0.1]]` (Chen et al. 2018's toy), sampled at `ts`.

    **Arguments:**

    - `key`: PRNG key; the same key gives the same trajectories.
    - `num`: number of trajectories.
    - `ts`: shape (L,), strictly increasing; the solve runs from `ts[0]` to `ts[-1]`.
    - `radius`: initial conditions are uniform in angle and in radius on `[radius[0], radius[1])`.

    **Returns:** `(y0, ys)` with shapes `(num, 2)` and `(num, L, 2)` in the dtype of `ts`;
    `ys[:, 0] == y0`. Solved with Dopri8 at rtol = atol = 1e-8.

    ```python
    y0, ys = ndes.data.spirals(jax.random.key(0), 4, jnp.linspace(0.0, 1.0, 5))
    assert y0.shape == (4, 2) and ys.shape == (4, 5, 2)
    ```
    """
    num = check_int(num, "num", "spirals")
    ts = _check_times(ts)
    if not (len(radius) == 2 and 0 <= radius[0] < radius[1]):
        raise ValueError(f"radius must be (r_min, r_max) with 0 <= r_min < r_max, got {radius!r}.")
    kr, ka = jax.random.split(key)
    r = jax.random.uniform(kr, (num,), minval=radius[0], maxval=radius[1])
    a = jax.random.uniform(ka, (num,), maxval=2 * jnp.pi)
    y0 = jnp.stack([r * jnp.cos(a), r * jnp.sin(a)], axis=-1).astype(ts.dtype)
    A = jnp.asarray(_A_SPIRAL, dtype=ts.dtype)
    return y0, _spiral_solve(ts, A, y0)


# ---- Lotka--Volterra -------------------------------------------------------------------------


def _lv_drift(t, y, p):
    alpha, beta, gamma, delta = p[0], p[1], p[2], p[3]
    prey, pred = y[0], y[1]
    return jnp.stack([alpha * prey - beta * prey * pred, delta * prey * pred - gamma * pred])


@jax.jit
def _lv_ode_solve(ts, p, y0):
    def one(y):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(_lv_drift),
            diffrax.Dopri8(),
            ts[0],
            ts[-1],
            None,
            y,
            args=p,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
            max_steps=100_000,
        ).ys

    return jax.vmap(one)(y0)


def _lv_log_drift(t, u, args):
    # Itô's formula for u = log y under dy_i = f_i(y) dt + sigma y_i dW_i.
    p, sigma = args
    y = jnp.exp(u)
    return _lv_drift(t, y, p) / y - 0.5 * sigma**2


def _lv_log_diffusion(t, u, args):
    # Independent (diagonal) noise of scale sigma on each log-population.
    return lx.DiagonalLinearOperator(jnp.full_like(u, args[1]))


@jax.jit
def _lv_sde_solve(grid, ts, p, sigma, y0, keys):
    dt_min = jnp.min(jnp.diff(grid))

    def one(y, k):
        bm = diffrax.VirtualBrownianTree(
            grid[0],
            grid[-1],
            tol=dt_min / 16,
            shape=(2,),
            key=k,
            levy_area=diffrax.SpaceTimeLevyArea,
        )
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(_lv_log_drift),
            diffrax.ControlTerm(_lv_log_diffusion, bm),
        )
        sol = diffrax.diffeqsolve(
            terms,
            diffrax.ShARK(),
            grid[0],
            grid[-1],
            None,
            jnp.log(y),
            args=(p, sigma),
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.StepTo(ts=grid),
            max_steps=grid.shape[0],
        )
        return jnp.exp(sol.ys)

    return jax.vmap(one)(y0, keys)


def _substep_grid(ts: np.ndarray, dt: float) -> np.ndarray:
    """The times `ts` with each interval cut into ceil(h / dt) equal substeps."""
    pieces = [
        np.linspace(a, b, max(1, math.ceil((b - a) / dt)) + 1)[:-1]
        for a, b in zip(ts[:-1], ts[1:], strict=True)
    ]
    return np.concatenate(pieces + [ts[-1:]])


def lotka_volterra(
    key: PRNGKeyArray,
    num: int,
    ts: Float[Array, " L"],
    *,
    params: tuple[float, float, float, float] = (1.5, 1.0, 3.0, 1.0),
    noise: float = 0.0,
    y0_range: tuple[float, float] = (0.5, 3.0),
    dt: float = 2e-3,
) -> tuple[Float[Array, "num 2"], Float[Array, "num L 2"]]:
    """`num` prey--predator trajectories of the Lotka--Volterra system, sampled at `ts`.

    With `params = (alpha, beta, gamma, delta)` and state `y = (prey, predator)`:

        d prey = (alpha prey - beta prey pred) dt + noise * prey dW_1
        d pred = (delta prey pred - gamma pred) dt + noise * pred dW_2     (Itô)

    **Arguments:**

    - `key`: PRNG key; the same key gives the same trajectories (initial states and noise).
    - `num`: number of trajectories.
    - `ts`: shape (L,), strictly increasing; the solve runs from `ts[0]` to `ts[-1]`.
    - `params`: four positive rates. The default (1.5, 1, 3, 1) cycles around the equilibrium
      `(gamma/delta, alpha/beta) = (3, 1.5)` with a period of about 2.5 time units near it.
    - `noise`: `0.0` (default) for the deterministic ODE, solved with Dopri8 at
      rtol = atol = 1e-10. A positive value is the diffusion scale of independent geometric
      (multiplicative) noise on each population: the SDE is solved in log space, where the
      noise is additive (so populations stay positive), with ShARK (strong order 1.5 for
      additive noise) on fixed steps of at most `dt` that hit every time in `ts` exactly,
      driven by one `diffrax.VirtualBrownianTree` per trajectory.
    - `y0_range`: both initial populations are drawn uniformly from `[lo, hi)`, `0 < lo < hi`.
    - `dt`: the largest step of the stochastic solve (unused when `noise == 0`).

    **Returns:** `(y0, ys)` with shapes `(num, 2)` and `(num, L, 2)` in the dtype of `ts`
    (channel 0 = prey, 1 = predator); `ys[:, 0] == y0` up to the log/exp round trip.
    """
    num = check_int(num, "num", "lotka_volterra")
    ts = _check_times(ts)
    if len(params) != 4 or not all(positive_real(q) is not None for q in params):
        raise ValueError(
            f"params must be four positive rates (alpha, beta, gamma, delta), got {params!r}."
        )
    if finite_real(noise) is None or noise < 0:
        raise ValueError(f"noise must be >= 0 (0 for the deterministic ODE), got {noise!r}.")
    if not (len(y0_range) == 2 and 0 < y0_range[0] < y0_range[1]):
        raise ValueError(f"y0_range must be (lo, hi) with 0 < lo < hi, got {y0_range!r}.")
    check_positive(dt, "dt", "lotka_volterra", " (the largest step of the stochastic solve)")
    k0, kw = jax.random.split(key)
    y0 = jax.random.uniform(k0, (num, 2), minval=y0_range[0], maxval=y0_range[1], dtype=ts.dtype)
    p = jnp.asarray(params, dtype=ts.dtype)
    if noise == 0:
        return y0, _lv_ode_solve(ts, p, y0)
    try:
        host_ts = np.asarray(ts)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        raise ValueError(
            "lotka_volterra(noise > 0) builds its step grid from concrete `ts`; call it "
            "outside jit."
        ) from None
    grid = jnp.asarray(_substep_grid(host_ts.astype(np.float64), float(dt)), dtype=ts.dtype)
    sigma = jnp.asarray(noise, dtype=ts.dtype)
    return y0, _lv_sde_solve(grid, ts, p, sigma, y0, jax.random.split(kw, num))


# ---- Ornstein--Uhlenbeck ---------------------------------------------------------------------


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

    **Arguments:**


    - `key`: PRNG key; the same key gives the same paths.
    - `num_paths`: number of paths.
    - `times`: shape `(L,)`, increasing.
    - `theta`: mean-reversion rate θ > 0 (per unit time).
    - `mu`: the long-run mean μ.
    - `sigma`: diffusion scale σ > 0.
    - `x0`: a fixed start X_0; `None` (default) draws it from the stationary law
      N(μ, σ²/(2θ)).

    **Returns:** shape `(num_paths, L)` in the floating dtype of `times`.
    """
    num_paths = check_int(num_paths, "num_paths", "ornstein_uhlenbeck")
    check_positive(theta, "theta", "ornstein_uhlenbeck", " (the mean-reversion rate)")
    check_positive(sigma, "sigma", "ornstein_uhlenbeck", " (the diffusion scale)")
    times = _check_times(times, "times")
    dtype = times.dtype
    k0, k1 = jax.random.split(key)
    var_inf = sigma**2 / (2 * theta)
    if x0 is None:
        start = mu + jnp.sqrt(var_inf) * jax.random.normal(k0, (num_paths,), dtype=dtype)
    else:
        start = jnp.full((num_paths,), x0, dtype=dtype)
    dt = jnp.diff(times)
    decay = jnp.exp(-theta * dt)
    std = jnp.sqrt(var_inf * (1 - decay**2))
    noise = jax.random.normal(k1, (dt.shape[0], num_paths), dtype=dtype)

    def step(x, inp):
        a, s, z = inp
        x = mu + (x - mu) * a + s * z
        return x, x

    _, xs = jax.lax.scan(step, start, (decay, std, noise))
    return jnp.concatenate([start[:, None], xs.T], axis=1)
