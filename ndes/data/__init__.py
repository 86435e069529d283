"""ndes.data: offline real data sets, synthetic generators, missingness and neural-CDE features.

- Real sets shipped inside installed packages (no network): `load_uea` (aeon's UEA/UCR
  classification sets), `load_digits` (scikit-learn's 8x8 digits).
- Synthetic, deterministic given a PRNG key: `spirals`, `lotka_volterra`, `ornstein_uhlenbeck`.
- Density estimation: `toy_2d` (FFJORD's 2-D toys), `load_digits_density` (digits, bits/dim).
- Missingness and features: `drop_observations`, `cde_features`, `hermite_coefficients`,
  `linear_coefficients`, `logsig_windows` (the log-ODE method for long series);
  `prepare_cde` (a UEA split as neural-CDE inputs, `CDEData`).

See docs/data.md.
"""

from ._digits import load_digits as load_digits
from ._digits_density import DigitsDensity as DigitsDensity
from ._digits_density import load_digits_density as load_digits_density
from ._features import cde_features as cde_features
from ._features import hermite_coefficients as hermite_coefficients
from ._features import linear_coefficients as linear_coefficients
from ._logsig import logsig_windows as logsig_windows
from ._missing import drop_observations as drop_observations
from ._synthetic import lotka_volterra as lotka_volterra
from ._synthetic import ornstein_uhlenbeck as ornstein_uhlenbeck
from ._synthetic import spirals as spirals
from ._toys import TOY_2D_NAMES as TOY_2D_NAMES
from ._toys import toy_2d as toy_2d
from ._uea import CDEData as CDEData
from ._uea import Split as Split
from ._uea import UEADataset as UEADataset
from ._uea import available_uea as available_uea
from ._uea import load_uea as load_uea
from ._uea import prepare_cde as prepare_cde

__all__ = [
    # real data sets (offline)
    "load_uea",
    "available_uea",
    "UEADataset",
    "Split",
    "prepare_cde",
    "CDEData",
    "load_digits",
    "load_digits_density",
    "DigitsDensity",
    # synthetic
    "spirals",
    "lotka_volterra",
    "ornstein_uhlenbeck",
    "toy_2d",
    "TOY_2D_NAMES",
    # missingness and features
    "drop_observations",
    "cde_features",
    "hermite_coefficients",
    "linear_coefficients",
    "logsig_windows",
]
