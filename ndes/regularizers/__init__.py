"""Regularizers that read the solver's internals, and the classic baselines."""

from ._base import AbstractRegularizer as AbstractRegularizer
from ._base import AbstractStepRegularizer as AbstractStepRegularizer
from ._base import StepInfo as StepInfo
from ._error import ErrorEstimate as ErrorEstimate
from ._error import normalised_error as normalised_error
from ._stiffness import StiffnessEstimate as StiffnessEstimate
from ._stiffness import stiffness_times_step as stiffness_times_step
from ._stiffness import supports_stiffness_estimate as supports_stiffness_estimate
from ._wrapped_solver import RegularizedSolver as RegularizedSolver
