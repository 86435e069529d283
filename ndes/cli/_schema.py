"""The tables of a `ndes train` TOML file, declared as frozen pydantic (v2) models.

Each value type is a pydantic constraint plus the words its error message uses ("must be a
positive integer"). `[data]`, `[model]` and `[[regularizers]]` have one model per
`name` / `type`; `_config.py` joins them into `TrainConfig` (discriminated unions) and turns
validation errors into `ConfigError`s naming the key. docs/training.md lists every key; a
test checks that it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "ConfigError",
    "DATA_SPECS",
    "MODEL_SPECS",
    "REGULARIZER_SPECS",
    "OptimizerSpec",
]


class ConfigError(ValueError):
    """A configuration error; the message names the offending key."""


# ---- value types: pydantic's constraints, with the words the error message uses ------------


def _explained(what: str) -> WrapValidator:
    def validate(value, handler):
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("ndes_value", "must be {what}", {"what": what}) from None

    return WrapValidator(validate)


def _kind(tp: type, what: str, **constraints: Any) -> Any:
    """`tp` with `constraints`, strict (no bool for a number, no "8" for an integer)."""
    return Annotated[tp, Field(strict=True, **constraints), _explained(what)]


PositiveInt = _kind(int, "a positive integer", ge=1)
NonNegativeInt = _kind(int, "an integer >= 0", ge=0)
IntAtLeast2 = _kind(int, "an integer >= 2", ge=2)
Number = _kind(float, "a number", allow_inf_nan=False)
PositiveNumber = _kind(float, "a positive number", gt=0, allow_inf_nan=False)
NonNegativeNumber = _kind(float, "a non-negative number", ge=0, allow_inf_nan=False)
PositiveBelowOne = _kind(float, "a positive number below 1", gt=0, lt=1)
NonNegativeBelowOne = _kind(float, "a non-negative number below 1", ge=0, lt=1)
Name = _kind(str, "a non-empty string", min_length=1)

SOLVERS = ("Tsit5", "Dopri5", "Dopri8", "Bosh3", "Heun", "Midpoint", "Ralston", "Euler")
SDE_SOLVERS = ("ShARK", "Heun", "Euler")
ACTIVATIONS = ("tanh", "softplus", "relu", "gelu", "silu")
BatchMode = Literal["joint", "vmap"]


class Table(BaseModel):
    """A TOML table: known keys only (the error lists them), values validated, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            raise PydanticCustomError("ndes_table", "must be a table")
        known = sorted(cls.model_fields, key=lambda k: k not in ("name", "type"))  # tag first
        for k in raw:
            if k not in known:
                raise PydanticCustomError(
                    "ndes_unknown", "unknown key", {"key": k, "known": ", ".join(known)}
                )
        return raw


def _tags(specs: tuple[type[BaseModel], ...], key: str) -> tuple[str, ...]:
    """The `Literal` value of each spec's tag field: its `data.name` or `type`."""
    return tuple(get_args(c.model_fields[key].annotation)[0] for c in specs)


# ---- [data]: `task` says what a model must accept --------------------------------------------


class DigitsData(Table):
    """scikit-learn's 8x8 digits (`ndes.data.load_digits`): 64-pixel vectors, 10 classes."""

    task: ClassVar[str] = "vectors"
    name: Literal["digits"]
    test_fraction: PositiveBelowOne = 0.25


class SpiralsData(Table):
    """Cubic-spiral trajectories (`ndes.data.spirals`), regressed from their initial state."""

    task: ClassVar[str] = "trajectories"
    name: Literal["spirals"]
    num_train: PositiveInt = 256
    num_test: PositiveInt = 64
    num_times: IntAtLeast2 = 16
    t1: PositiveNumber = 4.0


class OrnsteinUhlenbeckData(Table):
    """Ornstein-Uhlenbeck paths (`ndes.data.ornstein_uhlenbeck`) from their initial value."""

    task: ClassVar[str] = "trajectories"
    name: Literal["ornstein_uhlenbeck"]
    num_train: PositiveInt = 256
    num_test: PositiveInt = 64
    num_times: IntAtLeast2 = 16
    t1: PositiveNumber = 2.0
    theta: PositiveNumber = 1.0
    mu: Number = 1.0
    sigma: PositiveNumber = 0.2


class UEAData(Table):
    """A UEA/UCR classification set that aeon ships (`ndes.data.load_uea`)."""

    task: ClassVar[str] = "series"
    name: Literal["uea"]
    dataset: str = "JapaneseVowels"
    missing: NonNegativeBelowOne = 0.0
    max_length: IntAtLeast2 | None = None

    @field_validator("dataset")
    @classmethod
    def _shipped(cls, v: str) -> str:
        from ..data import available_uea  # asked of aeon, as `load_uea` does

        names = available_uea()
        if v not in names:
            what = f"a classification set aeon ships: {', '.join(map(repr, names))}"
            raise PydanticCustomError("ndes_value", "must be {what}", {"what": what})
        return v


TOY_SHAPES = ("8gaussians", "pinwheel", "moons", "2spirals")  # ndes.data.TOY_2D_NAMES


