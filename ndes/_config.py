"""`ndes train CONFIG.toml`: parse and validate a TOML training configuration, and build the
model, data, loss and optimiser it describes for `ndes.fit`.

Every key is checked: an unknown key or a bad value raises `ConfigError` naming the key
(`"config key 'model.widht' is unknown; known keys: ..."`). See docs/training.md for the
reference of every key.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "TrainConfig", "load_config", "parse_config", "build_job", "Job"]


class ConfigError(ValueError):
    """A configuration error; the message names the offending key."""


# ---- value checks ------------------------------------------------------------------------


def _describe(v: Any) -> str:
    return f"{v!r} ({type(v).__name__})"


def _int(minimum: int = 1) -> Callable[[str, Any], Any]:
    def check(key, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise ConfigError(f"config key '{key}' must be {what}; got {_describe(v)}.")
        return v

    return check


def _float(*, positive: bool = False, nonneg: bool = False, below_one: bool = False):
    def check(key, v):
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
        if ok and positive:
            ok = v > 0
        if ok and nonneg:
            ok = v >= 0
        if ok and below_one:
            ok = v < 1
        if not ok:
            what = (
                "a positive number"
                if positive
                else "a non-negative number"
                if nonneg
                else ("a number")
            )
            if below_one:
                what += " below 1"
            raise ConfigError(f"config key '{key}' must be {what}; got {_describe(v)}.")
        return float(v)

    return check


def _choice(*choices: str):
    def check(key, v):
        if not isinstance(v, str) or v not in choices:
            raise ConfigError(
                f"config key '{key}' must be one of {', '.join(map(repr, choices))}; got "
                f"{_describe(v)}."
            )
        return v

    return check


def _uea_name(key, v):
    """A classification set aeon ships (asked of aeon, as `ndes.data.load_uea` does)."""
    from .data import available_uea

    names = available_uea()
    if not isinstance(v, str) or v not in names:
        raise ConfigError(
            f"config key '{key}' must be a classification set aeon ships: "
            f"{', '.join(map(repr, names))}; got {_describe(v)}."
        )
    return v


def _str(key, v):
    if not isinstance(v, str) or not v:
        raise ConfigError(f"config key '{key}' must be a non-empty string; got {_describe(v)}.")
    return v


_REQUIRED = object()

# Section schemas: key -> (check, default). `_REQUIRED` marks keys without a default.
_TOP: dict[str, tuple] = {
    "seed": (_int(0), 0),
    "steps": (_int(), _REQUIRED),
    "batch_size": (_int(), 64),
    "eval_every": (_int(), None),
    "eval_batch_size": (_int(), None),
    "log_every": (_int(), 1),
    "checkpoint_every": (_int(), None),
    "keep_last": (_int(), 3),
    "nfe_budget": (_float(positive=True), None),
    "budget_lr": (_float(positive=True), 0.1),
    "run_dir": (_str, None),
}
_SECTIONS = ("data", "model", "optimizer", "regularizers")

DATA_NAMES = ("digits", "spirals", "ornstein_uhlenbeck", "uea")
_DATA: dict[str, dict[str, tuple]] = {
    "digits": {"test_fraction": (_float(positive=True, below_one=True), 0.25)},
    "spirals": {
        "num_train": (_int(), 256),
        "num_test": (_int(), 64),
        "num_times": (_int(2), 16),
        "t1": (_float(positive=True), 4.0),
    },
    "ornstein_uhlenbeck": {
        "num_train": (_int(), 256),
        "num_test": (_int(), 64),
        "num_times": (_int(2), 16),
        "t1": (_float(positive=True), 2.0),
        "theta": (_float(positive=True), 1.0),
        "mu": (_float(), 1.0),
        "sigma": (_float(positive=True), 0.2),
    },
    "uea": {
        "dataset": (_uea_name, "JapaneseVowels"),
        "missing": (_float(nonneg=True, below_one=True), 0.0),
    },
}

SOLVERS = ("Tsit5", "Dopri5", "Dopri8", "Bosh3", "Heun", "Midpoint", "Ralston", "Euler")
ACTIVATIONS = ("tanh", "softplus", "relu", "gelu", "silu")
MODEL_TYPES = ("neural_ode", "neural_cde", "stable_sde")
SDE_SOLVERS = ("ShARK", "Heun", "Euler")
STABLE_KINDS = ("lsde", "lnsde", "gsde")
_MODEL_COMMON: dict[str, tuple] = {
    "width": (_int(), 32),
    "depth": (_int(0), 1),
    "activation": (_choice(*ACTIVATIONS), "softplus"),
    "solver": (_choice(*SOLVERS), "Tsit5"),
    "rtol": (_float(positive=True), 1e-3),
    "atol": (_float(positive=True), 1e-6),
    "dt0": (_float(positive=True), None),
    "max_steps": (_int(), 4096),
    "batch_mode": (_choice("joint", "vmap"), "joint"),
}
_MODEL: dict[str, dict[str, tuple]] = {
    "neural_ode": {**_MODEL_COMMON, "hidden": (_int(), None)},
    "neural_cde": {**_MODEL_COMMON, "hidden": (_int(), 32)},
    # Oh, Lee, Park 2024: ReLU drift MLP (no activation key); adaptive by default, with
    # ShARK for the additive-noise Langevin-type model (docs/sde.md).
    "stable_sde": {
        "kind": (_choice(*STABLE_KINDS), "lsde"),
        "hidden": (_int(), 32),
        "width": (_int(), 64),
        "depth": (_int(0), 2),
        "solver": (_choice(*SDE_SOLVERS), "ShARK"),
        "rtol": (_float(positive=True), 1e-2),
        "atol": (_float(positive=True), 1e-4),
        "num_steps": (_int(), None),
        "max_steps": (_int(), 4096),
        "batch_mode": (_choice("joint", "vmap"), "joint"),
    },
}
# Which data each model supports.
_SUPPORTED = {
    "neural_ode": ("digits", "spirals", "ornstein_uhlenbeck"),
    "neural_cde": ("uea",),
    "stable_sde": ("uea",),
}

OPTIMIZERS = ("adam", "adamw", "sgd")
_OPTIMIZER: dict[str, tuple] = {
    "type": (_choice(*OPTIMIZERS), "adam"),
    "lr": (_float(positive=True), 1e-3),
    "weight_decay": (_float(nonneg=True), 1e-4),
    "momentum": (_float(nonneg=True, below_one=True), 0.0),
    "schedule": (_choice("constant", "cosine"), "constant"),
    "clip_norm": (_float(positive=True), None),
}

_REG_COMMON: dict[str, tuple] = {
    "weight": (_float(nonneg=True), None),
    "target_nfe": (_float(positive=True), None),
    "target": (_float(positive=True), None),
    "budget_warmup": (_int(0), None),
    "budget_lr": (_float(positive=True), 0.1),
}
_REGULARIZERS: dict[str, dict[str, tuple]] = {
    "ErrorEstimate": {
        **_REG_COMMON,
        "rtol": (_float(positive=True), None),
        "atol": (_float(positive=True), None),
        "aggregate": (_choice("sum", "mean", "max"), "sum"),
    },
    "StiffnessEstimate": {**_REG_COMMON, "aggregate": (_choice("sum", "mean", "max"), "max")},
    "LocalErrorEstimate": {**_REG_COMMON, "sampling": (_choice("unbiased", "biased"), "unbiased")},
    "LocalStiffnessEstimate": {
        **_REG_COMMON,
        "sampling": (_choice("unbiased", "biased"), "unbiased"),
    },
    "KineticEnergy": dict(_REG_COMMON),
    "JacobianFrobenius": {**_REG_COMMON, "probe": (_choice("gaussian", "rademacher"), "gaussian")},
    "TaylorDerivative": {**_REG_COMMON, "order": (_int(2), 2)},
}
REGULARIZER_TYPES = tuple(_REGULARIZERS)


def _section(table: Any, prefix: str, schema: Mapping[str, tuple], *, skip=()) -> dict[str, Any]:
    """Check `table` against `schema` (unknown keys, values, required keys); fill defaults."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"config key '{prefix}' must be a table; got {_describe(table)}.")
    known = [*skip, *schema]
    for k in table:
        if k not in known:
            name = f"{prefix}.{k}" if prefix else k
            where = f"'{prefix}'" if prefix else "the top level"
            raise ConfigError(
                f"config key '{name}' is unknown; known keys in {where}: {', '.join(known)}."
            )
    out: dict[str, Any] = {}
    for k, (check, default) in schema.items():
        name = f"{prefix}.{k}" if prefix else k
        if k in table:
            out[k] = check(name, table[k])
        elif default is _REQUIRED:
            raise ConfigError(f"config key '{name}' is required.")
        else:
            out[k] = default
    return out


