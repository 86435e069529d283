"""Regularizers that read the solver's internals, and the classic baselines.

One interface (`AbstractRegularizer`, `_base.py`) and three mechanisms, each an abstract class
that a new regularizer subclasses in one small file: `AbstractStepRegularizer` (a value per
accepted step), `AbstractLocalRegularizer` (a step value on one extra step from a sampled
time), `AbstractIntegralRegularizer` (an integral as extra state). `AbstractEndTime` changes
the end time and has no penalty. See `docs/architecture.md`.
"""

from ._augment import AbstractIntegralRegularizer as AbstractIntegralRegularizer
from ._base import AbstractEndTime as AbstractEndTime
from ._base import AbstractRegularizer as AbstractRegularizer
from ._base import AbstractStepHook as AbstractStepHook
from ._base import Problem as Problem
from ._base import StepInfo as StepInfo
from ._error import ErrorEstimate as ErrorEstimate
from ._error import normalised_error as normalised_error
from ._flow_terms import CNFJacobianFrobenius as CNFJacobianFrobenius
from ._flow_terms import CNFKineticEnergy as CNFKineticEnergy
from ._kinetic import JacobianFrobenius as JacobianFrobenius
from ._kinetic import KineticEnergy as KineticEnergy
from ._local import AbstractLocalRegularizer as AbstractLocalRegularizer
from ._local import LocalErrorEstimate as LocalErrorEstimate
from ._local import LocalStiffnessEstimate as LocalStiffnessEstimate
from ._steer import RandomEndTime as RandomEndTime
from ._step import AbstractStepRegularizer as AbstractStepRegularizer
from ._stiffness import StiffnessEstimate as StiffnessEstimate
from ._stiffness import stiffness_times_step as stiffness_times_step
from ._stiffness import supports_stiffness_estimate as supports_stiffness_estimate
from ._taylor import TaylorDerivative as TaylorDerivative
from ._wrapped_solver import RegularizedSolver as RegularizedSolver
