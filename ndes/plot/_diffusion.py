"""Figures of score-based diffusion models (re-exported by `ndes.plot`): samples beside data
(2-D scatter, digit grids), reverse-time trajectories in 2-D, and sample quality against NFE
per sampler. Agg canvas, no pyplot state."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from .._checks import check_int
from ._figure import new_figure, save

__all__ = [
    "plot_diffusion_samples_2d",
    "plot_diffusion_digits",
    "plot_reverse_trajectories",
    "plot_quality_vs_nfe",
]


def _sets(samples, owner, d=None) -> dict[str, np.ndarray]:
    if not isinstance(samples, Mapping):
        samples = {"samples": samples}
    if not samples:
        raise ValueError(f"{owner}: samples is empty; pass an array or a dict name -> array.")
    out = {}
    for name, x in samples.items():
        x = np.asarray(x)
        if x.ndim != 2 or (d is not None and x.shape[1] != d):
            raise ValueError(f"{owner}: samples[{name!r}] must have shape (n, {d}); got {x.shape}.")
        out[str(name)] = x
    return out


def plot_diffusion_samples_2d(
    samples: Float[ArrayLike, "n 2"] | Mapping[str, Float[ArrayLike, "n 2"]],
    data: Float[ArrayLike, "N 2"],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Scatter plots of 2-D data beside the samples of one or more samplers (one panel each,
    same axes).

    **Arguments:** `samples` `(n, 2)` or a dict `{sampler name: (n, 2)}`; `data` `(N, 2)`;
    `path` (PNG); `title`; `dpi`. **Returns:** the path written."""
    x = np.asarray(data)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"plot_diffusion_samples_2d: data must have shape (N, 2); got {x.shape}.")
    sets = {"data": x, **_sets(samples, "plot_diffusion_samples_2d", 2)}
    lo, hi = x.min(0), x.max(0)
    lo, hi = lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo)
    fig = new_figure(2.8 * len(sets), 3.0)
    axes = np.atleast_1d(fig.subplots(1, len(sets)))
    for ax, (name, pts) in zip(axes, sets.items(), strict=True):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, color="k" if name == "data" else None)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        ax.set_title(name, fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
    return save(fig, path, title, dpi)


def plot_diffusion_digits(
    samples: Float[ArrayLike, "n 64"] | Mapping[str, Float[ArrayLike, "n 64"]],
    data: Float[ArrayLike, "N 64"],
    path: str | os.PathLike,
    *,
    num: int = 36,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Grids of 8x8 digits: `num` real images beside `num` samples of each sampler, all in
    pixel values (map model samples with `ndes.data.DigitsDensity.to_pixels`).

    **Arguments:** `samples` `(n, 64)` or a dict `{sampler name: (n, 64)}`; `data`
    `(N, 64)`; `path`; `num` images per grid; `title`; `dpi`. **Returns:** the path
    written."""
    x = np.asarray(data)
    if x.ndim != 2 or x.shape[1] != 64:
        raise ValueError(f"plot_diffusion_digits: data must have shape (N, 64); got {x.shape}.")
    num = check_int(num, "num", "plot_diffusion_digits")
    sets = {"data": x, **_sets(samples, "plot_diffusion_digits", 64)}
    cols = int(math.ceil(math.sqrt(num)))
    rows = int(math.ceil(num / cols))
    fig = new_figure(0.45 * cols * len(sets) + 0.3 * len(sets), 0.45 * rows + 0.5)
    subfigs = np.atleast_1d(fig.subfigures(1, len(sets)))
    for sub, (name, pix) in zip(subfigs, sets.items(), strict=True):
        axes = np.asarray(sub.subplots(rows, cols)).reshape(-1)
        for i, ax in enumerate(axes):
            if i < min(num, pix.shape[0]):
                ax.imshow(pix[i].reshape(8, 8), cmap="gray_r", vmin=0, vmax=16)
            ax.set_axis_off()
        sub.suptitle(name, fontsize="small")
    return save(fig, path, title, dpi)


def _trajectories(model, key, n, eps, num_times, steps):
    from ..diffusion import ProbabilityFlowField

    sde = model.sde
    x_T = sde.prior_sample(key, (n, 2), jnp.result_type(float))
    ts = jnp.linspace(sde.T, eps, num_times)
    field = jax.vmap(ProbabilityFlowField(model), in_axes=(None, 0))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, x, a: field(t, x)), diffrax.Tsit5(), sde.T, eps, None, x_T,
        saveat=diffrax.SaveAt(ts=ts), stepsize_controller=diffrax.PIDController(1e-3, 1e-3),
    )  # fmt: skip
    score = jax.vmap(model.score, in_axes=(None, 0))
    grid = jnp.linspace(sde.T, eps, steps + 1)

    def step(x, inp):  # Euler--Maruyama on the reverse SDE, as reverse_sde_sample
        t, t_next, k = inp
        dt, g = t - t_next, sde.diffusion(t)
        mean = x - (sde.drift(t, x) - g**2 * score(t, x)) * dt
        return mean + g * jnp.sqrt(dt) * jr.normal(k, x.shape, x.dtype), mean

    _, means = jax.lax.scan(step, x_T, (grid[:-1], grid[1:], jr.split(jr.fold_in(key, 1), steps)))
    return np.asarray(sol.ys), np.concatenate([np.asarray(x_T)[None], np.asarray(means)])


def plot_reverse_trajectories(
    model: Any,
    path: str | os.PathLike,
    *,
    key: PRNGKeyArray,
    data: Float[ArrayLike, "N 2"] | None = None,
    num_trajectories: int = 64,
    eps: float = 1e-3,
    steps: int = 200,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Reverse-time paths of a 2-D `ndes.diffusion.ScoreModel` from the same prior draws at
    $T$ to `eps`: the probability-flow ODE (Tsit5, rtol = atol = 1e-3, 50 saved times; left)
    and the reverse SDE (Euler--Maruyama, `steps` steps; right). Start points are circles,
    end points dots, the data (if given) grey.

    **Arguments:** `model`, `path`, `key` (prior draws and SDE noise), `data` `(N, 2)`,
    `num_trajectories`, `eps`, `steps`, `title`, `dpi`. **Returns:** the path written."""
    if getattr(model, "data_size", None) != 2:
        raise ValueError(
            "plot_reverse_trajectories: model must be a 2-D ndes.diffusion.ScoreModel (its "
            f"network's data_size is {getattr(model, 'data_size', None)})."
        )
    num_trajectories = check_int(num_trajectories, "num_trajectories", "plot_reverse_trajectories")
    ode, sde = _trajectories(model, key, num_trajectories, float(eps), 50, int(steps))
    fig = new_figure(7.0, 3.4)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, paths, name in ((axes[0], ode, "probability-flow ODE"), (axes[1], sde, "reverse SDE")):
        if data is not None:
            d = np.asarray(data)
            ax.scatter(d[:, 0], d[:, 1], s=1, color="0.8", zorder=0)
        for i in range(paths.shape[1]):
            ax.plot(paths[:, i, 0], paths[:, i, 1], lw=0.5, alpha=0.6)
        ax.scatter(paths[0, :, 0], paths[0, :, 1], s=8, facecolors="none", edgecolors="k", lw=0.5)
        ax.scatter(paths[-1, :, 0], paths[-1, :, 1], s=4, color="k")
        ax.set_title(name, fontsize="small")
        ax.set_aspect("equal")
    return save(fig, path, title, dpi)


def plot_quality_vs_nfe(
    results: Mapping[str, Sequence[Sequence[float]]],
    path: str | os.PathLike,
    *,
    metric: str = "quality",
    floor: float | None = None,
    log_y: bool = False,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Sample quality against NFE per sample, one line per sampler family.

    **Arguments:** `results` `{family: [(nfe, value) or (nfe, value, std), ...]}` (points are
    sorted by NFE; a std draws an error bar); `path`; `metric` (the y label, lower is better);
    `floor` (a horizontal data-vs-data line); `log_y`; `title`; `dpi`. NFE is on a log axis.
    **Returns:** the path written."""
    if not isinstance(results, Mapping) or not results:
        raise ValueError("plot_quality_vs_nfe: results must be a non-empty dict family -> points.")
    fig = new_figure(5.5, 3.6)
    ax = fig.subplots()
    for name, pts in results.items():
        p = np.asarray(pts, float)
        if p.ndim != 2 or p.shape[1] not in (2, 3) or p.shape[0] == 0:
            raise ValueError(
                f"plot_quality_vs_nfe: results[{name!r}] must be a list of (nfe, value) or "
                f"(nfe, value, std) points; got shape {p.shape}."
            )
        p = p[np.argsort(p[:, 0])]
        err = p[:, 2] if p.shape[1] == 3 else None
        ax.errorbar(p[:, 0], p[:, 1], yerr=err, marker="o", ms=4, capsize=2, label=name)
    if floor is not None:
        ax.axhline(floor, color="0.5", ls="--", lw=1, label="data vs data")
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("NFE per sample")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return save(fig, path, title, dpi)