def _typed(table: Any, prefix: str, key: str, choices: tuple[str, ...], default=_REQUIRED):
    if not isinstance(table, Mapping):
        raise ConfigError(f"config key '{prefix}' must be a table; got {_describe(table)}.")
    if key not in table:
        if default is _REQUIRED:
            raise ConfigError(
                f"config key '{prefix}.{key}' is required; one of {', '.join(choices)}."
            )
        return default
    v = table[key]
    if not isinstance(v, str) or v not in choices:
        raise ConfigError(
            f"config key '{prefix}.{key}' = {v!r} is not supported; choose one of: "
            f"{', '.join(choices)}."
        )
    return v


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A validated configuration: every section with its defaults filled in."""

    top: dict[str, Any]
    data: dict[str, Any]  # includes "name"
    model: dict[str, Any]  # includes "type"
    optimizer: dict[str, Any]
    regularizers: tuple[dict[str, Any], ...]  # each includes "type"
    source: Path | None = None

    def __getattr__(self, name):  # top-level keys as attributes: cfg.steps, cfg.seed, ...
        top = self.__dict__.get("top", {})
        if name in top:
            return top[name]
        raise AttributeError(name)


def parse_config(raw: Mapping[str, Any], source: Path | None = None) -> TrainConfig:
    """Validate a configuration given as a dict (what `tomllib` returns)."""
    top = _section({k: v for k, v in raw.items() if k not in _SECTIONS}, "", _TOP, skip=_SECTIONS)
    if "data" not in raw:
        raise ConfigError("config table 'data' is required (with data.name).")
    if "model" not in raw:
        raise ConfigError("config table 'model' is required (with model.type).")
    dname = _typed(raw["data"], "data", "name", DATA_NAMES)
    data = {"name": dname, **_section(raw["data"], "data", _DATA[dname], skip=("name",))}
    mtype = _typed(raw["model"], "model", "type", MODEL_TYPES, default="neural_ode")
    model = {"type": mtype, **_section(raw["model"], "model", _MODEL[mtype], skip=("type",))}
    if dname not in _SUPPORTED[mtype]:
        raise ConfigError(
            f"config key 'data.name' = {dname!r} is not supported with model.type = "
            f"{mtype!r}; use one of: {', '.join(_SUPPORTED[mtype])}."
        )
    if mtype == "neural_ode" and dname != "digits" and model["hidden"] is not None:
        raise ConfigError(
            "config key 'model.hidden' applies only to classification (data.name = 'digits'); "
            "a regression neural ODE's state is the data's own."
        )
    if mtype == "stable_sde":
        _check_stable_sde(model)
    elif model["solver"] == "Euler" and model["dt0"] is None:
        raise ConfigError(
            "config key 'model.dt0' is required with model.solver = 'Euler' (no error "
            "estimate: a constant step size)."
        )
    optimizer = _section(raw.get("optimizer", {}), "optimizer", _OPTIMIZER)
    regs_raw = raw.get("regularizers", [])
    if not isinstance(regs_raw, list):
        raise ConfigError(
            "config key 'regularizers' must be an array of tables ([[regularizers]] with type "
            f"and weight); got {_describe(regs_raw)}."
        )
    regs = []
    for i, r in enumerate(regs_raw):
        prefix = f"regularizers[{i}]"
        rtype = _typed(r, prefix, "type", REGULARIZER_TYPES)
        spec = {"type": rtype, **_section(r, prefix, _REGULARIZERS[rtype], skip=("type",))}
        if spec["weight"] is None and spec["target_nfe"] is None and spec["target"] is None:
            raise ConfigError(
                f"config key '{prefix}.weight' or '{prefix}.target_nfe' is needed: a fixed "
                f"weight, or a cost budget that adapts the weight ('{prefix}.target' = 0.5: "
                "half the unregularized NFE; or an absolute target_nfe)."
            )
        regs.append(spec)
    if model["solver"] == "Euler":
        for i, r in enumerate(regs):
            if r["type"] in ("ErrorEstimate", "LocalErrorEstimate"):
                raise ConfigError(
                    f"config key 'regularizers[{i}].type' = {r['type']!r} needs a solver with "
                    "an error estimate, and model.solver = 'Euler' has none; choose an "
                    "adaptive solver (e.g. 'Tsit5', or 'ShARK' for a stable_sde) or another "
                    "regularizer."
                )
    if top["nfe_budget"] is not None and not any(
        r["target_nfe"] is None and r["target"] is None for r in regs
    ):
        raise ConfigError(
            "config key 'nfe_budget' needs at least one regularizer with a numeric weight (the "
            "weight it adapts)."
        )
    return TrainConfig(top, data, model, optimizer, tuple(regs), source)


def _check_stable_sde(model: Mapping[str, Any]) -> None:
    if model["solver"] == "Euler" and model["num_steps"] is None:
        raise ConfigError(
            "config key 'model.num_steps' is required with model.solver = 'Euler' (fixed "
            "steps on the Brownian grid; e.g. one per observation)."
        )
    if model["solver"] != "Euler" and model["num_steps"] is not None:
        raise ConfigError(
            f"config key 'model.num_steps' applies only to model.solver = 'Euler'; "
            f"{model['solver']} is adaptive (set rtol/atol instead)."
        )
    if model["solver"] == "ShARK" and model["kind"] != "lsde":
        raise ConfigError(
            f"config key 'model.solver' = 'ShARK' needs additive noise (model.kind = 'lsde'); "
            f"model.kind = {model['kind']!r} has state-dependent noise: use 'Heun' or 'Euler'."
        )


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a TOML configuration file."""
    path = Path(path)
    if path.is_dir():
        hint = (
            f"; to continue the run saved there: ndes train {path / 'config.toml'} --run-dir "
            f"{path} --resume"
            if (path / "config.toml").is_file()
            else ""
        )
        raise ConfigError(f"config file {path} is a directory, not a TOML file{hint}.")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist.") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}.") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}.") from None
    return parse_config(raw, path)


