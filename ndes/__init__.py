"""ndes: neural differential equations in JAX that learn to be cheap to solve.

The public API is small and re-exported here:

- `ndes.diffeqsolve`: drop-in `diffrax.diffeqsolve` with `regularizers=` and exact counters.
- `ndes.Solution`: a `diffrax.Solution` with `penalty`, `penalty_terms`,
  `stats["num_fevals"]`.
- Regularizers: global per-step estimates `ndes.ErrorEstimate`, `ndes.StiffnessEstimate`;
  local (one sampled time) `ndes.LocalErrorEstimate`, `ndes.LocalStiffnessEstimate`; classic
  baselines `ndes.KineticEnergy`, `ndes.JacobianFrobenius`, `ndes.TaylorDerivative`,
  `ndes.RandomEndTime`.
- Models: `ndes.NeuralODE`, `ndes.NeuralCDE`, `ndes.NeuralSDE`, the stable SDEs
  `ndes.NeuralLSDE` / `ndes.NeuralLNSDE` / `ndes.NeuralGSDE`, `ndes.LatentSDE` (Equinox
  modules; joint-batch by default).
- `ndes.GridBrownianPath`: a fixed-grid Brownian path for fast fixed-step SDE training.
- Data: `ndes.data` (UEA sets, digits, spirals, Ornstein–Uhlenbeck, Lotka–Volterra,
  missingness, CDE features).
- Training: `ndes.fit` (resumable, data-parallel), `ndes.BudgetWeight` (a target NFE instead
  of a guessed weight), `ndes.train` (checkpoints, metrics), `ndes.plot` (figures).
"""

from . import data as data
from . import diffusion as diffusion
from . import plot as plot
from . import train as train
from ._brownian import GridBrownianPath as GridBrownianPath
from ._fixed_steps import ScanAdjoint as ScanAdjoint
from ._solution import Solution as Solution
from ._solve import diffeqsolve as diffeqsolve
from ._solve import supports_feval_count as supports_feval_count
from .models import CNF as CNF
from .models import LatentSDE as LatentSDE
from .models import MLPVectorField as MLPVectorField
from .models import ModelOutput as ModelOutput
from .models import NeuralCDE as NeuralCDE
from .models import NeuralGSDE as NeuralGSDE
from .models import NeuralLNSDE as NeuralLNSDE
from .models import NeuralLSDE as NeuralLSDE
from .models import NeuralODE as NeuralODE
from .models import NeuralSDE as NeuralSDE
from .regularizers import AbstractEndTime as AbstractEndTime
from .regularizers import AbstractIntegralRegularizer as AbstractIntegralRegularizer
from .regularizers import AbstractLocalRegularizer as AbstractLocalRegularizer
from .regularizers import AbstractRegularizer as AbstractRegularizer
from .regularizers import AbstractStepRegularizer as AbstractStepRegularizer
from .regularizers import CNFJacobianFrobenius as CNFJacobianFrobenius
from .regularizers import CNFKineticEnergy as CNFKineticEnergy
from .regularizers import ErrorEstimate as ErrorEstimate
from .regularizers import JacobianFrobenius as JacobianFrobenius
from .regularizers import KineticEnergy as KineticEnergy
from .regularizers import LocalErrorEstimate as LocalErrorEstimate
from .regularizers import LocalStiffnessEstimate as LocalStiffnessEstimate
from .regularizers import RandomEndTime as RandomEndTime
from .regularizers import StiffnessEstimate as StiffnessEstimate
from .regularizers import TaylorDerivative as TaylorDerivative
from .train import BudgetWeight as BudgetWeight
from .train import CheckpointError as CheckpointError
from .train import FitResult as FitResult
from .train import fit as fit

__version__ = "0.1.0"

# The public re-exports (the subpackages `ndes.data`, `ndes.diffusion`, `ndes.plot`,
# `ndes.train` are public too, documented by their own names; docs/api/*.md lists these).
__all__ = [
    # solve
    "diffeqsolve",
    "supports_feval_count",
    "Solution",
    "GridBrownianPath",
    "ScanAdjoint",
    # regularizers
    "AbstractRegularizer",
    "AbstractStepRegularizer",
    "AbstractLocalRegularizer",
    "AbstractIntegralRegularizer",
    "AbstractEndTime",
    "ErrorEstimate",
    "StiffnessEstimate",
    "LocalErrorEstimate",
    "LocalStiffnessEstimate",
    "KineticEnergy",
    "JacobianFrobenius",
    "TaylorDerivative",
    "CNFKineticEnergy",
    "CNFJacobianFrobenius",
    "RandomEndTime",
    # models
    "NeuralODE",
    "NeuralCDE",
    "NeuralSDE",
    "NeuralLSDE",
    "NeuralLNSDE",
    "NeuralGSDE",
    "LatentSDE",
    "CNF",
    "MLPVectorField",
    "ModelOutput",
    # training
    "fit",
    "FitResult",
    "BudgetWeight",
    "CheckpointError",
]
