"""Seeded missingness: drop a fixed fraction of observations per series (Kidger et al. 2020)."""

import numpy as np
from jaxtyping import Float, Int


def drop_observations(
    values: Float[np.ndarray, "N L C"],
    lengths: Int[np.ndarray, " N"],
    fraction: float,
    seed: int = 0,
) -> Float[np.ndarray, "N L C"]:
    """Set a fixed fraction of each series' time points to NaN (all channels together).

    **Arguments:**

    - `values`: shape (N, L, C); entries past `lengths[i]` are padding and are left alone.
    - `lengths`: shape (N,), integers in [1, L]: the number of valid time points per series.
    - `fraction`: in [0, 1); per series `round(fraction * lengths[i])` time points are dropped,
      never the first one (so every series keeps at least one observation).
    - `seed`: the NumPy RNG seed; the same seed gives the same mask.

    **Returns:** a copy of `values` with the dropped points set to NaN.

    ```python
    values = np.ones((2, 10, 3))
    dropped = ndes.data.drop_observations(values, np.array([10, 6]), 0.3, seed=0)
    assert np.isnan(dropped[:, :, 0]).sum(axis=1).tolist() == [3, 2]  # round(0.3 * length)
    ```

    Raises `ValueError` for a fraction outside [0, 1), mismatched shapes, and `lengths` that
    are not integers or lie outside [1, L].
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(
            f"missing fraction must lie in [0, 1), got {fraction!r}; use e.g. 0.3, 0.5 or 0.7."
        )
    values = np.array(values, dtype=float, copy=True)
    lengths = np.asarray(lengths)
    if values.ndim != 3 or lengths.shape != (values.shape[0],):
        raise ValueError(
            f"values must have shape (N, L, C) and lengths shape (N,); got {values.shape} "
            f"and {lengths.shape}."
        )
    if lengths.size and not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(
            f"lengths must be integers (the number of valid time points per series); got "
            f"dtype {lengths.dtype}. Pass e.g. lengths.astype(int) if they are whole numbers."
        )
    length = values.shape[1]
    bad = (lengths < 1) | (lengths > length)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"lengths must lie in [1, L] = [1, {length}] (L = values.shape[1]); lengths[{i}] = "
            f"{int(lengths[i])}. Drop empty series and check that lengths count time points."
        )
    rng = np.random.default_rng(seed)
    for i, n in enumerate(lengths):
        k = min(int(round(fraction * n)), int(n) - 1)
        if k > 0:
            drop = 1 + rng.choice(int(n) - 1, size=k, replace=False)
            values[i, drop, :] = np.nan
    return values