# ---- building the job ---------------------------------------------------------------------


@dataclasses.dataclass
class Job:
    """What `ndes.fit` needs, built from a `TrainConfig`."""

    model: Any
    data: Any
    eval_data: Any
    loss_fn: Callable
    optimizer: Any
    regularizers: tuple
    description: str


def _activation(name: str):
    import jax
    import jax.numpy as jnp

    return {
        "tanh": jnp.tanh,
        "softplus": jax.nn.softplus,
        "relu": jax.nn.relu,
        "gelu": jax.nn.gelu,
        "silu": jax.nn.silu,
    }[name]


def _solver_kwargs(m: Mapping[str, Any]) -> dict[str, Any]:
    import diffrax

    solver = getattr(diffrax, m["solver"])()
    if m["dt0"] is not None:
        ctrl = diffrax.ConstantStepSize()
    else:
        ctrl = diffrax.PIDController(rtol=m["rtol"], atol=m["atol"])
    return dict(
        solver=solver,
        stepsize_controller=ctrl,
        dt0=m["dt0"],
        max_steps=m["max_steps"],
        batch_mode=m["batch_mode"],
    )


def _build_stable_sde(m: Mapping[str, Any], channels: int, num_classes: int, key):
    import diffrax

    from .models import NeuralGSDE, NeuralLNSDE, NeuralLSDE

    cls = {"lsde": NeuralLSDE, "lnsde": NeuralLNSDE, "gsde": NeuralGSDE}[m["kind"]]
    fixed = m["solver"] == "Euler"
    sde = cls(
        m["hidden"],
        m["width"],
        m["depth"],
        key=key,
        input_channels=channels,
        out_size=num_classes,
        solver=getattr(diffrax, m["solver"])(),
        # Euler: the paper's Ito solver; Heun and ShARK converge to Stratonovich (for the
        # additive-noise LSDE the two coincide).
        sde_type="ito" if fixed else "stratonovich",
        stepsize_controller=(
            diffrax.ConstantStepSize()
            if fixed
            else diffrax.PIDController(rtol=m["rtol"], atol=m["atol"])
        ),
        num_steps=m["num_steps"],
        max_steps=m["max_steps"],
        batch_mode=m["batch_mode"],
    )
    return _sde_classifier()(sde)


