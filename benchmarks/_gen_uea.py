"""UEA/UCR classification family of the generalization suite: every classification set
aeon ships offline, `ndes.NeuralCDE` and the stable SDEs `ndes.NeuralLSDE` (and, with
`--models lnsde gsde` and a fixed-step `--lsde-solver`, `NeuralLNSDE`, `NeuralGSDE`), with the
library's default pipeline, and aeon's MiniRocket as the baseline.

Pipeline (what `examples/uea_classification.py` and a new user do): `ndes.data.load_uea`
(seeded missingness, train-only standardisation) -> `ndes.data.cde_features` (scaled time,
forward-filled values, scaled observation counts) -> backward-Hermite cubic coefficients ->
model -> `ndes.fit` (Adam, lr 1e-2 with warm-up and cosine decay, batch 32). NCDE: Tsit5 +
`PIDController(rtol=1e-3, atol=1e-6)` (`--ncde-solver tsit5`, the suite's default: adaptive,
so that the regularizers can cut its cost; the model's default until 2026-12-02) or a fixed
step per observation interval (`--ncde-solver bosh3` is `NeuralCDE`'s default now), hidden
32, MLP width 64, depth 2. LSDE: ShARK + PID(rtol=1e-3, atol=1e-5) on a
`VirtualBrownianTree` (additive noise; `--lsde-solver shark`, the suite's default) or
Euler/Heun with one fixed step per observation interval on the Brownian grid
(`--lsde-solver euler|heun`), the same path as drift input. The stable SDEs run on the
models' default clock (`time_span=10` since 2026-12-03; `--lsde-time-span T`, 0 for the
data's own time) and their records say which (`+span10`, `+rawtime`); records without
either label predate it and ran in the data's time.

`max_length`: a series longer than this is subsampled by a constant stride
(`ndes.data.load_uea(max_length=...)`, so that a CPU run fits its time budget); such records
say so in `note`.

`logsig_depth` (`--ncde-logsig-depth 1|2`): the NCDE by the log-ODE method instead, the full
series in windows of that same stride (`ndes.data.logsig_windows`, a linear path, one step
per window: the cost of the subsampled row); records say `+logsig1`/`+logsig2`.
"""

from __future__ import annotations

import dataclasses
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _gen_common import SuiteConfig, budget_fields, budget_for, regularizers

import ndes
from ndes.data import (
    cde_features,
    hermite_coefficients,
    linear_coefficients,
    load_uea,
    logsig_windows,
)

PROBLEMS = tuple(ndes.data.available_uea())  # every classification set aeon ships
DEVELOPED_ON = ("JapaneseVowels",)
MODELS = ("ncde", "lsde", "lnsde", "gsde")
STABLE = {"lsde": ndes.NeuralLSDE, "lnsde": ndes.NeuralLNSDE, "gsde": ndes.NeuralGSDE}


def _prepare(split, logsig_depth=0, stride=1):
    feats = cde_features(split.times, split.values)
    if logsig_depth:  # the log-ODE method: a linear path through windowed log-signatures
        times, path, lengths = logsig_windows(
            split.times, feats, stride=stride, depth=logsig_depth, lengths=split.lengths
        )
        ts, coeffs = linear_coefficients(times, path)
    else:
        times, lengths = split.times, split.lengths
        ts = jnp.asarray(times)
        coeffs = hermite_coefficients(ts, jnp.asarray(feats))
    t1 = jnp.asarray(times[np.arange(len(lengths)), lengths - 1])
    return {"ts": ts, "coeffs": coeffs, "t1": t1, "label": jnp.asarray(split.labels)}


FIXED_SOLVERS = {
    "midpoint": diffrax.Midpoint,
    "heun": diffrax.Heun,
    "ralston": diffrax.Ralston,
    "bosh3": diffrax.Bosh3,
}


