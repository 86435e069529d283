"""Figures of a latent-SDE fit: posterior samples and the prior's forecast beside the data,
and ELBO / NFE over training. Functions take arrays, write a PNG and return the figure."""

from __future__ import annotations

import numpy as np

from ._figure import new_figure, save

__all__ = ["plot_posterior_and_forecast", "plot_training"]


def plot_posterior_and_forecast(
    path,
    ts,
    values,
    post_ts,
    post_samples,
    fc_ts=None,
    fc_samples=None,
    test_ts=None,
    test_values=None,
):
    """Data vs posterior samples (mean, 5–95 % band) and prior-SDE forecast samples after the data.

    **Arguments:**

    - `path`: output PNG path.
    - `ts`, `values`: observed times `(n,)` and values `(n,)` (NaN = missing, not drawn).
    - `post_ts`, `post_samples`: `(m,)` and `(S, m)` decoded posterior samples.
    - `fc_ts`, `fc_samples`: `(k,)` and `(S, k)` forecast samples (optional).
    - `test_ts`, `test_values`: held-out data (optional).
    """
    fig = new_figure(9, 4, layout=None)
    ax = fig.subplots()
    for t_, s_, c, lab in (
        (post_ts, post_samples, "C0", "posterior"),
        (fc_ts, fc_samples, "C1", "forecast"),
    ):
        if t_ is None:
            continue
        s_ = np.asarray(s_)
        ax.fill_between(
            t_,
            np.quantile(s_, 0.05, 0),
            np.quantile(s_, 0.95, 0),
            color=c,
            alpha=0.25,
            label=f"{lab} 5–95 %",
        )
        ax.plot(t_, s_.mean(0), color=c, label=f"{lab} mean")
    ax.plot(ts, values, "k.", label="observed (train)")
    if test_ts is not None:
        ax.plot(test_ts, test_values, "rx", label="held out")
    ax.legend(fontsize=8)
    ax.set_xlabel("t")
    fig.tight_layout()
    save(fig, path)
    return fig


def plot_training(path, elbos, nfes, labels=("vanilla",)):
    """ELBO and NFE per posterior solve over training, one line per run, two panels side by
    side, saved as a PNG (as `examples/latent_sde_airline.py` draws it).

    **Arguments:**

    - `path`: output PNG path (parent folders are created).
    - `elbos`: a sequence with one entry per run, each a `(steps,)` array-like of the
      training ELBO at every step (e.g. the first value `ndes.LatentSDE.elbo` returns);
      plotted as given, without smoothing or negating.
    - `nfes`: a sequence with one entry per run, each `(steps,)`: the number of vector-field
      evaluations of the posterior solve at every step (e.g. `stats["num_fevals"]`).
      Within a run, `elbos` and `nfes` entries may differ in length; the x axis is the
      index in each array (labelled "step").
    - `labels`: one legend label per run (default `("vanilla",)`, i.e. a single run);
      `elbos`, `nfes` and `labels` must have the same length (else `ValueError`).

    **Returns:** the `matplotlib.figure.Figure` (displayed by a notebook).
    """
    fig = new_figure(9, 3.5, layout=None)
    axs = fig.subplots(1, 2)
    for e, n, lab in zip(elbos, nfes, labels, strict=True):
        axs[0].plot(np.asarray(e), label=lab)
        axs[1].plot(np.asarray(n), label=lab)
    axs[0].set_title("ELBO (train)")
    axs[1].set_title("NFE per posterior solve")
    for a in axs:
        a.set_xlabel("step")
        a.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)
    return fig