def _with_keys(regularizers, key):
    """Give regularizers that sample (a `key` field) a fresh key per step."""
    import jax

    out = []
    for i, r in enumerate(regularizers):
        if any(f.name == "key" for f in dataclasses.fields(r)):
            r = dataclasses.replace(r, key=jax.random.fold_in(key, i))
        out.append(r)
    return tuple(out)


class ClassifierLoss:
    """Cross-entropy of `model(x) -> (logits, ModelOutput)`; logs the accuracy (%)."""

    def __call__(self, model, batch, *, key, regularizers, train_step):
        import jax
        import jax.numpy as jnp
        import optax

        from .train import solution_aux

        *inputs, y = batch
        regs = _with_keys(regularizers, key)
        # The Brownian key: a fold-in index no regularizer uses (they take 0, 1, ...).
        needs_key = getattr(model, "needs_key", False)
        kw = {"key": jax.random.fold_in(key, 0x7FFFFFFF)} if needs_key else {}
        logits, out = model(*inputs, regularizers=regs, train_step=train_step, **kw)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        aux = solution_aux(out)
        aux["accuracy"] = jnp.mean(jnp.argmax(logits, -1) == y) * 100.0
        return jnp.mean(ce), aux


class TrajectoryLoss:
    """Mean squared error of a `NeuralODE`'s states at `ts` against `ys`."""

    def __init__(self, ts):
        self.ts = ts

    def __call__(self, model, batch, *, key, regularizers, train_step):
        import jax.numpy as jnp

        from .train import solution_aux

        y0, ys = batch
        out = model(self.ts, y0, regularizers=_with_keys(regularizers, key), train_step=train_step)
        return jnp.mean((out.ys - ys) ** 2), solution_aux(out)


