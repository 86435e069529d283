"""Static checks of an SDE model's settings, shared by `NeuralSDE`, the stable SDEs and
`LatentSDE`: the solver against `sde_type` and the noise, and the Brownian and stepping
options. Each error names the argument and the fix."""

from __future__ import annotations

import diffrax

from .._checks import check_int
from ._common import SolverSettings

__all__ = ["NOISE_TYPES", "SDE_TYPES", "check_sde_config", "check_sde_solver"]

NOISE_TYPES = ("diagonal", "general")
SDE_TYPES = ("ito", "stratonovich")
_BROWNIAN = ("auto", "grid", "tree")


def _is_additive_only(solver) -> bool:
    """Stochastic Runge--Kutta methods whose tableau assumes additive noise (ShARK, SRA1, SEA)."""
    tableau = getattr(solver, "tableau", None)
    return isinstance(solver, diffrax.AbstractSRK) and bool(tableau.is_additive_noise())


def check_sde_solver(solver, sde_type: str, additive: bool, owner: str) -> None:
    """Static check that `solver` converges to the `sde_type` solution.

    Itô and Stratonovich agree for additive noise, so then any SDE solver is accepted.
    """
    if sde_type not in SDE_TYPES:
        raise ValueError(f"{owner}(sde_type={sde_type!r}) must be 'ito' or 'stratonovich'.")
    ito = isinstance(solver, diffrax.AbstractItoSolver)
    strat = isinstance(solver, diffrax.AbstractStratonovichSolver)
    if not (ito or strat):
        raise ValueError(
            f"{owner}: {type(solver).__name__} is not an SDE solver. Use diffrax.Euler() or "
            "diffrax.ItoMilstein() (Itô), or diffrax.Heun(), diffrax.EulerHeun(), "
            "diffrax.ReversibleHeun(), diffrax.SPaRK() (Stratonovich)."
        )
    if _is_additive_only(solver) and not additive:
        raise ValueError(
            f"{owner}: {type(solver).__name__} is only correct for additive noise (a "
            "diffusion that does not depend on the state); use diffrax.Heun() or "
            "diffrax.GeneralShARK() (Stratonovich) or diffrax.Euler() (Itô)."
        )
    if additive:
        return
    if sde_type == "ito" and not ito:
        raise ValueError(
            f"{owner}(sde_type='ito'): {type(solver).__name__} converges to the Stratonovich "
            "solution. Use diffrax.Euler() or diffrax.ItoMilstein(), or pass "
            "sde_type='stratonovich'."
        )
    if sde_type == "stratonovich" and not strat:
        raise ValueError(
            f"{owner}(sde_type='stratonovich'): {type(solver).__name__} converges to the Itô "
            "solution. Use diffrax.Heun(), diffrax.EulerHeun(), diffrax.ReversibleHeun(), "
            "diffrax.StratonovichMilstein() or diffrax.SPaRK(), or pass sde_type='ito'."
        )


def check_sde_config(
    owner: str,
    settings: SolverSettings,
    sde,
    noise: str,
    noise_size: int | None,
    per_interval: bool = False,
) -> None:
    """Static checks of an SDE model's settings, each naming the argument and the fix.

    `per_interval`: the model takes one constant step per interval of `ts` when neither
    `dt0` nor `num_steps` is given (the stable SDE classes), so that is not an error."""
    settings.check(owner)
    brownian, brownian_tol, num_steps = sde.brownian, sde.brownian_tol, sde.num_steps
    dt0, stepsize_controller = settings.dt0, settings.stepsize_controller
    if noise not in NOISE_TYPES:
        raise ValueError(
            f"{owner}(noise={noise!r}) must be 'diagonal' (one Brownian motion per state "
            "component, diffusion returns (n,)) or 'general' (diffusion returns (n, m))."
        )
    if noise == "general" and (noise_size is None or noise_size < 1):
        raise ValueError(
            f"{owner}(noise='general') needs noise_size=m >= 1, the number of Brownian motions."
        )
    if brownian not in _BROWNIAN:
        raise ValueError(
            f"{owner}(brownian={brownian!r}) must be 'auto' (grid for constant steps, tree "
            "for adaptive), 'grid' (ndes.GridBrownianPath) or 'tree' "
            "(diffrax.VirtualBrownianTree)."
        )
    if brownian_tol is not None and not brownian_tol > 0:
        raise ValueError(f"{owner}(brownian_tol={brownian_tol}) must be > 0 or None.")
    if num_steps is not None:
        check_int(num_steps, "num_steps", owner, hint=" or None (equal steps over the solve)")
    adaptive = isinstance(stepsize_controller, diffrax.AbstractAdaptiveStepSizeController)
    if not adaptive and dt0 is None and num_steps is None and not per_interval:
        raise ValueError(
            f"{owner}: with {type(stepsize_controller).__name__} pass num_steps=N (N equal "
            "steps over [ts[0], ts[-1]]) or dt0."
        )
    if adaptive and num_steps is not None:
        raise ValueError(
            f"{owner}(num_steps=...) sets a constant step; with an adaptive "
            "stepsize_controller pass dt0 (initial step) or None instead."
        )
