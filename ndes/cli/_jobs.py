"""`ndes train`'s job builders: a validated `TrainConfig` -> what `ndes.fit` needs.

Two registries, keyed like the schema's discriminated unions:

- `DATA_BUILDERS[data.name](spec, seed, key) -> Task`: loads or generates the train and
  test data, and says what kind of task they are (`spec.task`);
- `MODEL_BUILDERS[model.type](spec, task, key) -> (model, loss_fn, description)`: builds the
  model for that task (the schema has already checked that `model.type` accepts it).

Adding a data set or a model is one schema class (`_schema.py`) and one builder here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax

import ndes
from ndes import data as nd
from ndes.models import (
    CNF,
    CDEClassifier,
    NeuralCDE,
    NeuralGSDE,
    NeuralLNSDE,
    NeuralLSDE,
    NeuralODE,
    ODEClassifier,
    StableSDEClassifier,
)
from ndes.train import BudgetWeight, classification_loss, cnf_nll_loss, solution_aux

from ._config import ConfigError, TrainConfig
from ._jobs_diffusion import diffusion_figures, diffusion_model
from ._schema import OptimizerSpec

__all__ = ["Job", "Task", "build_job", "build_regularizer", "DATA_BUILDERS", "MODEL_BUILDERS"]


@dataclasses.dataclass(frozen=True)
class Task:
    """The data of a job. `size`: the input size (`vectors`), the state size
    (`trajectories`), the path channels (`series`) or the data dimension (`density`); `ts`:
    the time grid of `trajectories`; `units`: the NLL's units of `density` ("nats" or
    "bits/dim"); `extra`: what plots need (e.g. the digits' pixel map)."""

    kind: str
    train: Any
    test: Any
    size: int
    description: str
    num_classes: int | None = None
    ts: Any = None
    units: str | None = None
    extra: Any = None


@dataclasses.dataclass(frozen=True)
class Job:
    """What `ndes.fit` needs, built from a `TrainConfig`."""

    model: Any
    data: Any
    eval_data: Any
    loss_fn: Callable
    optimizer: optax.GradientTransformation
    regularizers: tuple
    description: str
    figures: Callable | None = None  # (trained model, run_dir) -> [paths]: the job's own plots


@dataclasses.dataclass(frozen=True, eq=False)
class TrajectoryLoss:
    """Mean squared error of a `NeuralODE`'s states at `ts` against the batch's `ys`; the
    batch is `(y0 (B, n), ys (B, T, n))`."""

    ts: Any

    def __call__(self, model, batch, *, key, regularizers, train_step):
        del key
        y0, ys = batch
        out = model(self.ts, y0, regularizers=regularizers, train_step=train_step)
        return jnp.mean((out.ys - ys) ** 2), solution_aux(out)


# ---- data -------------------------------------------------------------------------------------


def _digits(d, seed: int, key) -> Task:
    del key
    xtr, ytr, xte, yte = nd.load_digits(test_fraction=d.test_fraction, seed=seed)
    return Task(
        "vectors",
        (xtr, ytr.astype(np.int32)),
        (xte, yte.astype(np.int32)),
        size=xtr.shape[1],
        num_classes=10,
        description=f"digits ({len(xtr)} train / {len(xte)} test)",
    )


def _trajectories(d, seed: int, key) -> Task:
    del seed
    dtype = jnp.result_type(float)  # float32, or float64 under jax_enable_x64
    ts = jnp.linspace(0.0, d.t1, d.num_times, dtype=dtype)
    k_tr, k_te = jax.random.split(key)
    if d.name == "spirals":
        (_, ys_tr), (_, ys_te) = nd.spirals(k_tr, d.num_train, ts), nd.spirals(k_te, d.num_test, ts)
    else:
        ou = dict(theta=d.theta, mu=d.mu, sigma=d.sigma)
        ys_tr = nd.ornstein_uhlenbeck(k_tr, d.num_train, ts, **ou)[..., None]
        ys_te = nd.ornstein_uhlenbeck(k_te, d.num_test, ts, **ou)[..., None]
    ys_tr, ys_te = np.asarray(ys_tr, dtype), np.asarray(ys_te, dtype)
    return Task(
        "trajectories",
        (ys_tr[:, 0], ys_tr),
        (ys_te[:, 0], ys_te),
        size=ys_tr.shape[-1],
        ts=ts,
        description=(
            f"{d.name} regression ({d.num_train} train / {d.num_test} test trajectories, "
            f"{d.num_times} times on [0, {d.t1}])"
        ),
    )


def _uea(d, seed: int, key) -> Task:
    del key
    ds = nd.load_uea(d.dataset, missing=d.missing, seed=seed, max_length=d.max_length)
    train, test = nd.prepare_cde(ds.train), nd.prepare_cde(ds.test)
    return Task(
        "series",
        train,
        test,
        size=train.channels,
        num_classes=ds.num_classes,
        description=(
            f"UEA {d.dataset} ({len(train.times)} train / {len(test.times)} test, "
            f"{ds.num_classes} classes, missing {d.missing:.0%}"
            + (f", one point in {ds.stride}" if ds.stride > 1 else "")
            + ")"
        ),
    )


def _toy_2d(d, seed: int, key) -> Task:
    del seed
    k_tr, k_te = jax.random.split(key)
    xtr = np.asarray(nd.toy_2d(d.shape, d.num_train, key=k_tr))
    xte = np.asarray(nd.toy_2d(d.shape, d.num_test, key=k_te))
    return Task(
        "density", xtr, xte, size=2, units="nats",
        description=f"2-D toy {d.shape} density ({d.num_train} train / {d.num_test} test)",
    )  # fmt: skip


def _digits_density(d, seed: int, key) -> Task:
    del key
    dd = nd.load_digits_density(test_fraction=d.test_fraction, seed=seed, alpha=d.alpha)
    return Task(
        "density",
        (dd.x_train, dd.logdet_train.astype(dd.x_train.dtype)),
        (dd.x_test, dd.logdet_test.astype(dd.x_test.dtype)),
        size=dd.x_train.shape[1],
        units="bits/dim",
        extra=dd,
        description=(
            f"digits density, 64-d, bits/dim ({len(dd.x_train)} train / {len(dd.x_test)} "
            "test; dequantized, logit, train-standardised)"
        ),
    )


DATA_BUILDERS: dict[str, Callable[..., Task]] = {
    "digits": _digits,
    "spirals": _trajectories,
    "ornstein_uhlenbeck": _trajectories,
    "uea": _uea,
    "toy_2d": _toy_2d,
    "digits_density": _digits_density,
}

# ---- models -----------------------------------------------------------------------------------

_ACTIVATIONS = {
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
}


def _solver_options(m) -> dict[str, Any]:
    """`NeuralODE` / `NeuralCDE` solver keywords: a constant step `dt0`, else a PID
    controller at `rtol`/`atol`."""
    if m.dt0 is not None:
        ctrl = diffrax.ConstantStepSize()
    else:
        ctrl = diffrax.PIDController(rtol=m.rtol, atol=m.atol)
    return dict(
        solver=getattr(diffrax, m.solver)(),
        stepsize_controller=ctrl,
        dt0=m.dt0,
        max_steps=m.max_steps,
        batch_mode=m.batch_mode,
    )


def _neural_ode(m, task: Task, key):
    act, solver = _ACTIVATIONS[m.activation], _solver_options(m)
    if task.kind == "vectors":
        hidden = m.hidden or 16
        model = ODEClassifier(
            task.size, task.num_classes, hidden, m.width, m.depth, key=key, activation=act, **solver
        )
        desc = (
            f"neural-ODE classifier {task.size}-{hidden}-{task.num_classes} (field width "
            f"{m.width}, depth {m.depth})"
        )
        return model, classification_loss, desc
    n = task.size
    model = NeuralODE.mlp(n, m.width, m.depth, key=key, activation=act, **solver)
    return model, TrajectoryLoss(task.ts), f"neural ODE {n}-{m.width}x{m.depth}-{n}"


def _neural_cde(m, task: Task, key):
    # The solver options carry model.dt0 (in normalised time) when one is given.
    cde = NeuralCDE(
        task.size,
        m.hidden,
        task.num_classes,
        m.width,
        m.depth,
        key=key,
        activation=_ACTIVATIONS[m.activation],
        **_solver_options(m),
    )
    desc = f"neural CDE hidden {m.hidden} (field width {m.width}, depth {m.depth})"
    return CDEClassifier(cde), classification_loss, desc


_STABLE_SDES = {"lsde": NeuralLSDE, "lnsde": NeuralLNSDE, "gsde": NeuralGSDE}


def _stable_sde(m, task: Task, key):
    fixed = m.solver == "Euler"
    sde = _STABLE_SDES[m.kind](
        m.hidden,
        m.width,
        m.depth,
        key=key,
        input_channels=task.size,
        out_size=task.num_classes,
        solver=getattr(diffrax, m.solver)(),
        # Euler: the paper's Ito solver; Heun and ShARK converge to Stratonovich (for the
        # additive-noise LSDE the two coincide).
        sde_type="ito" if fixed else "stratonovich",
        stepsize_controller=(
            diffrax.ConstantStepSize() if fixed else diffrax.PIDController(rtol=m.rtol, atol=m.atol)
        ),
        num_steps=m.num_steps,
        max_steps=m.max_steps,
        batch_mode=m.batch_mode,
        time_span=m.time_span or None,
    )
    desc = (
        f"stable neural SDE ({m.kind}) hidden {m.hidden} (drift width {m.width}, depth "
        f"{m.depth}), {m.solver}, "
        + (f"clock [0, {m.time_span:g}]" if m.time_span else "the data's clock")
    )
    return StableSDEClassifier(sde), classification_loss, desc


def _cnf(m, task: Task, key):
    model = CNF.mlp(
        task.size, m.width, m.depth, key=key, activation=_ACTIVATIONS[m.activation],
        t1=m.t1, divergence=m.divergence, probe=m.probe, **_solver_options(m),
    )  # fmt: skip
    loss = functools.partial(cnf_nll_loss, units=task.units or "nats")
    desc = (
        f"CNF (FFJORD) {task.size}-{m.width}x{m.depth}-{task.size} {m.activation}, "
        f"{m.divergence} divergence, NLL in {task.units}"
    )
    return model, loss, desc


MODEL_BUILDERS: dict[str, Callable[..., tuple[Any, Callable, str]]] = {
    "neural_ode": _neural_ode,
    "neural_cde": _neural_cde,
    "stable_sde": _stable_sde,
    "cnf": _cnf,
    "diffusion": diffusion_model,
}

# ---- regularizers, optimiser, the job ----------------------------------------------------------


def build_regularizer(spec, index: int):
    """The `ndes` regularizer of `regularizers[index]`: a fixed weight, or a `BudgetWeight`
    for `target` / `target_nfe`. A regularizer that samples gets `jax.random.key(index)`,
    which `ndes.fit` folds with the step (a fresh draw every step)."""
    cls = getattr(ndes, spec.type)
    weight: Any = spec.weight
    try:
        if spec.target_nfe is not None or spec.target is not None:
            weight = BudgetWeight(
                target=spec.target,
                target_nfe=spec.target_nfe,
                lr=spec.budget_lr,
                warmup=spec.budget_warmup,
                init=spec.weight or None,
            )
        options = spec.options()
        if spec.needs_key:
            options["key"] = jax.random.key(index)
        return cls(weight=weight, **options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config key 'regularizers[{index}]' ({spec.type}): {e}") from None


def _optimizer(o: OptimizerSpec, steps: int) -> optax.GradientTransformation:
    lr: Any = o.lr
    if o.schedule == "cosine":
        lr = optax.cosine_decay_schedule(o.lr, steps, alpha=0.05)
    if o.type == "adam":
        opt = optax.adam(lr)
    elif o.type == "adamw":
        opt = optax.adamw(lr, weight_decay=o.weight_decay)
    else:
        opt = optax.sgd(lr, momentum=o.momentum or None)
    if o.clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(o.clip_norm), opt)
    return opt


def build_job(cfg: TrainConfig) -> Job:
    """Load the data and build the model, loss, optimiser and regularizers of `cfg`."""
    regs = tuple(build_regularizer(r, i) for i, r in enumerate(cfg.regularizers))
    k_data, k_model = jax.random.split(jax.random.key(cfg.seed))
    task = DATA_BUILDERS[cfg.data.name](cfg.data, cfg.seed, k_data)
    model, loss, desc = MODEL_BUILDERS[cfg.model.type](cfg.model, task, k_model)
    _check_batch_size(cfg, task.train)
    opt = _optimizer(cfg.optimizer, cfg.steps)
    density = task.kind == "density"
    figures = None
    if density:
        draw = diffusion_figures if cfg.model.type == "diffusion" else _density_figures
        figures = functools.partial(draw, task, cfg.seed, cfg.model)
    return Job(
        model, task.train, task.test, loss, opt, regs, f"{task.description}, {desc}", figures
    )


def _density_figures(task: Task, seed: int, spec, model, run_dir) -> list:
    """A CNF job's plots: density heat map beside data and samples (2-D), or a grid of
    sampled digits (`ndes.plot`)."""
    del spec
    from pathlib import Path

    from ndes.plot import plot_density_2d, plot_digit_samples

    key = jax.random.key(seed + 1)
    if task.size == 2:
        out = plot_density_2d(model, task.test, Path(run_dir) / "density.png", key=key)
    else:
        to_pixels = task.extra.to_pixels
        out = plot_digit_samples(model, Path(run_dir) / "samples.png", key=key, to_pixels=to_pixels)
    return [out]


def _check_batch_size(cfg: TrainConfig, data) -> None:
    """What `ndes.fit` would refuse with a traceback, as a `ConfigError` naming the key: a
    batch larger than the training set, or one that does not split over the devices."""
    n = len(jax.tree_util.tree_leaves(data)[0])
    bs = cfg.batch_size
    if bs > n:
        more = " (or raise data.num_train)" if "num_train" in type(cfg.data).model_fields else ""
        raise ConfigError(
            f"config key 'batch_size' = {bs} is larger than the {n} training examples of "
            f"data.name = {cfg.data.name!r}; use batch_size <= {n}{more}."
        )
    k = jax.device_count()
    if bs % k:
        lo = (bs // k) * k
        raise ConfigError(
            f"config key 'batch_size' = {bs} is not divisible by the {k} devices (every device "
            f"gets the same number of examples); use a multiple of {k}, e.g. {lo or k}."
        )