class Toy2DData(Table):
    """A 2-D toy density (`ndes.data.toy_2d`, FFJORD's shapes) for a CNF; NLL in nats."""

    task: ClassVar[str] = "density"
    name: Literal["toy_2d"]
    shape: Literal[TOY_SHAPES] = "8gaussians"
    num_train: PositiveInt = 8192
    num_test: PositiveInt = 2048


class DigitsDensityData(Table):
    """The 8x8 digits as a 64-d density (`ndes.data.load_digits_density`: dequantized, logit,
    train-standardised) for a CNF; NLL in bits/dim of pixel space."""

    task: ClassVar[str] = "density"
    name: Literal["digits_density"]
    test_fraction: PositiveBelowOne = 0.2
    alpha: PositiveBelowOne = 0.05

    @field_validator("alpha")
    @classmethod
    def _below_half(cls, v: float) -> float:
        if v >= 0.5:
            what = "a positive number below 0.5 (the logit margin, e.g. 0.05)"
            raise PydanticCustomError("ndes_value", "must be {what}", {"what": what})
        return v


DATA_SPECS = (DigitsData, SpiralsData, OrnsteinUhlenbeckData, UEAData, Toy2DData, DigitsDensityData)
DATA_NAMES = _tags(DATA_SPECS, "name")

# ---- [model]: `accepts` lists the data tasks it can be built for -----------------------------


class _ODESolved(Table):
    """Keys shared by the ODE and CDE models (an MLP vector field and an ODE solver)."""

    width: PositiveInt = 32
    depth: NonNegativeInt = 1
    activation: Literal[ACTIVATIONS] = "softplus"
    solver: Literal[SOLVERS] = "Tsit5"
    rtol: PositiveNumber = 1e-3
    atol: PositiveNumber = 1e-6
    dt0: PositiveNumber | None = None
    max_steps: PositiveInt = 4096
    batch_mode: BatchMode = "joint"

    @model_validator(mode="after")
    def _euler_needs_dt0(self):
        if self.solver == "Euler" and self.dt0 is None:
            raise ConfigError(
                "config key 'model.dt0' is required with model.solver = 'Euler' (no error "
                "estimate: a constant step size)."
            )
        return self


class NeuralODEModel(_ODESolved):
    """`ndes.NeuralODE`: a digits classifier (`ndes.models.ODEClassifier`) or a trajectory
    regression whose state is the data's own."""

    accepts: ClassVar[tuple[str, ...]] = ("vectors", "trajectories")
    type: Literal["neural_ode"] = "neural_ode"
    hidden: PositiveInt | None = None


class NeuralCDEModel(_ODESolved):
    """`ndes.NeuralCDE` on the series' cubic path (`ndes.models.CDEClassifier`)."""

    accepts: ClassVar[tuple[str, ...]] = ("series",)
    type: Literal["neural_cde"]
    hidden: PositiveInt = 32
    activation: Literal[ACTIVATIONS] = "relu"  # NeuralCDE's default (docs/results.md)


class StableSDEModel(Table):
    """A stable neural SDE (Oh, Lee, Park 2024; `ndes.models.StableSDEClassifier`): ReLU drift
    MLP (no activation key), adaptive by default with ShARK for the additive-noise
    Langevin-type model (docs/sde.md). `solver = "Euler"` takes fixed steps on the Brownian
    grid: `num_steps` equal steps, or one per observation interval when it is unset.
    `time_span`: the model's clock (`[ts[0], ts[-1]]` mapped onto `[0, time_span]`; the
    models' default 10, chosen on the generalization suite; 0 solves in the data's time)."""

    accepts: ClassVar[tuple[str, ...]] = ("series",)
    type: Literal["stable_sde"]
    kind: Literal["lsde", "lnsde", "gsde"] = "lsde"
    hidden: PositiveInt = 32
    width: PositiveInt = 64
    depth: NonNegativeInt = 2
    solver: Literal[SDE_SOLVERS] = "ShARK"
    rtol: PositiveNumber = 1e-2
    atol: PositiveNumber = 1e-4
    num_steps: PositiveInt | None = None
    max_steps: PositiveInt = 4096
    batch_mode: BatchMode = "joint"
    time_span: NonNegativeNumber = 10.0

    @model_validator(mode="after")
    def _solver_fits(self):
        if self.solver != "Euler" and self.num_steps is not None:
            raise ConfigError(
                "config key 'model.num_steps' applies only to model.solver = 'Euler'; "
                f"{self.solver} is adaptive (set rtol/atol instead)."
            )
        if self.solver == "ShARK" and self.kind != "lsde":
            raise ConfigError(
                "config key 'model.solver' = 'ShARK' needs additive noise (model.kind = "
                f"'lsde'); model.kind = {self.kind!r} has state-dependent noise: use 'Heun' or "
                "'Euler'."
            )
        return self


