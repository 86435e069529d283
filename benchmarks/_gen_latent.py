"""Latent-SDE family of the generalization suite: `ndes.LatentSDE` fitted with `ndes.fit` and
the settings of `examples/latent_sde_airline.py` (the problem it was developed on) to the
forecasting series aeon ships offline.

Problems (public aeon loaders, no download):

- `Airline` (`aeon.datasets.load_airline`, 144 monthly values; the development reference,
  `developed_on: True`);
- `Lynx` (`load_lynx`, 114 yearly trappings), `ShampooSales` (`load_shampoo_sales`, 36 monthly
  sales), `PBS` (`load_PBS_dataset`, 204 monthly counts, many 0), `Solar` (`load_solar`, 289
  half-hourly values, 0 at night), `Uschange` (`load_uschange`, 187 quarterly values of 5
  channels). aeon 1.6 deprecates `load_lynx`, `load_shampoo_sales` and `load_PBS_dataset`
  (removal announced for 1.7); their FutureWarning is silenced here.

Preprocessing, the same for every problem (that of the Airline example): log when every value is
> 0 (Airline, Lynx, ShampooSales; the others have zeros or negative values and are used as
they are); time `t = index / 12` (Airline's months -> years: the same step per observation for
every series, so that the model's `dt0 = 1/12` and the controller mean the same thing); the last
20 % held out; standardisation (per channel) with the statistics of the first 80 %; 30 % of the
training time points dropped (seed 0, endpoints kept), i.e. irregular sampling.

Model and training (the example's settings): `LatentSDE(D, latent 4, hidden 16, context 8,
width 32, dt0=1/12, obs_scale=0.2, solver=Heun, PIDController(rtol=atol=1e-2))` (adaptive steps
on a VirtualBrownianTree), Adam lr 1e-2, 4 posterior samples per step, KL weight annealed
linearly over the first half, 300 steps, one series (batch 1). Regularizers at the suite's
default weight (1.0; the Airline example uses ErrorEstimate at 0.1).

Metric: `elbo_per_point`, the ELBO of the held-out segment (posterior from the encoder run over
the held-out observations, KL weight 1, 16 samples, fixed key) divided by the number of observed
held-out values; `nfe_per_prediction`: the NFE of one posterior solve of that segment without
regularizers (mean over the samples); `observations`: held-out time points. Also recorded: the
example's forecast numbers (prior SDE run forward from the posterior at the last training time,
64 samples): `forecast_loglik_per_point`, `forecast_mse`; the held-out ELBO's parts per point
(`heldout_loglik_per_point`, `heldout_kl0_per_point`, `heldout_path_kl_per_point`); `train_elbo`
and `train_nfe` (means over the last 20 steps); `step_s` (seconds per train step after the first,
i.e. without compilation; `train_s` includes it).

Not applicable (a record with `value: None` and a note): `StiffnessEstimate` (needs an FSAL
Runge-Kutta ODE solver, not Heun on an SDE) and `KineticEnergy` (needs an ODETerm; ndes raises
`ValueError` for the latent SDE's MultiTerm). `ErrorEstimate`, `LocalErrorEstimate` and the
budget run. `LatentSDE.elbo` returns no `penalty_terms`, which `fit(budget=...)` needs; the
loss function therefore solves with a unit-weight copy of the (single) regularizer and applies
the weight itself (identical penalty, since it is linear in the weight).
"""

from __future__ import annotations

import time
import warnings

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _gen_common import SuiteConfig, budget_fields, budget_for, regularizers

import ndes

PROBLEMS = ("Airline", "Lynx", "ShampooSales", "PBS", "Solar", "Uschange")
DEVELOPED_ON = ("Airline",)
MISSING = 0.3
HOLDOUT = 0.2
DEFAULT_STEPS = 300
QUICK_STEPS = 10
QUICK_LENGTH = 40  # quick mode: the first this many points of a series

NOT_APPLICABLE = {
    "StiffnessEstimate": "needs an explicit FSAL Runge-Kutta ODE solver; the latent SDE is "
    "solved with Heun (an SDE solver)",
    "KineticEnergy": "integrates its penalty as an extra ODE state and needs an ODETerm; the "
    "latent SDE's terms are a MultiTerm (ndes raises ValueError)",
}

_LOADERS = {
    "Airline": "load_airline",
    "Lynx": "load_lynx",
    "ShampooSales": "load_shampoo_sales",
    "PBS": "load_PBS_dataset",
    "Solar": "load_solar",
    "Uschange": "load_uschange",
}


