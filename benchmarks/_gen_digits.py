"""Digits family of the generalization suite: scikit-learn's 8x8 digits classified by a
neural ODE (linear encoder -> `ndes.NeuralODE.mlp` (Tsit5 + PID(rtol=1e-3, atol=1e-6), joint
batch) -> linear readout), trained with `ndes.fit` (Adam 1e-2, cosine decay, batch 128).
Digits is a development problem (the `ndes demo` job): records say `developed_on`.
"""

from __future__ import annotations

import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _gen_common import SuiteConfig, budget_fields, budget_for, regularizers

import ndes

PROBLEMS = ("digits",)


class Classifier(eqx.Module):
    encoder: eqx.nn.Linear
    ode: ndes.NeuralODE
    readout: eqx.nn.Linear

    def __init__(self, hidden, width, *, key):
        ke, kf, kr = jax.random.split(key, 3)
        self.encoder = eqx.nn.Linear(64, hidden, key=ke)
        self.ode = ndes.NeuralODE.mlp(
            hidden,
            width,
            1,
            key=kf,
            activation=jnp.tanh,
            solver=diffrax.Tsit5(),
            stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6),
        )
        self.readout = eqx.nn.Linear(hidden, 10, key=kr)

    def __call__(self, x, **kw):
        h0 = jax.vmap(self.encoder)(x)
        out = self.ode(jnp.array([0.0, 1.0], h0.dtype), h0, **kw)
        return jax.vmap(self.readout)(out.ys[:, -1]), out


def _loss_fn(model, batch, *, key, regularizers, train_step):
    x, y = batch
    logits, out = model(x, regularizers=regularizers, train_step=train_step)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.mean(ce), ndes.train.solution_aux(out)


def run(problem: str, method: str, seed: int, cfg: SuiteConfig, **_) -> list[dict]:
    xtr, ytr, xte, yte = ndes.data.load_digits(seed=seed)
    if cfg.quick:
        xtr, ytr = xtr[:64], ytr[:64]
    steps = cfg.steps or (6 if cfg.quick else 1000)
    hidden, width = (4, 8) if cfg.quick else (16, 32)
    model = Classifier(hidden, width, key=jax.random.key(seed + 1))
    regs = regularizers(method, jax.random.key(seed + 7))
    t = time.perf_counter()
    res = ndes.fit(
        model,
        (xtr, ytr),
        _loss_fn,
        optax.adam(optax.cosine_decay_schedule(1e-2, steps, alpha=0.05)),
        key=jax.random.key(seed),
        batch_size=min(128, len(ytr)),
        steps=steps,
        regularizers=regs,
        budget=budget_for(method, steps),
        progress=False,
    )
    train_time = time.perf_counter() - t
    logits, out = eqx.filter_jit(lambda m, x: m(x))(res.model, jnp.asarray(xte))
    acc = float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(yte)))
    return [
        {
            "family": "digits",
            "problem": problem,
            "model": "node",
            "missing": 0.0,
            "method": method,
            "seed": seed,
            "metric": "accuracy",
            "value": acc,
            "higher_is_better": True,
            "nfe_per_prediction": float(np.asarray(out.stats["num_fevals"])),
            "observations": 1.0,
            "train_s": train_time,
            "steps": steps,
            "developed_on": True,
            "note": "",
            **budget_fields(res),
        }
    ]
