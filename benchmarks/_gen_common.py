"""Shared pieces of the generalization suite (`benchmarks/generalization.py`).

Every family module (`_gen_uea.py`, `_gen_ode.py`, `_gen_latent.py`, `_gen_digits.py`)
exposes `PROBLEMS` (names) and `run(problem, method, seed, cfg) -> list[Record]`, using only
ndes's public API with *default* settings: what a new user gets.

A record is a plain dict (JSON-serialisable):

- `family`, `problem`, `model`, `missing` (fraction, or 0.0), `method`, `seed`;
- `metric` (e.g. "accuracy", "test_mse", "elbo_per_point"), `value`, `higher_is_better`;
- `nfe_per_prediction`: vector-field evaluations of one prediction solve (without
  regularizers), per series for a joint batch solve; `observations`: observations per series
  (so `nfe_per_prediction / observations` is the cost per observation);
- `train_s`: wall-clock seconds of training; `steps`: optimiser steps;
- `budget_weight`, `budget_reference_nfe`: the final `BudgetWeight` state (budget rows only);
- `note`: anything a reader needs (e.g. a series subsampled to fit the time budget).
"""

from __future__ import annotations

import dataclasses

import jax

import ndes

METHODS = (
    "vanilla",
    "ErrorEstimate",
    "StiffnessEstimate",
    "LocalErrorEstimate",
    "KineticEnergy",
    "budget",
)
"""Each regularizer at its *default* weight (the library default, 1.0), and the cost budget
`BudgetWeight(target=0.5)` on `ErrorEstimate` with otherwise default settings."""

BUDGET_TARGET = 0.5


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """`quick`: seconds per problem (tests); `steps`: optimiser steps (0 = the family's
    default); `max_length`: series longer than this are subsampled (0 = never);
    `ncde_solver`: the UEA family's NCDE solve, `"tsit5"` (adaptive Tsit5 + PID, which the
    regularizer rows need) or a fixed-step solver name (`"midpoint"`, `"heun"`, `"ralston"`,
    `"bosh3"`) taking `ncde_substeps` steps per observation interval; `lsde_solver`: the
    stable SDE's, `"shark"` (adaptive ShARK + PID on a Brownian tree) or a fixed-step
    `"euler"` (Itô) / `"heun"` (Stratonovich) on the Brownian grid, one step per interval;
    `weight_decay`: the UEA family's decoupled weight decay (`optax.adamw`; 0 = plain Adam);
    `lsde_time_span`: the stable SDEs' `time_span` (their clock's length; `None` = the
    model's default, 0 = the data's own time, i.e. `time_span=None`); `logsig_depth`: the
    UEA NCDE by the log-ODE method (`ndes.data.logsig_windows` of this depth over windows
    of the full series, as many as `max_length` points would give; 0 = off)."""

    quick: bool = False
    steps: int = 0
    max_length: int = 0
    ncde_solver: str = "tsit5"
    ncde_substeps: int = 1
    lsde_solver: str = "shark"
    weight_decay: float = 0.0
    lsde_time_span: float | None = None
    logsig_depth: int = 0


def regularizers(method: str, key: jax.Array, solver_has_fsal: bool = True) -> tuple:
    """The regularizers of `method` at their default weight (`()` for vanilla; budget rows
    use `ErrorEstimate` and get the budget from `fit(budget=budget_for(...))`)."""
    if method == "vanilla":
        return ()
    if method in ("ErrorEstimate", "budget"):
        return (ndes.ErrorEstimate(),)
    if method == "StiffnessEstimate":
        return (ndes.StiffnessEstimate(),) if solver_has_fsal else ()
    if method == "LocalErrorEstimate":
        return (ndes.LocalErrorEstimate(key=key),)
    if method == "KineticEnergy":
        return (ndes.KineticEnergy(),)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}.")


def budget_for(method: str, steps: int):
    """`BudgetWeight(target=0.5)` with its defaults for budget rows (warm-up: 40 % of the
    `steps`, as `ndes.fit` resolves the default; given in steps so that hand-written loops
    can use it too), `None` otherwise."""
    if method != "budget":
        return None
    return ndes.BudgetWeight(target=BUDGET_TARGET).for_steps(steps)


def budget_fields(result) -> dict:
    """`budget_weight` / `budget_reference_nfe` from a `FitResult` with one budget."""
    states = result.state.budget_weights
    if not states:
        return {}
    return {
        "budget_weight": float(states[0].weight),
        "budget_reference_nfe": float(states[0].reference_nfe),
    }