def load_series(problem: str) -> np.ndarray:
    """The raw series of `problem` as `(length, channels)` float64 (aeon's public loader)."""
    if problem not in _LOADERS:
        raise ValueError(f"unknown problem {problem!r}; choose from {PROBLEMS}.")
    import aeon.datasets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated loaders (aeon 1.6)
        y = np.asarray(getattr(aeon.datasets, _LOADERS[problem])(), dtype=np.float64)
    return y.T if y.ndim == 2 else y[:, None]  # load_uschange is (channels, length)


def prepare(problem: str, cfg: SuiteConfig) -> dict:
    """The Airline example's preprocessing applied to `problem` (see the module docstring)."""
    y = load_series(problem)
    notes = []
    stride = 1
    if cfg.quick:
        y = y[:QUICK_LENGTH]
        notes.append(f"quick: first {len(y)} points")
    elif cfg.max_length and len(y) > cfg.max_length:
        stride = int(np.ceil(len(y) / cfg.max_length))
        y = y[::stride]
        notes.append(f"subsampled by stride {stride} (max_length {cfg.max_length})")
    log = bool(np.all(y > 0))
    if log:
        y = np.log(y)
    n = len(y)
    t = np.arange(n) * stride / 12.0
    n_tr = int((1 - HOLDOUT) * n)
    mu, sd = y[:n_tr].mean(0), y[:n_tr].std(0)
    z = (y - mu) / np.where(sd > 0, sd, 1.0)
    rng = np.random.default_rng(0)
    dtype = jnp.result_type(float)  # float32, or float64 under jax_enable_x64
    inner = rng.choice(
        np.arange(1, n_tr - 1), int(round((1 - MISSING) * (n_tr - 2))), replace=False
    )
    keep = np.sort(np.concatenate([[0, n_tr - 1], inner]))
    return dict(
        ts=np.asarray(t[keep], dtype),
        values=np.asarray(z[keep], dtype),
        test_ts=np.asarray(t[n_tr:], dtype),
        test_values=np.asarray(z[n_tr:], dtype),
        forecast_ts=np.asarray(t[n_tr - 1 :], dtype),
        channels=y.shape[1],
        length=n,
        log=log,
        notes=notes,
    )


def build(channels: int, key, quick: bool = False) -> ndes.LatentSDE:
    """The Airline example's model (smaller under `quick`)."""
    sizes = dict(hidden_size=8, context_size=4, width=8) if quick else {}
    kw = dict(hidden_size=16, context_size=8, width=32) | sizes
    return ndes.LatentSDE(
        channels,
        4,
        key=key,
        dt0=1 / 12,
        obs_scale=0.2,
        solver=diffrax.Heun(),
        stepsize_controller=diffrax.PIDController(rtol=1e-2, atol=1e-2),
        **kw,
    )


def make_loss(steps: int, num_samples: int):
    """`loss_fn` for `ndes.fit`: −ELBO of the batch (one series: `batch_size=1`), KL weight
    annealed linearly over the first half of training (from the traced `train_step`, so no
    recompilation)."""

    def loss_fn(model, batch, *, key, regularizers, train_step):
        beta = jnp.minimum(1.0, (train_step + 1) / (0.5 * steps)).astype(jnp.float32)
        regs = tuple(regularizers)
        if len(regs) == 1:
            # `LatentSDE.elbo` reports the weighted `penalty` but no `penalty_terms` (the
            # unweighted value that `fit(budget=...)` needs to set its starting weight): solve
            # with a unit-weight copy and weight it here (the penalty is linear in the weight).
            (reg,) = regs
            weight = reg.resolve_weight(train_step)
            regs = (eqx.tree_at(lambda r: r.weight, reg, 1.0),)

        # one series per batch (`batch_size=1`): no vmap over the batch axis
        elbo, parts = model.elbo(
            batch["ts"][0],
            batch["values"][0],
            key,
            num_samples=num_samples,
            kl_weight=beta,
            regularizers=regs,
        )
        aux = {"num_fevals": parts["num_fevals"], "elbo": elbo, "path_kl": parts["path_kl"]}
        if len(regs) == 1:
            aux["penalty"] = weight * parts["penalty"]
            aux["penalty_terms"] = {regs[0].name: parts["penalty"]}
        elif regs:
            aux["penalty"] = parts["penalty"]
        return -elbo, aux

    return loss_fn


