"""The log-ODE method's input: depth-1 or depth-2 log-signatures of a path over windows.

Morrill, Salvi, Kidger, Foster, "Neural Rough Differential Equations for Long Time Series",
ICML 2021. A neural CDE on a long series takes one solver step per observation interval;
the log-ODE method takes one step per *window* of `stride` intervals and feeds the model the
window's log-signature: its increment (depth 1) and, at depth 2, its Levy areas, which keep
the order in which the channels moved inside the window (what subsampling loses).
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Int

from .._checks import check_int
from ._features import _check_coefficient_inputs

__all__ = ["logsig_windows"]


def _knots(length: int, stride: int) -> np.ndarray:
    """Window ends on the padded grid: 0, stride, 2 stride, ..., and the last index."""
    knots = np.arange(0, length, stride)
    return knots if knots[-1] == length - 1 else np.append(knots, length - 1)


def logsig_windows(
    times: Float[np.ndarray, "N L"],
    features: Float[np.ndarray, "N L D"],
    *,
    stride: int,
    depth: int = 2,
    lengths: Int[np.ndarray, " N"] | None = None,
) -> tuple[Float[np.ndarray, "N W+1"], Float[np.ndarray, "N W+1 E"], Int[np.ndarray, " N"]]:
    r"""The path whose linear interpolation drives a neural CDE by the log-ODE method.

    The piecewise-linear path through `features` is cut into windows of `stride` observation
    intervals (the last window ends at the last time point and may be shorter). Per window
    $[t_a, t_b]$ the depth-2 log-signature in the Lyndon basis is the increment
    $X_b - X_a$ (`D` channels) and the Levy areas, for channels $i < j$,

    $$A_{ij} = \tfrac12 \sum_{m=a}^{b-1} \big((X_m - X_a)_i\,\Delta_m^j
    - (X_m - X_a)_j\,\Delta_m^i\big), \qquad \Delta_m = X_{m+1} - X_m,$$

    exact for a piecewise-linear path (each linear piece adds no area of its own). The
    returned path starts at $(X_0, 0)$ and adds each window's log-signature at the window's
    end, so `diffrax.LinearInterpolation` through it (`linear_coefficients`) has, inside a
    window, the constant derivative log-signature / window length: a CDE
    $\mathrm{d}z = f(z)\,\mathrm{d}Y$ on it is the log-ODE method of the paper
    (`ndes.NeuralCDE(..., interpolation=diffrax.LinearInterpolation)`). With depth 1 the
    path is `features` at the window ends (plain subsampling, kept for comparison).

    Padding: a series shorter than `L` is constant after its end (`cde_features` fills it
    forward), so its windows past the end add nothing; its new length counts the knots up to
    the first one at or after its last valid point.

    **Arguments:**

    - `times`: shape `(N, L)`, strictly increasing per row (e.g. `Split.times`).
    - `features`: shape `(N, L, D)`, NaN-free (from `cde_features`).
    - `stride`: observation intervals per window (an int >= 1; 1 keeps every point, and at
      depth 2 every area is then 0). For about `K` windows on series of length `L`, pass
      `ceil(L / K)`, the rule of `load_uea(max_length=K)`.
    - `depth`: 1 or 2 (default 2).
    - `lengths`: shape `(N,)`, valid points per series (`Split.lengths`); default all `L`.

    **Returns:** `(times, path, lengths)`: the knots' times `(N, W+1)`, the path
    `(N, W+1, E)` in float64 with `E = D + D(D-1)/2` at depth 2 (`D` at depth 1; channel
    order: the increments, then $A_{ij}$ for $i < j$ row by row), and the new lengths
    `(N,)`; `W = ceil((L-1)/stride)` windows.

    A series of 10 points in windows of 4 intervals (knots 0, 4, 8, 9), then the model:

    ```python
    times = np.tile(np.arange(10.0), (2, 1))                     # (N, L)
    values = np.random.default_rng(0).normal(size=(2, 10, 2))    # (N, L, C)
    feats = ndes.data.cde_features(times, values)                # (2, 10, 5)
    t, path, lengths = ndes.data.logsig_windows(times, feats, stride=4)
    assert t.shape == (2, 4) and path.shape == (2, 4, 5 + 10) and list(lengths) == [4, 4]
    ts, coeffs = ndes.data.linear_coefficients(t, path)
    model = ndes.NeuralCDE(15, 8, 3, 16, 1, key=jax.random.key(0),
                           interpolation=diffrax.LinearInterpolation)
    assert model(ts, coeffs).ys.shape == (2, 3)
    ```

    Raises `ValueError` for: `stride` not an int >= 1, `depth` not 1 or 2, `lengths` not of
    shape `(N,)` with values in `[1, L]`, and the checks of `linear_coefficients` (shapes,
    fewer than 2 times, non-increasing times, NaN or inf in `features`).
    """
    stride = check_int(
        stride, "stride", "logsig_windows", hint=" (observation intervals per window)"
    )
    if isinstance(depth, bool) or depth not in (1, 2):
        raise ValueError(f"logsig_windows: depth={depth!r} must be 1 or 2.")
    t, x = _check_coefficient_inputs(times, features)
    t, x = t.astype(np.float64), x.astype(np.float64)
    n, length, d = x.shape
    if lengths is None:
        lengths = np.full(n, length)
    lengths = np.asarray(lengths)
    if (
        lengths.shape != (n,)
        or lengths.dtype.kind not in "iu"
        or (lengths < 1).any()
        or (lengths > length).any()
    ):
        raise ValueError(
            f"logsig_windows: lengths must be {n} ints in [1, {length}] (valid points per "
            f"series, e.g. Split.lengths); got shape {lengths.shape}, dtype {lengths.dtype}."
        )
    knots = _knots(length, stride)
    path = [x[:, knots]]  # depth 1: X at the window ends = X_0 + the summed increments
    if depth == 2:
        inc = np.diff(x, axis=1)  # (N, L-1, D)
        rel = x[:, :-1] - x[:, :1]  # X_m - X_0
        iu, ju = np.triu_indices(d, k=1)
        # prefix sums P(m) = sum_{k<m} (X_k - X_0)_i Delta_k^j - (i <-> j), over the pairs
        term = rel[..., iu] * inc[..., ju] - rel[..., ju] * inc[..., iu]
        prefix = np.concatenate([np.zeros((n, 1, len(iu))), np.cumsum(term, axis=1)], axis=1)
        xa, xb = x[:, knots[:-1]] - x[:, :1], x[:, knots[1:]] - x[:, :1]  # relative to X_0
        # the sum over a window relative to X_a: P(b) - P(a) - [(X_a)_i dX^j - (X_a)_j dX^i]
        dx = xb - xa
        area = 0.5 * (
            prefix[:, knots[1:]] - prefix[:, knots[:-1]]
            - (xa[..., iu] * dx[..., ju] - xa[..., ju] * dx[..., iu])
        )  # fmt: skip
        cum = np.concatenate([np.zeros((n, 1, len(iu))), np.cumsum(area, axis=1)], axis=1)
        path.append(cum)
    new_lengths = np.searchsorted(knots, lengths - 1) + 1
    return t[:, knots], np.concatenate(path, axis=-1), new_lengths
