"""Neural-CDE features `[time, fill-forward values, cumulative observation count]`, coefficients.

All three functions are host-side (they inspect values to raise clear errors), so call them
outside `jax.jit`. None of them lets a NaN through: diffrax's `backward_hermite_coefficients`
would otherwise return NaN coefficients for an all-NaN channel and the solver would silently
produce NaN.
"""

import warnings

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import positive_real


def _check_sizes(shape: tuple[int, ...], what: str) -> None:
    """Refuse empty data by name: no series, no time points or no channels."""
    for axis, name, fix in (
        (0, "series", "pass at least one series"),
        (1, "time points", "pass series of at least one time point"),
        (2, "channels", "pass at least one channel"),
    ):
        if shape[axis] == 0:
            raise ValueError(
                f"{what} of shape {shape} has no {name} (axis {axis} is empty); {fix}."
            )


_LARGE = 100.0  # |value| above which cde_features warns that the data are not standardised


def _check_times(times: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if times.ndim != 2 or times.shape != shape[:2]:
        raise ValueError(
            f"times must have shape (N, L) matching {what} (N, L, C); got times "
            f"{times.shape} and {what} {shape}."
        )
    bad = ~np.isfinite(times)
    if bad.any():
        i = int(np.flatnonzero(bad.any(axis=1))[0])
        raise ValueError(f"times of series {i} contain NaN or inf; times must be finite.")
    steps = np.diff(times, axis=1) <= 0
    if steps.any():
        i = int(np.flatnonzero(steps.any(axis=1))[0])
        raise ValueError(
            f"times must be strictly increasing along each series (series {i} is not); "
            "pad with increasing times."
        )


def _check_not_all_nan(values: np.ndarray) -> None:
    """Raise naming the first all-NaN series, or else the first all-NaN (series, channel)."""
    observed = ~np.isnan(values)  # (N, L, C)
    empty_series = ~observed.any(axis=(1, 2))
    if empty_series.any():
        i = int(np.flatnonzero(empty_series)[0])
        raise ValueError(
            f"series {i} is entirely NaN (no observation in any channel); drop that series "
            "before building features."
        )
    empty_channel = ~observed.any(axis=1)  # (N, C)
    if empty_channel.any():
        i, c = (int(k) for k in np.argwhere(empty_channel)[0])
        raise ValueError(
            f"channel {c} of series {i} is entirely NaN; drop that series or channel (or fill "
            "it) before building features."
        )


def _fill_forward(x: np.ndarray) -> np.ndarray:
    # x: (L, C), no all-NaN channel; leading NaNs take the first observed value of the channel.
    out = x.copy()
    for c in range(x.shape[1]):
        col = out[:, c]
        obs = np.flatnonzero(~np.isnan(col))
        idx = np.maximum.accumulate(np.where(np.isnan(col), 0, np.arange(len(col))))
        idx[: obs[0]] = obs[0]
        out[:, c] = col[idx]
    return out


def cde_features(
    times: Float[np.ndarray, "N L"],
    values: Float[np.ndarray, "N L C"],
    *,
    time_scale: float | None = None,
    count_scale: float | None = None,
) -> Float[np.ndarray, "N L 2*C+1"]:
    """NaN-free float64 features `[time, ffill(values), observation counts]` for a neural CDE.

    - time: `(t - t[:, 0]) / time_scale`, so every series starts at 0 and the longest padded
      span is 1 (default `time_scale`: the largest `times[:, -1] - times[:, 0]` of this call);
    - values: leading NaNs take the series' first observed value (so no statistic leaks from
      other series); padding after the last valid point is forward-filled too, making the
      path constant there;
    - counts: the cumulative number of observations per channel divided by `count_scale`
      (default: the padded length `L`), which gives the model the observation pattern
      (Kidger et al. 2020).

    Why scaled: a CDE's hidden state moves by f(z) dX, so a channel that grows
    to `L` (a raw time index or count) outweighs standardised values by a factor of `L` and
    drowns them on long series (measured: an NCDE at chance accuracy on a length-100 set
    without it; see docs/data.md). With the defaults every channel moves by O(1).

    Train and test must share the scales: the defaults agree when both are padded to the
    same length on the same time grid (as `load_uea` does); otherwise pass the train split's
    `time_scale` and `count_scale` to the test split's call.

    **Arguments:**

    - `times`: shape `(N, L)`, each row strictly increasing (e.g. `UEADataset.train.times`).
    - `values`: shape `(N, L, C)`; NaN marks a missing value (or the padding of a shorter
      series).
    - `time_scale`: divides the time channel; default the largest span of this call.
    - `count_scale`: divides the count channels; default `L`.

    **Returns:** float64 features of shape `(N, L, 2C + 1)`: time, `C` values, `C` counts.

    A path for `ndes.NeuralCDE` from gappy series:

    ```python
    times = np.tile(np.arange(6.0), (2, 1))                 # (N, L)
    values = np.random.default_rng(0).normal(size=(2, 6, 3))  # (N, L, C)
    values[0, 2:4] = np.nan                                  # missing observations
    feats = ndes.data.cde_features(times, values)            # (2, 6, 7), NaN-free
    coeffs = ndes.data.hermite_coefficients(jnp.asarray(times), jnp.asarray(feats))
    assert feats.shape == (2, 6, 7) and coeffs[0].shape == (2, 5, 7)
    ```

    Raises `ValueError` for: times not of shape (N, L) matching values (N, L, C); no series,
    time points or channels (N, L or C = 0); non-finite or non-increasing times; inf in values;
    an all-NaN series; an all-NaN channel of a series.
    """
    times = np.asarray(times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 3:
        raise ValueError(f"values must have shape (N, L, C); got shape {values.shape}.")
    _check_sizes(values.shape, "values")
    _check_times(times, values.shape, "values")
    if np.isinf(values).any():
        raise ValueError("values contain inf; only NaN is allowed (it marks a missing value).")
    _check_not_all_nan(values)
    span = times - times[:, :1]
    if time_scale is None:
        time_scale = float(span[:, -1].max())
    if count_scale is None:
        count_scale = float(values.shape[1])
    for name, v in (("time_scale", time_scale), ("count_scale", count_scale)):
        if positive_real(v) is None:
            raise ValueError(f"cde_features({name}={v!r}) must be a positive finite number.")
    big = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0
    if big > _LARGE:
        warnings.warn(
            f"cde_features: values reach |x| = {big:.3g}; standardise them first (per channel, "
            "with train statistics, as ndes.data.load_uea does). A CDE's state moves by "
            "f(z) dX, so increments this large make the solve stiff and its gradients "
            "overflow (measured: inf gradients at values ~1e3).",
            UserWarning,
            stacklevel=2,
        )
    filled = np.stack([_fill_forward(v) for v in values])
    intensity = np.cumsum(~np.isnan(values), axis=1).astype(np.float64) / count_scale
    return np.concatenate([(span / time_scale)[..., None], filled, intensity], axis=-1)


def _check_coefficient_inputs(times, features) -> tuple[np.ndarray, np.ndarray]:
    try:
        t, f = np.asarray(times), np.asarray(features)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        raise ValueError(
            "coefficients are built host-side from concrete arrays: call this outside jax.jit "
            "(once per data set) and pass the coefficients into the jitted step."
        ) from None
    if f.ndim != 3:
        raise ValueError(f"features must have shape (N, L, D); got shape {f.shape}.")
    _check_sizes(f.shape, "features")
    if f.shape[1] < 2:
        raise ValueError(f"interpolation needs at least 2 time points; got L = {f.shape[1]}.")
    _check_times(t, f.shape, "features")
    if np.isnan(f).any():
        _check_not_all_nan(f)
        raise ValueError(
            "features contain NaN; build them with cde_features first (it fills missing values "
            "forward and records the observation pattern)."
        )
    if np.isinf(f).any():
        raise ValueError("features contain inf.")
    return t, f


def _check_finite_result(arrays, f: np.ndarray, t: np.ndarray, dtype, what: str) -> None:
    """Finite inputs can still overflow: in the cast to JAX's dtype (float32 unless
    `jax_enable_x64`) or in the divided differences of the interpolation."""
    if all(bool(jnp.all(jnp.isfinite(a))) for a in arrays):
        return
    biggest = float(np.max(np.abs(f)))
    step = float(np.min(np.diff(t, axis=1)))
    raise ValueError(
        f"{what} overflow {np.dtype(dtype).name} (largest |feature| {biggest:.3g}, smallest "
        f"time step {step:.3g}): the solver would get inf/NaN. Standardise the values (per "
        "channel, subtract the mean and divide by the standard deviation) and rescale the "
        "times to O(1) before building features."
    )


def hermite_coefficients(times: Float[Array, "N L"], features: Float[Array, "N L D"]):
    """Backward-Hermite cubic coefficients for `diffrax.CubicInterpolation(ts, coeffs)`, per series.

    **Arguments:**

    - `times`: shape `(N, L)`, each row strictly increasing.
    - `features`: shape `(N, L, D)`, NaN-free (from `cde_features`).

    **Returns:** a 4-tuple of arrays of shape `(N, L-1, D)` in the dtype of `features`
    (use `jax.vmap(lambda c: diffrax.CubicInterpolation(ts, c))(coeffs)` for a batch).

    Raises `ValueError` for mismatched shapes, no
    series or channels, fewer than 2 times, non-finite or non-increasing times, NaN or inf in
    `features` (naming an all-NaN series or channel when there is one), and coefficients that
    overflow (finite but huge features, e.g. unstandardised values of 1e300, or 1e39 in
    float32).
    """
    t, f = _check_coefficient_inputs(times, features)
    fj = jnp.asarray(f)
    tj = jnp.asarray(t).astype(fj.dtype)
    coeffs = jax.vmap(diffrax.backward_hermite_coefficients)(tj, fj)
    _check_finite_result((tj, *coeffs), f, t, fj.dtype, "the Hermite coefficients")
    return coeffs


def linear_coefficients(times: Float[Array, "N L"], features: Float[Array, "N L D"]):
    """`diffrax.LinearInterpolation(ts, ys)` needs only (ts, ys): returned as checked JAX arrays.

    **Arguments:**

    - `times`: shape `(N, L)`, each row strictly increasing.
    - `features`: shape `(N, L, D)`, NaN-free (from `cde_features`).

    **Returns:** `(times, features)` as JAX arrays of shapes `(N, L)` and `(N, L, D)` in the
    dtype of `features`.

    Same checks as `hermite_coefficients` (here: the values and the slopes between
    consecutive times must be finite in JAX's dtype).
    """
    t, f = _check_coefficient_inputs(times, features)
    fj = jnp.asarray(f)
    tj = jnp.asarray(t).astype(fj.dtype)
    slopes = jnp.diff(fj, axis=1) / jnp.diff(tj, axis=1)[..., None]
    _check_finite_result(
        (tj, fj, slopes), f, t, fj.dtype, "the linear interpolation's values or slopes"
    )
    return tj, fj