@eqx.filter_jit
def heldout_elbo(model, ts, values, key, num_samples):
    elbo, parts = model.elbo(ts, values, key, num_samples=num_samples)
    return elbo, parts


@eqx.filter_jit
def forecast(model, ts, values, fc_ts, key, num_samples):
    keys = jr.split(key, num_samples)
    post = jax.vmap(lambda k: model.sample_posterior(ts, values, k))(keys)
    fc = jax.vmap(lambda z0, k: model.sample_prior(fc_ts, k, z0=z0))(post[0][:, -1], keys)
    return fc[1][:, 1:]


def run(problem: str, method: str, seed: int, cfg: SuiteConfig) -> list[dict]:
    """One training run of `ndes.LatentSDE` on `problem` with `method`; one record."""
    d = prepare(problem, cfg)
    steps = cfg.steps or (QUICK_STEPS if cfg.quick else DEFAULT_STEPS)
    record = dict(
        family="latent_sde",
        problem=problem,
        model="LatentSDE",
        missing=MISSING,
        method=method,
        seed=seed,
        metric="elbo_per_point",
        higher_is_better=True,
        developed_on=problem in DEVELOPED_ON,
        steps=steps,
        channels=int(d["channels"]),
        series_length=int(d["length"]),
        train_observations=int(len(d["ts"])),
        observations=int(len(d["test_ts"])),
        log_transform=d["log"],
        solver="Heun + PIDController(rtol=1e-2, atol=1e-2), VirtualBrownianTree",
    )
    if method in NOT_APPLICABLE:
        return [
            record
            | dict(
                value=None,
                nfe_per_prediction=None,
                train_s=None,
                steps=0,
                note=f"not applicable: {NOT_APPLICABLE[method]}",
            )
        ]
    regs = regularizers(method, jr.key(seed + 7), solver_has_fsal=False)
    model = build(d["channels"], jr.key(seed), cfg.quick)
    num_samples = 1 if cfg.quick else 4
    data = {"ts": d["ts"][None], "values": d["values"][None]}
    t0 = time.perf_counter()
    res = ndes.fit(
        model,
        data,
        make_loss(steps, num_samples),
        optax.adam(1e-2),
        key=jr.key(seed),
        batch_size=1,
        steps=steps,
        regularizers=regs,
        budget=budget_for(method, steps),
        progress=False,
    )
    train_s = time.perf_counter() - t0
    m = res.model
    tail = res.history[-min(20, len(res.history)) :]
    eval_samples = 4 if cfg.quick else 16
    elbo, parts = heldout_elbo(
        m,
        jnp.asarray(d["test_ts"]),
        jnp.asarray(d["test_values"]),
        jr.key(123),
        eval_samples,
    )
    n_points = int(np.isfinite(d["test_values"]).sum())
    notes = list(d["notes"])
    if not d["log"]:
        notes.append("no log transform (series has values <= 0)")
    fc = dict(forecast_loglik_per_point=None, forecast_mse=None)
    if cfg.quick:
        notes.append("quick: no forecast (saves its compilation)")
    else:
        fx = np.asarray(
            forecast(
                m,
                jnp.asarray(d["ts"]),
                jnp.asarray(d["values"]),
                jnp.asarray(d["forecast_ts"]),
                jr.key(123),
                64,
            )
        )
        yt = d["test_values"]
        var = fx.var(0) + np.asarray(m.observation_scale()) ** 2
        ll = -0.5 * (yt - fx.mean(0)) ** 2 / var - 0.5 * np.log(2 * np.pi * var)
        fc = dict(
            forecast_loglik_per_point=float(np.mean(ll)),
            forecast_mse=float(np.mean((fx.mean(0) - yt) ** 2)),
        )
    wall = [r["wall_time"] for r in res.history]
    record |= dict(
        value=float(elbo) / n_points,
        heldout_loglik_per_point=float(parts["loglik"]) / n_points,
        heldout_kl0_per_point=float(parts["kl0"]) / n_points,
        heldout_path_kl_per_point=float(parts["path_kl"]) / n_points,
        nfe_per_prediction=float(parts["num_fevals"]),
        train_s=train_s,
        train_elbo=float(np.mean([r["elbo"] for r in tail])),
        train_nfe=float(np.mean([r["num_fevals"] for r in tail])),
        step_s=(wall[-1] - wall[0]) / (len(wall) - 1) if len(wall) > 1 else None,
        **fc,
        note="; ".join(notes),
    )
    record |= budget_fields(res)
    return [record]