def _build(
    kind, channels, num_classes, key, solver="tsit5", length=2, substeps=1, time_span=None,
    interpolation=diffrax.CubicInterpolation,
):  # fmt: skip
    if kind == "ncde":
        if solver == "tsit5":  # adaptive: the regularizer and budget rows need it
            settings = dict(
                solver=diffrax.Tsit5(),
                stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6),
            )
        else:  # `substeps` steps per observation interval of the padded grid (normalised time);
            # one step is the model's own rule for a constant step without dt0.
            settings = dict(
                solver=FIXED_SOLVERS[solver](),
                stepsize_controller=diffrax.ConstantStepSize(),
                dt0=None if substeps == 1 else 1.0 / (substeps * (length - 1)),
            )
        return ndes.NeuralCDE(
            channels, 32, num_classes, 64, 2, key=key, interpolation=interpolation, **settings
        )
    if solver == "shark":  # adaptive, on a VirtualBrownianTree
        settings = dict(
            solver=diffrax.ShARK(),
            sde_type="stratonovich",
            stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-5),
        )
    else:  # the model's own rule: one fixed step per interval of `ts`, on the Brownian grid
        settings = dict(
            solver=diffrax.Euler() if solver == "euler" else diffrax.Heun(),
            sde_type="ito" if solver == "euler" else "stratonovich",
            stepsize_controller=diffrax.ConstantStepSize(),
        )
    if time_span is not None:  # else the model's default clock
        settings["time_span"] = time_span or None
    return STABLE[kind](
        32, 64, 2, key=key, input_channels=channels, out_size=num_classes, **settings
    )


def _forward(model, b, key, **kw):
    if isinstance(model, ndes.NeuralCDE):
        return model(b["ts"], b["coeffs"], t1=b["t1"], **kw)
    ts = b["ts"][0]
    control = jax.vmap(lambda c: diffrax.CubicInterpolation(ts, c))(b["coeffs"])
    return model(ts, control, key=key, **kw)


def _loss_fn(model, b, *, key, regularizers, train_step):
    out = _forward(model, b, key, regularizers=regularizers, train_step=train_step)
    logp = jax.nn.log_softmax(out.ys)
    ce = -jnp.mean(jnp.take_along_axis(logp, b["label"][:, None], axis=1))
    return ce, ndes.train.solution_aux(out)


def _load(problem, missing, seed, cfg, full=False):
    """The splits, and the stride `max_length` asks for (applied here unless `full`: the
    log-ODE path windows the full series by it instead)."""
    max_length = 16 if cfg.quick else (cfg.max_length or None)
    data = load_uea(problem, missing=missing, seed=seed, max_length=None if full else max_length)
    train, test, stride = data.train, data.test, data.stride
    if full and max_length is not None:  # the stride load_uea would subsample by (its rule)
        stride = load_uea(problem, missing=missing, seed=seed, max_length=max_length).stride
    if cfg.quick:
        fields = ("times", "values", "lengths", "labels")
        train = dataclasses.replace(train, **{f: getattr(train, f)[:8] for f in fields})
        test = dataclasses.replace(test, **{f: getattr(test, f)[:8] for f in fields})
    return data, train, test, stride