def _cde_classifier():
    import equinox as eqx

    from .models import NeuralCDE

    class CDEClassifier(eqx.Module):
        """`NeuralCDE` on `(times, coeffs, t1)`; returns `(logits, ModelOutput)`."""

        cde: NeuralCDE

        def __call__(self, times, coeffs, t1, *, regularizers=(), train_step=None):
            out = self.cde(times, coeffs, t1=t1, regularizers=regularizers, train_step=train_step)
            return out.ys, out

    return CDEClassifier


def _sde_classifier():
    from typing import ClassVar

    import diffrax
    import equinox as eqx
    import jax

    from .models import AbstractStableSDE

    class StableSDEClassifier(eqx.Module):
        """A stable SDE driven by the cubic path of `(times, coeffs)` (all series share the
        padded time grid); returns `(logits, ModelOutput)`. Needs a Brownian `key`."""

        sde: AbstractStableSDE
        needs_key: ClassVar[bool] = True

        def __call__(self, times, coeffs, t1, *, key, regularizers=(), train_step=None):
            del t1  # the control is constant after a series' last observation
            ts = times[0]
            path = jax.vmap(lambda c: diffrax.CubicInterpolation(ts, c))(coeffs)
            out = self.sde(ts, path, key=key, regularizers=regularizers, train_step=train_step)
            return out.ys, out

    return StableSDEClassifier


