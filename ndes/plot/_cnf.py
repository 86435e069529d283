"""Figures of a continuous normalizing flow (re-exported by `ndes.plot`): a 2-D density heat
map beside the data and the flow's samples, and a grid of sampled digits. Agg canvas, no
pyplot state."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from ._figure import new_figure, save

__all__ = ["plot_density_2d", "plot_digit_samples"]


def _exact(model):
    """The model with the exact divergence (two JVPs in 2-D: no probe noise in the map)."""
    if getattr(model, "divergence", None) == "hutchinson":
        return dataclasses.replace(model, divergence="exact")
    return model


def plot_density_2d(
    model: Any,
    data: Float[ArrayLike, "N 2"],
    path: str | os.PathLike,
    *,
    key: PRNGKeyArray,
    grid: int = 100,
    num_samples: int = 2000,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Three panels of a 2-D `ndes.CNF`: the data, the flow's density $p(x)$ on a grid (exact
    divergence, one `log_prob` solve of `grid**2` points) and `num_samples` samples.

    **Arguments:** `model` (a CNF on 2-D data); `data` `(N, 2)` (sets the plotted square:
    the data's range plus a margin); `path` the PNG to write; `key` for the samples;
    `grid` points per axis; `num_samples`; `title`; `dpi`.

    **Returns:** the path written.
    """
    x = np.asarray(data)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"plot_density_2d: data must have shape (N, 2); got {x.shape}.")
    lo, hi = x.min(0), x.max(0)
    pad = 0.1 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    gx, gy = np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid)
    pts = np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2).astype(x.dtype)
    logp = eqx.filter_jit(lambda m, p: _exact(m).log_prob(p).ys)(model, jnp.asarray(pts))
    dens = np.exp(np.asarray(logp)).reshape(grid, grid)
    samples = np.asarray(model.sample(key, num_samples).ys)
    fig = new_figure(10.5, 3.6)
    axes = fig.subplots(1, 3)
    ext = (lo[0], hi[0], lo[1], hi[1])
    axes[0].hist2d(x[:, 0], x[:, 1], bins=grid, range=[ext[:2], ext[2:]], cmap="viridis")
    axes[0].set_title("data")
    axes[1].imshow(dens, origin="lower", extent=ext, aspect="auto", cmap="viridis")
    axes[1].set_title("model density p(x)")
    axes[2].hist2d(
        samples[:, 0], samples[:, 1], bins=grid, range=[ext[:2], ext[2:]], cmap="viridis"
    )
    axes[2].set_title(f"{num_samples} samples")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return save(fig, path, title, dpi)


def plot_digit_samples(
    model: Any,
    path: str | os.PathLike,
    *,
    key: PRNGKeyArray,
    to_pixels: Callable[[np.ndarray], np.ndarray],
    num_samples: int = 64,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """A grid of `num_samples` 8x8 digits sampled from a 64-d `ndes.CNF`, mapped back to
    pixel values by `to_pixels` (e.g. `ndes.data.load_digits_density().to_pixels`).

    **Arguments:**

    - `model`: a 64-d `ndes.CNF` (anything with `sample(key, n)` returning `.ys`).
    - `path`: the output image (PNG); parent directories are created.
    - `key`: PRNG key for the samples.
    - `to_pixels`: maps model-space samples `(n, 64)` to pixel values.
    - `num_samples`: how many digits to draw (a near-square grid).
    - `title`: optional figure title.
    - `dpi`: resolution.

    **Returns:** the path written.
    """
    d = model._data_size() if hasattr(model, "_data_size") else 64
    if d != 64:
        raise ValueError(f"plot_digit_samples: the model must be 64-d (8x8 pixels); got {d}.")
    x = np.asarray(model.sample(key, num_samples).ys)
    pix = np.asarray(to_pixels(x))
    cols = int(math.ceil(math.sqrt(num_samples)))
    rows = int(math.ceil(num_samples / cols))
    fig = new_figure(0.7 * cols, 0.7 * rows + (0.4 if title else 0.0))
    axes = np.asarray(fig.subplots(rows, cols)).reshape(-1)
    for i, ax in enumerate(axes):
        if i < num_samples:
            ax.imshow(pix[i].reshape(8, 8), cmap="gray_r", vmin=0, vmax=pix.max() or 1)
        ax.set_axis_off()
    return save(fig, path, title, dpi)