def run(
    problem: str,
    method: str,
    seed: int,
    cfg: SuiteConfig,
    model_kind: str = "ncde",
    missing: float = 0.0,
) -> list[dict]:
    """One training run of `model_kind` on `problem` with `method`; one record."""
    logsig = cfg.logsig_depth if model_kind == "ncde" else 0
    data, train_s, test_s, stride = _load(problem, missing, seed, cfg, full=bool(logsig))
    train, test = _prepare(train_s, logsig, stride), _prepare(test_s, logsig, stride)
    steps = cfg.steps or (3 if cfg.quick else 300)
    channels = train["coeffs"][0].shape[-1]
    solver = cfg.ncde_solver if model_kind == "ncde" else cfg.lsde_solver
    if model_kind in ("lnsde", "gsde") and solver == "shark":
        return []  # ShARK needs additive noise: these two run with --lsde-solver euler|heun
    length = int(train["ts"].shape[1])
    model = _build(
        model_kind, channels, data.num_classes, jax.random.key(seed), solver, length,
        cfg.ncde_substeps, cfg.lsde_time_span,
        diffrax.LinearInterpolation if logsig else diffrax.CubicInterpolation,
    )  # fmt: skip
    key = jax.random.key(seed + 7)
    regs = regularizers(method, key, solver_has_fsal=model_kind == "ncde")
    if method != "vanilla" and not regs:
        return []
    batch = min(32, len(train["label"]))
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, max(1, min(50, steps // 10)), steps)
    wd = cfg.weight_decay
    opt = optax.adamw(schedule, weight_decay=wd) if wd else optax.adam(schedule)
    t = time.perf_counter()
    res = ndes.fit(
        model,
        train,
        _loss_fn,
        opt,
        key=jax.random.key(seed + 1000),
        batch_size=batch,
        steps=steps,
        regularizers=regs,
        budget=budget_for(method, steps),
        progress=False,
    )
    train_time = time.perf_counter() - t

    @eqx.filter_jit
    def predict(m, b):
        out = _forward(m, b, jax.random.key(seed + 2000))
        return jnp.argmax(out.ys, -1), out.stats["num_fevals"]

    pred, nfe = predict(res.model, test)
    acc = float(jnp.mean(pred == test["label"]))
    points = data.train.times.shape[1]
    note = f"subsampled by stride {stride} (to {points} points)" if stride > 1 else ""
    if logsig:
        windows = int(train["ts"].shape[1]) - 1
        note = f"log-ODE: depth-{logsig} log-signatures, {windows} windows of {stride} intervals"
    adaptive = solver in ("tsit5", "shark")
    span = None if model_kind == "ncde" else model.time_span  # the model knows its clock
    clock = "" if model_kind == "ncde" else f"+span{span:g}" if span else "+rawtime"
    substeps = cfg.ncde_substeps if model_kind == "ncde" else 1
    if not adaptive:
        per = f"{substeps} steps" if substeps > 1 else "one step"
        note = f"{solver}, {per} per observation interval; {note}".rstrip("; ")
    return [
        {
            "family": "uea",
            "problem": problem,
            "model": (
                model_kind
                if adaptive
                else f"{model_kind}-{solver}" + (f"x{substeps}" if substeps > 1 else "")
            )
            + (f"+wd{wd:g}" if wd else "")
            + clock
            + (f"+logsig{logsig}" if logsig else ""),
            "missing": missing,
            "method": method,
            "seed": seed,
            "metric": "accuracy",
            "value": acc,
            "higher_is_better": True,
            "nfe_per_prediction": float(np.mean(np.asarray(nfe))),
            "observations": float(np.mean(test_s.lengths)),
            "train_s": train_time,
            "steps": steps,
            "developed_on": problem in DEVELOPED_ON,
            "note": note,
            **budget_fields(res),
        }
    ]


def baseline(problem: str, missing: float, seed: int, cfg: SuiteConfig) -> dict:
    """aeon's MiniRocket on the same (missing-dropped, standardised, forward-filled) data."""
    from aeon.classification.convolution_based import MiniRocketClassifier

    _, train_s, test_s, stride = _load(problem, missing, seed, cfg)

    def x(split):
        f = cde_features(split.times, split.values)
        C = split.values.shape[-1]
        return np.transpose(f[..., 1 : 1 + C], (0, 2, 1))  # (N, C, L), forward-filled

    t = time.perf_counter()
    clf = MiniRocketClassifier(random_state=seed, n_jobs=1)
    clf.fit(x(train_s), train_s.labels)
    acc = float(np.mean(clf.predict(x(test_s)) == test_s.labels))
    return {
        "family": "uea",
        "problem": problem,
        "model": "MiniRocket",
        "missing": missing,
        "method": "baseline",
        "seed": seed,
        "metric": "accuracy",
        "value": acc,
        "higher_is_better": True,
        "nfe_per_prediction": float("nan"),
        "observations": float(np.mean(test_s.lengths)),
        "train_s": time.perf_counter() - t,
        "steps": 0,
        "developed_on": problem in DEVELOPED_ON,
        "note": f"subsampled by stride {stride}" if stride > 1 else "",
    }
