"""Equinox models solved by `ndes.diffeqsolve`, so every regularizer and counter applies."""

from ._cde import NeuralCDE as NeuralCDE
from ._classifiers import CDEClassifier as CDEClassifier
from ._classifiers import ODEClassifier as ODEClassifier
from ._classifiers import StableSDEClassifier as StableSDEClassifier
from ._cnf import CNF as CNF
from ._common import ModelOutput as ModelOutput
from ._common import SolverSettings as SolverSettings
from ._latent_sde import LatentSDE as LatentSDE
from ._mlp import MLPVectorField as MLPVectorField
from ._ode import NeuralODE as NeuralODE
from ._sde import NeuralSDE as NeuralSDE
from ._sde_solve import SDESettings as SDESettings
from ._stable_classes import NeuralGSDE as NeuralGSDE
from ._stable_classes import NeuralLNSDE as NeuralLNSDE
from ._stable_classes import NeuralLSDE as NeuralLSDE
from ._stable_sde import AbstractStableSDE as AbstractStableSDE