def _regularizer(spec: Mapping[str, Any], index: int):
    import ndes

    from .train import BudgetWeight

    cls = getattr(ndes, spec["type"])
    budget_keys = ("target_nfe", "target", "budget_lr", "budget_warmup")
    if spec["target_nfe"] is not None or spec["target"] is not None:
        try:
            weight: Any = BudgetWeight(
                target=spec["target"],
                target_nfe=spec["target_nfe"],
                lr=spec["budget_lr"],
                warmup=spec["budget_warmup"],
                init=spec["weight"] or None,
            )
        except ValueError as e:
            raise ConfigError(f"config key 'regularizers[{index}]' ({spec['type']}): {e}") from None
    else:
        weight = spec["weight"]
    kwargs = {
        k: v for k, v in spec.items() if k not in ("type", "weight", *budget_keys) and v is not None
    }
    if any(f.name == "key" for f in dataclasses.fields(cls)):
        import jax

        kwargs["key"] = jax.random.key(index)  # replaced by a fresh key every step
    try:
        return cls(weight=weight, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config key 'regularizers[{index}]' ({spec['type']}): {e}") from None


def _optimizer(o: Mapping[str, Any], steps: int):
    import optax

    lr: Any = o["lr"]
    if o["schedule"] == "cosine":
        lr = optax.cosine_decay_schedule(o["lr"], steps, alpha=0.05)
    if o["type"] == "adam":
        opt = optax.adam(lr)
    elif o["type"] == "adamw":
        opt = optax.adamw(lr, weight_decay=o["weight_decay"])
    else:
        opt = optax.sgd(lr, momentum=o["momentum"] or None)
    if o["clip_norm"] is not None:
        opt = optax.chain(optax.clip_by_global_norm(o["clip_norm"]), opt)
    return opt


def build_job(cfg: TrainConfig) -> Job:
    """Load the data and build the model, loss, optimiser and regularizers of `cfg`."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    d, m = cfg.data, cfg.model
    key = jax.random.key(cfg.seed)
    k_data, k_model = jax.random.split(key)
    act = _activation(m["activation"]) if "activation" in m else None
    solver_kw = _solver_kwargs(m) if m["type"] != "stable_sde" else {}
    regs = tuple(_regularizer(r, i) for i, r in enumerate(cfg.regularizers))

    if d["name"] == "digits":
        from ._demo import DigitsODE
        from .data import load_digits

        xtr, ytr, xte, yte = load_digits(test_fraction=d["test_fraction"], seed=cfg.seed)
        hidden = m["hidden"] or 16
        model = DigitsODE(
            xtr.shape[1],
            10,
            hidden,
            m["width"],
            m["depth"],
            key=k_model,
            activation=act,
            **solver_kw,
        )
        data = (xtr, ytr.astype(np.int32))
        eval_data = (xte, yte.astype(np.int32))
        loss: Callable = ClassifierLoss()
        desc = (
            f"digits ({len(xtr)} train / {len(xte)} test), neural-ODE classifier "
            f"64-{hidden}-10 (field width {m['width']}, depth {m['depth']})"
        )
    elif d["name"] in ("spirals", "ornstein_uhlenbeck"):
        from .models import NeuralODE

        dtype = jnp.result_type(float)  # float32, or float64 under jax_enable_x64
        ts = jnp.linspace(0.0, d["t1"], d["num_times"], dtype=dtype)
        k_tr, k_te = jax.random.split(k_data)
        n_tr, n_te = d["num_train"], d["num_test"]
        if d["name"] == "spirals":
            from .data import spirals

            (_, ys_tr), (_, ys_te) = spirals(k_tr, n_tr, ts), spirals(k_te, n_te, ts)
        else:
            from .data import ornstein_uhlenbeck

            ou = dict(theta=d["theta"], mu=d["mu"], sigma=d["sigma"])
            ys_tr = ornstein_uhlenbeck(k_tr, n_tr, ts, **ou)[..., None]
            ys_te = ornstein_uhlenbeck(k_te, n_te, ts, **ou)[..., None]
        ys_tr, ys_te = np.asarray(ys_tr, dtype), np.asarray(ys_te, dtype)
        n = ys_tr.shape[-1]
        model = NeuralODE.mlp(n, m["width"], m["depth"], key=k_model, activation=act, **solver_kw)
        data = (ys_tr[:, 0], ys_tr)
        eval_data = (ys_te[:, 0], ys_te)
        loss = TrajectoryLoss(ts)
        desc = (
            f"{d['name']} regression ({n_tr} train / {n_te} test trajectories, "
            f"{d['num_times']} times on [0, {d['t1']}]), neural ODE {n}-{m['width']}x"
            f"{m['depth']}-{n}"
        )
    else:  # uea
        from .data import cde_features, hermite_coefficients, load_uea
        from .models import NeuralCDE

        ds = load_uea(d["dataset"], missing=d["missing"], seed=cfg.seed)
        dtype = np.dtype(jnp.result_type(float))

        def prep(split):
            feats = cde_features(split.times, split.values).astype(dtype)
            # Time and observation-count channels on the scale of the standardised values.
            c = split.values.shape[-1]
            length = split.times.shape[1]
            feats[..., 0] /= length
            feats[..., c + 1 :] /= length
            times = split.times.astype(dtype)
            coeffs = tuple(np.asarray(c) for c in hermite_coefficients(times, feats))
            t1 = times[np.arange(len(times)), split.lengths - 1]
            return times, coeffs, t1, split.labels.astype(np.int32), feats.shape[-1]

        *data, channels = prep(ds.train)
        *eval_data, _ = prep(ds.test)
        data, eval_data = tuple(data), tuple(eval_data)
        loss = ClassifierLoss()
        desc = (
            f"UEA {d['dataset']} ({len(data[0])} train / {len(eval_data[0])} test, "
            f"{ds.num_classes} classes, missing {d['missing']:.0%}), "
        )
        if m["type"] == "stable_sde":
            model = _build_stable_sde(m, channels, ds.num_classes, k_model)
            desc += (
                f"stable neural SDE ({m['kind']}) hidden {m['hidden']} (drift width "
                f"{m['width']}, depth {m['depth']}), {m['solver']}"
            )
        else:
            # solver_kw carries model.dt0 (in normalised time) when one is given.
            cde = NeuralCDE(
                channels,
                m["hidden"],
                ds.num_classes,
                m["width"],
                m["depth"],
                key=k_model,
                activation=act,
                **solver_kw,
            )
            model = _cde_classifier()(cde)
            desc += (
                f"neural CDE hidden {m['hidden']} (field width {m['width']}, depth {m['depth']})"
            )
    _check_batch_size(cfg, data)
    return Job(model, data, eval_data, loss, _optimizer(cfg.optimizer, cfg.steps), regs, desc)


def _check_batch_size(cfg: TrainConfig, data) -> None:
    """What `ndes.fit` would refuse with a traceback, as a `ConfigError` naming the key: a
    batch larger than the training set, or one that does not split over the devices."""
    import jax

    n = len(jax.tree_util.tree_leaves(data)[0])
    bs = cfg.batch_size
    if bs > n:
        more = " (or raise data.num_train)" if "num_train" in cfg.data else ""
        raise ConfigError(
            f"config key 'batch_size' = {bs} is larger than the {n} training examples of "
            f"data.name = {cfg.data['name']!r}; use batch_size <= {n}{more}."
        )
    k = jax.device_count()
    if bs % k:
        lo = (bs // k) * k
        raise ConfigError(
            f"config key 'batch_size' = {bs} is not divisible by the {k} devices (every device "
            f"gets the same number of examples); use a multiple of {k}, e.g. {lo or k}."
        )
