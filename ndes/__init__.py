"""ndes: neural differential equations in JAX that learn to be cheap to solve.

The public API is small and re-exported here:

- `ndes.diffeqsolve`: drop-in `diffrax.diffeqsolve` with `regularizers=` and exact counters.
- `ndes.Solution`: a `diffrax.Solution` with `penalty`, `penalty_terms`,
  `stats["num_fevals"]`.
- Regularizers: `ndes.ErrorEstimate`, `ndes.StiffnessEstimate`.
- Models: `ndes.NeuralODE`, `ndes.NeuralCDE` (Equinox modules; joint-batch by default).
- Data: `ndes.data` (UEA sets, digits, missingness, CDE features).
"""

from ._solution import Solution as Solution
from ._solve import diffeqsolve as diffeqsolve
from ._solve import supports_feval_count as supports_feval_count
from .models import LatentSDE as LatentSDE
from .models import MLPVectorField as MLPVectorField
from .models import ModelOutput as ModelOutput
from .models import NeuralCDE as NeuralCDE
from .models import NeuralODE as NeuralODE
from .regularizers import AbstractRegularizer as AbstractRegularizer
from .regularizers import AbstractStepRegularizer as AbstractStepRegularizer
from .regularizers import ErrorEstimate as ErrorEstimate
from .regularizers import StiffnessEstimate as StiffnessEstimate

__version__ = "0.1.0"
