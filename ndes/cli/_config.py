"""`TrainConfig`: a whole `ndes train` TOML file (the tables of `_schema.py` joined by
discriminated unions on `data.name`, `model.type` and `regularizers[i].type`), the checks
that span tables, and pydantic's errors as one `ConfigError` naming the key
(`"config key 'model.widht' is unknown; known keys in 'model': ..."`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Discriminator, Field, PrivateAttr, Tag, ValidationError, model_validator

from ._schema import (
    DATA_NAMES,
    DATA_SPECS,
    MODEL_SPECS,
    MODEL_TYPES,
    NEEDS_CNF,
    NEEDS_ERROR_ESTIMATE,
    REGULARIZER_SPECS,
    REGULARIZER_TYPES,
    ConfigError,
    Name,
    NonNegativeInt,
    OptimizerSpec,
    PositiveInt,
    PositiveNumber,
    Table,
)

__all__ = ["ConfigError", "TrainConfig", "load_config", "parse_config"]


def _model_type(raw: Any) -> Any:
    """`model.type`, "neural_ode" when left out."""
    if isinstance(raw, Mapping):
        return raw.get("type", "neural_ode")
    return getattr(raw, "type", None)


DataSpec = Annotated[Union[DATA_SPECS], Field(discriminator="name")]  # noqa: UP007
ModelSpec = Annotated[
    Union[tuple(Annotated[c, Tag(t)] for c, t in zip(MODEL_SPECS, MODEL_TYPES, strict=True))],  # noqa: UP007
    Discriminator(_model_type),
]
RegularizerSpec = Annotated[Union[REGULARIZER_SPECS], Field(discriminator="type")]  # noqa: UP007


class TrainConfig(Table):
    """A validated configuration: every table with its defaults filled in. `source` is the
    file it was read from (`None` for `parse_config` without one)."""

    seed: NonNegativeInt = 0
    steps: PositiveInt
    batch_size: PositiveInt = 64
    eval_every: PositiveInt | None = None
    eval_batch_size: PositiveInt | None = None
    log_every: PositiveInt = 1
    checkpoint_every: PositiveInt | None = None
    keep_last: PositiveInt = 3
    nfe_budget: PositiveNumber | None = None
    budget_lr: PositiveNumber = 0.1
    run_dir: Name | None = None
    data: DataSpec
    model: ModelSpec
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    regularizers: tuple[RegularizerSpec, ...] = ()
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source

    @model_validator(mode="after")
    def _consistent(self):
        d, m = self.data, self.model
        if d.task not in m.accepts:
            ok = [n for n, c in zip(DATA_NAMES, DATA_SPECS, strict=True) if c.task in m.accepts]
            raise ConfigError(
                f"config key 'data.name' = {d.name!r} is not supported with model.type = "
                f"{m.type!r}; use one of: {', '.join(ok)}."
            )
        if m.type == "neural_ode" and d.task != "vectors" and m.hidden is not None:
            raise ConfigError(
                "config key 'model.hidden' applies only to classification (data.name = "
                "'digits'); a regression neural ODE's state is the data's own."
            )
        for i, r in enumerate(self.regularizers):
            if r.weight is None and r.target_nfe is None and r.target is None:
                at = f"regularizers[{i}]"
                raise ConfigError(
                    f"config key '{at}.weight' or '{at}.target_nfe' is needed: a fixed weight, "
                    f"or a cost budget that adapts the weight ('{at}.target' = 0.5: half the "
                    "unregularized NFE; or an absolute target_nfe)."
                )
        for i, r in enumerate(self.regularizers):
            if r.type in NEEDS_CNF and m.type != "cnf":
                raise ConfigError(
                    f"config key 'regularizers[{i}].type' = {r.type!r} reads a CNF's divergence "
                    f"computation and needs model.type = 'cnf'; for model.type = {m.type!r} use "
                    f"{r.type.removeprefix('CNF')!r}."
                )
        if m.type == "diffusion" and self.regularizers and m.flow_samples == 0:
            raise ConfigError(
                "config key 'model.flow_samples' must be > 0 with regularizers on a diffusion "
                "model: score matching takes no solve, so the regularizers act on a "
                "probability-flow ODE solve from that many prior draws per step (e.g. 64)."
            )
        if getattr(m, "solver", None) == "Euler":
            for i, r in enumerate(self.regularizers):
                if r.type in NEEDS_ERROR_ESTIMATE:
                    raise ConfigError(
                        f"config key 'regularizers[{i}].type' = {r.type!r} needs a solver with "
                        "an error estimate, and model.solver = 'Euler' has none; choose an "
                        "adaptive solver (e.g. 'Tsit5', or 'ShARK' for a stable_sde) or another "
                        "regularizer."
                    )
        if self.nfe_budget is not None and not any(
            r.target_nfe is None and r.target is None for r in self.regularizers
        ):
            raise ConfigError(
                "config key 'nfe_budget' needs at least one regularizer with a numeric weight "
                "(the weight it adapts)."
            )
        return self


# ---- errors -----------------------------------------------------------------------------------

_TAG_KEY = {"data": ("name", DATA_NAMES), "model": ("type", MODEL_TYPES)}
_REG_TAG = ("type", REGULARIZER_TYPES)


def _dotted(loc: tuple) -> str:
    """`('regularizers', 0, 'ErrorEstimate', 'rtl')` -> `regularizers[0].rtl` (the union tag
    pydantic puts in the location is not a key)."""
    parts = list(loc)
    if parts[:1] in (["data"], ["model"]):
        del parts[1:2]
    elif parts[:1] == ["regularizers"]:
        del parts[2:3]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _describe(v: Any) -> str:
    return f"{v!r} ({type(v).__name__})"


def _message(err: Mapping[str, Any]) -> str:
    """One pydantic error as the sentence `ConfigError` carries."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "value_error" and isinstance(ctx.get("error"), ConfigError):
        return str(ctx["error"])
    key = _dotted(err["loc"])
    if kind == "ndes_unknown":
        name = f"{key}.{ctx['key']}" if key else ctx["key"]
        where = f"'{key}'" if key else "the top level"
        return f"config key '{name}' is unknown; known keys in {where}: {ctx['known']}."
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag, names = _TAG_KEY.get(key, _REG_TAG)
        if kind == "union_tag_not_found":
            return f"config key '{key}.{tag}' is required; one of {', '.join(names)}."
        return (
            f"config key '{key}.{tag}' = {ctx['tag']!r} is not supported; choose one of: "
            f"{', '.join(names)}."
        )
    if kind == "missing":
        return f"config key '{key}' is required."
    if kind == "ndes_value":
        return f"config key '{key}' must be {ctx['what']}; got {_describe(value)}."
    if kind == "literal_error":
        return f"config key '{key}' must be one of {ctx['expected']}; got {_describe(value)}."
    if kind in ("ndes_table", "model_attributes_type", "model_type", "dict_type"):
        return f"config key '{key}' must be a table; got {_describe(value)}."
    if kind in ("tuple_type", "list_type"):
        return (
            f"config key '{key}' must be an array of tables ([[{key}]] with type and weight); "
            f"got {_describe(value)}."
        )
    return f"config key '{key}': {err['msg']}; got {_describe(value)}."


def parse_config(raw: Mapping[str, Any], source: Path | None = None) -> TrainConfig:
    """Validate a configuration given as a dict (what `tomllib` returns). Raises
    `ConfigError` naming the first bad key."""
    try:
        cfg = TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_message(e.errors()[0])) from None
    cfg._source = None if source is None else Path(source)
    return cfg


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