class CNFModel(_ODESolved):
    """`ndes.CNF` (FFJORD) with a time-conditioned MLP field, trained on the NLL
    (`ndes.train.cnf_nll_loss`)."""

    accepts: ClassVar[tuple[str, ...]] = ("density",)
    type: Literal["cnf"]
    width: PositiveInt = 64
    depth: NonNegativeInt = 2
    activation: Literal[ACTIVATIONS] = "tanh"
    atol: PositiveNumber = 1e-5
    t1: PositiveNumber = 1.0
    divergence: Literal["hutchinson", "exact"] = "hutchinson"
    probe: Literal["gaussian", "rademacher"] = "gaussian"


class DiffusionModel(Table):
    """`ndes.diffusion.ScoreModel`: a `ScoreMLP` bound to a VP or VE SDE, trained by
    denoising score matching (`ndes.diffusion.DSMLoss`); with `flow_samples > 0` the loss
    also solves the probability-flow ODE with the regularizers."""

    accepts: ClassVar[tuple[str, ...]] = ("density",)
    type: Literal["diffusion"]
    sde: Literal["vp", "ve"] = "vp"
    schedule: Literal["linear", "cosine"] = "linear"
    width: PositiveInt = 128
    depth: NonNegativeInt = 3
    parametrisation: Literal["noise", "score"] = "noise"
    weighting: Literal["sigma2", "likelihood", "none"] = "sigma2"
    eps: PositiveNumber = 1e-5
    flow_samples: NonNegativeInt = 0
    flow_rtol: PositiveNumber = 1e-3
    sample_nfe: PositiveInt = 20


MODEL_SPECS = (NeuralODEModel, NeuralCDEModel, StableSDEModel, CNFModel, DiffusionModel)
MODEL_TYPES = _tags(MODEL_SPECS, "type")

# ---- [optimizer], [[regularizers]] ------------------------------------------------------------


class OptimizerSpec(Table):
    type: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveNumber = 1e-3
    weight_decay: NonNegativeNumber = 1e-4
    momentum: NonNegativeBelowOne = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    clip_norm: PositiveNumber | None = None


class _RegularizerSpec(Table):
    """A fixed `weight`, or a cost budget (`target` or `target_nfe`, an `ndes.BudgetWeight`
    starting at `weight` when given). Keys left out take the regularizer's own default."""

    needs_key: ClassVar[bool] = False  # samples: gets a PRNG key (`ndes.fit` refreshes it)
    weight: NonNegativeNumber | None = None
    target_nfe: PositiveNumber | None = None
    target: PositiveNumber | None = None
    budget_warmup: NonNegativeInt | None = None
    budget_lr: PositiveNumber = 0.1

    def options(self) -> dict[str, Any]:
        """The regularizer's own keyword arguments that the config sets."""
        common = set(_RegularizerSpec.model_fields) | {"type"}
        return self.model_dump(exclude=common, exclude_none=True)


Aggregate = Literal["sum", "mean", "max"]
Sampling = Literal["unbiased", "biased"]


class ErrorEstimateSpec(_RegularizerSpec):
    type: Literal["ErrorEstimate"]
    rtol: PositiveNumber | None = None
    atol: PositiveNumber | None = None
    aggregate: Aggregate | None = None


class StiffnessEstimateSpec(_RegularizerSpec):
    type: Literal["StiffnessEstimate"]
    aggregate: Aggregate | None = None


class LocalErrorEstimateSpec(_RegularizerSpec):
    needs_key: ClassVar[bool] = True
    type: Literal["LocalErrorEstimate"]
    sampling: Sampling | None = None


class LocalStiffnessEstimateSpec(_RegularizerSpec):
    needs_key: ClassVar[bool] = True
    type: Literal["LocalStiffnessEstimate"]
    sampling: Sampling | None = None


class KineticEnergySpec(_RegularizerSpec):
    type: Literal["KineticEnergy"]


class JacobianFrobeniusSpec(_RegularizerSpec):
    needs_key: ClassVar[bool] = True
    type: Literal["JacobianFrobenius"]
    probe: Literal["gaussian", "rademacher"] | None = None


class TaylorDerivativeSpec(_RegularizerSpec):
    type: Literal["TaylorDerivative"]
    order: IntAtLeast2 | None = None


class CNFKineticEnergySpec(_RegularizerSpec):
    type: Literal["CNFKineticEnergy"]


class CNFJacobianFrobeniusSpec(_RegularizerSpec):
    type: Literal["CNFJacobianFrobenius"]


REGULARIZER_SPECS = (
    ErrorEstimateSpec,
    StiffnessEstimateSpec,
    LocalErrorEstimateSpec,
    LocalStiffnessEstimateSpec,
    KineticEnergySpec,
    JacobianFrobeniusSpec,
    TaylorDerivativeSpec,
    CNFKineticEnergySpec,
    CNFJacobianFrobeniusSpec,
)
REGULARIZER_TYPES = _tags(REGULARIZER_SPECS, "type")
NEEDS_ERROR_ESTIMATE = ("ErrorEstimate", "LocalErrorEstimate")
NEEDS_CNF = ("CNFKineticEnergy", "CNFJacobianFrobenius")
