"""ndes.data: missingness and neural-CDE features (loaders in progress)."""

from ._features import (
    cde_features as cde_features,
    hermite_coefficients as hermite_coefficients,
    linear_coefficients as linear_coefficients,
)
from ._missing import drop_observations as drop_observations
from ._synthetic import ornstein_uhlenbeck as ornstein_uhlenbeck
from ._uea import load_uea as load_uea, Split as Split, UEADataset as UEADataset
from ._digits import load_digits as load_digits
