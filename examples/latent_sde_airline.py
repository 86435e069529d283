"""Fit a small LatentSDE to aeon's Airline series (144 monthly values), irregularly subsampled.

Run: python examples/latent_sde_airline.py [--steps N] [--seeds S] [--out DIR]

- 30 % of the training observations dropped (seeded), last 20 % held out; log, then standardised
  with train statistics.
- Forecast: sample the posterior at the last observed time, then run the PRIOR SDE forward from
  that latent (the posterior has no context beyond the data). Held-out Gaussian log-likelihood
  per point (forecast mean/variance across 64 samples + learned observation noise) and MSE, in
  standardised units.
- Trains twice per seed with the SAME solver and controller, so that the regularizer is the only
  difference: Heun (Stratonovich) + `PIDController(rtol=atol=1e-2)` with a VirtualBrownianTree,
  once without a regularizer ("vanilla") and once with `ndes.ErrorEstimate` (penalty weight 0.1).
  (ErrorEstimate needs an error estimate and adaptive steps; a fixed-step Euler baseline would
  compare solvers, not the regularizer.)
- Prints per run: train time, final ELBO, NFE per posterior solve (mean over the last 20
  steps), held-out forecast MSE and log-likelihood; with `--seeds > 1` a mean ± std summary.
"""

import argparse
import time

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from ndes import ErrorEstimate, LatentSDE
from ndes.plot import plot_posterior_and_forecast, plot_training

RUNS = (("vanilla", ()), ("error_estimate", (ErrorEstimate(),)))


def load():
    from aeon.datasets import load_airline  # ships inside the aeon package, no download

    y = np.asarray(load_airline(), dtype=np.float64)
    return np.log(y)


def fit(regs, seed, steps, ts, vals):
    """Train one model; returns it with the per-step ELBO and NFE and the train time."""
    m = LatentSDE(
        1,
        4,
        key=jr.key(seed),
        hidden_size=16,
        context_size=8,
        width=32,
        dt0=1 / 12,
        obs_scale=0.2,
        solver=diffrax.Heun(),
        stepsize_controller=diffrax.PIDController(rtol=1e-2, atol=1e-2),
    )
    opt = optax.adam(1e-2)
    st = opt.init(eqx.filter(m, eqx.is_array))

    @eqx.filter_jit
    def step(m, st, k, beta):
        def loss(mm):
            e, p = mm.elbo(ts, vals, k, num_samples=4, kl_weight=beta, regularizers=regs)
            return -e + 0.1 * p["penalty"], (e, p)

        (_, (e, p)), g = eqx.filter_value_and_grad(loss, has_aux=True)(m)
        u, st = opt.update(g, st, eqx.filter(m, eqx.is_array))
        return eqx.apply_updates(m, u), st, e, p["num_fevals"]

    el, nf = [], []
    t0 = time.time()
    for i in range(steps):
        # linear KL annealing; an array, not a Python float (filter_jit would treat a float as
        # static and recompile the step at every new value)
        beta = jnp.asarray(min(1.0, (i + 1) / (0.5 * steps)), jnp.float32)
        m, st, e, nfe = step(m, st, jr.key(1000 * seed + i), beta)
        el.append(float(e))
        nf.append(float(nfe))
    return m, el, nf, time.time() - t0


def forecast(m, ts, vals, fc_ts, yt, num=64):
    keys = jr.split(jr.key(123), num)
    post = eqx.filter_jit(eqx.filter_vmap(lambda k: m.sample_posterior(ts, vals, k)))(keys)
    fc = eqx.filter_jit(eqx.filter_vmap(lambda zz, k: m.sample_prior(fc_ts, k, z0=zz)))(
        post[0][:, -1], keys
    )
    fx = np.asarray(fc[1][:, 1:, 0])
    mse = float(np.mean((fx.mean(0) - yt) ** 2))
    var = fx.var(0) + float(m.observation_scale()[0]) ** 2
    ll = float(np.mean(-0.5 * (yt - fx.mean(0)) ** 2 / var - 0.5 * np.log(2 * np.pi * var)))
    return post, fc, mse, ll


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", default=".")
    a = ap.parse_args()
    y = load()
    n = len(y)
    t = np.arange(n) / 12.0  # years
    n_tr = int(0.8 * n)
    mu, sd = y[:n_tr].mean(), y[:n_tr].std()
    z = (y - mu) / sd
    rng = np.random.default_rng(0)
    keep = np.sort(
        np.concatenate(
            [
                [0, n_tr - 1],
                rng.choice(np.arange(1, n_tr - 1), int(0.7 * (n_tr - 2)), replace=False),
            ]
        )
    )
    ts, vals = jnp.asarray(t[keep]), jnp.asarray(z[keep])[:, None]
    fc_ts = jnp.asarray(t[n_tr - 1 :])
    yt = z[n_tr:]
    summary = {name: [] for name, _ in RUNS}
    curves = {}
    for seed in range(a.seeds):
        for name, regs in RUNS:
            m, el, nf, train_s = fit(regs, seed, a.steps, ts, vals)
            post, fc, mse, ll = forecast(m, ts, vals, fc_ts, yt)
            elbo, nfe = float(np.mean(el[-20:])), float(np.mean(nf[-20:]))
            summary[name].append((train_s, elbo, nfe, mse, ll))
            if seed == 0:
                curves[name] = (el, nf)
                plot_posterior_and_forecast(
                    f"{a.out}/latent_sde_airline_{name}.png",
                    np.asarray(ts),
                    np.asarray(vals[:, 0]),
                    np.asarray(ts),
                    np.asarray(post[1][:, :, 0]),
                    np.asarray(fc_ts),
                    np.asarray(fc[1][:, :, 0]),
                    t[n_tr:],
                    yt,
                )
            print(
                f"[{name} seed {seed}] train {train_s:.1f}s ({a.steps} steps, incl. compile), "
                f"final ELBO {elbo:.2f}, NFE/posterior solve {nfe:.1f}, held-out forecast MSE "
                f"{mse:.3f}, held-out log-lik/pt {ll:.3f}",
                flush=True,
            )
    plot_training(
        f"{a.out}/latent_sde_airline_training.png",
        [c[0] for c in curves.values()],
        [c[1] for c in curves.values()],
        labels=list(curves),
    )
    if a.seeds > 1:
        print("summary (mean ± std over seeds):")
        cols = ("train s", "ELBO", "NFE/solve", "MSE", "log-lik/pt")
        for name, rows in summary.items():
            arr = np.asarray(rows)
            cells = [
                f"{c} {m:.3f} ± {s:.3f}"
                for c, m, s in zip(cols, arr.mean(0), arr.std(0), strict=True)
            ]
            print(f"  {name}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
