"""Fit a small LatentSDE to aeon's Airline series (144 monthly values), irregularly subsampled.

Run: /tmp/venv/bin/python examples/latent_sde_airline.py [--steps N] [--out DIR]
- 30 % of the training observations dropped (seeded), last 20 % held out; standardised with train statistics.
- Forecast: sample the posterior at the last observed time, then run the PRIOR SDE forward from that latent
  (the posterior has no context beyond the data). Held-out Gaussian log-likelihood (per point, using the
  forecast mean/std across samples + learned obs noise) and MSE (standardised units).
- Trains twice: vanilla (Euler, fixed step) and Heun+PID with ndes.ErrorEstimate.
"""

import argparse
import time

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from ndes.models._latent_sde import LatentSDE
from ndes.models._latent_sde_plot import plot_posterior_and_forecast, plot_training
from ndes.regularizers import ErrorEstimate


def load():
    from aeon.datasets import load_airline  # ships inside the aeon package, no download

    y = np.asarray(load_airline(), dtype=np.float64)
    return np.log(y)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default=".")
    a = ap.parse_args()
    y = load()
    n = len(y)
    t = np.arange(n) / 12.0  # years
    n_tr = int(0.8 * n)
    mu, sd = y[:n_tr].mean(), y[:n_tr].std()
    z = (y - mu) / sd
    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([[0, n_tr - 1], rng.choice(np.arange(1, n_tr - 1), int(0.7 * (n_tr - 2)),
                                                             replace=False)]))
    ts, vals = jnp.asarray(t[keep]), jnp.asarray(z[keep])[:, None]
    results = {}
    for name, kw, regs in (
        ("vanilla", dict(), ()),
        ("error_estimate", dict(solver=diffrax.Heun(),
                                stepsize_controller=diffrax.PIDController(rtol=1e-2, atol=1e-2)), (ErrorEstimate(),)),
    ):
        m = LatentSDE(1, 4, key=jr.key(0), hidden_size=16, context_size=8, width=32, dt0=1 / 12, obs_scale=0.2, **kw)
        opt = optax.adam(1e-2)
        st = opt.init(eqx.filter(m, eqx.is_array))

        @eqx.filter_jit
        def step(m, st, k, beta):
            def loss(mm):
                e, p = mm.elbo(ts, vals, k, num_samples=4, kl_weight=beta, regularizers=regs)
                return -e + 0.1 * p["penalty"], (e, p)

            (l, (e, p)), g = eqx.filter_value_and_grad(loss, has_aux=True)(m)
            u, st = opt.update(g, st, eqx.filter(m, eqx.is_array))
            return eqx.apply_updates(m, u), st, e, p["num_fevals"]

        el, nf = [], []
        t0 = time.time()
        for i in range(a.steps):
            beta = min(1.0, (i + 1) / (0.5 * a.steps))  # linear KL annealing
            m, st, e, nfe = step(m, st, jr.key(i), beta)
            el.append(float(e)); nf.append(float(nfe))
        train_s = time.time() - t0
        S = 64
        keys = jr.split(jr.key(123), S)
        post = eqx.filter_jit(eqx.filter_vmap(lambda k: m.sample_posterior(ts, vals, k)))(keys)
        fc_ts = jnp.asarray(t[n_tr - 1:])
        fc = eqx.filter_jit(eqx.filter_vmap(lambda zz, k: m.sample_prior(fc_ts, k, z0=zz)))(post[0][:, -1], keys)
        fx = np.asarray(fc[1][:, 1:, 0])
        yt = z[n_tr:]
        mse = float(np.mean((fx.mean(0) - yt) ** 2))
        var = fx.var(0) + float(m.observation_scale()[0]) ** 2
        ll = float(np.mean(-0.5 * (yt - fx.mean(0)) ** 2 / var - 0.5 * np.log(2 * np.pi * var)))
        results[name] = (el, nf)
        plot_posterior_and_forecast(f"{a.out}/latent_sde_airline_{name}.png", np.asarray(ts), np.asarray(vals[:, 0]),
                                    np.asarray(ts), np.asarray(post[1][:, :, 0]), np.asarray(fc_ts),
                                    np.asarray(fc[1][:, :, 0]), t[n_tr:], yt)
        print(f"[{name}] train {train_s:.1f}s ({a.steps} steps), final ELBO {np.mean(el[-20:]):.2f}, "
              f"NFE/posterior solve {np.mean(nf[-20:]):.1f}, held-out forecast MSE {mse:.3f}, "
              f"held-out log-lik/pt {ll:.3f}")
    plot_training(f"{a.out}/latent_sde_airline_training.png", [r[0] for r in results.values()],
                  [r[1] for r in results.values()], labels=list(results))


if __name__ == "__main__":
    main()
