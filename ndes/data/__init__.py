"""ndes.data: missingness and neural-CDE features (loaders in progress)."""

from ._digits import load_digits as load_digits
from ._features import (
    cde_features as cde_features,
)
from ._features import (
    hermite_coefficients as hermite_coefficients,
)
from ._features import (
    linear_coefficients as linear_coefficients,
)
from ._missing import drop_observations as drop_observations
from ._synthetic import ornstein_uhlenbeck as ornstein_uhlenbeck
from ._uea import Split as Split
from ._uea import UEADataset as UEADataset
from ._uea import load_uea as load_uea
