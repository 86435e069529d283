"""`ndes.diffusion`: score-based diffusion models (Song et al. 2021) on ndes's solves and counters.

Forward SDEs (`VPSDE`, `VESDE`), the denoising score-matching loss (`DSMLoss`) and a default
time-conditioned score network (`ScoreMLP`, bound to its SDE by `ScoreModel`), samplers that
each return their exact number of score evaluations (`reverse_sde_sample`, `pc_sample`,
`probability_flow_sample`, `probability_flow_log_prob`, `dpm_solver_sample`), and
sample-quality metrics (2-D: MMD, sliced Wasserstein; digits: a classifier's class
distribution and Fréchet distance).
"""

from ._digits_metrics import DigitsClassifier as DigitsClassifier
from ._digits_metrics import class_distribution as class_distribution
from ._digits_metrics import digits_quality as digits_quality
from ._digits_metrics import frechet_distance as frechet_distance
from ._dpm_solver import dpm_solver_orders as dpm_solver_orders
from ._dpm_solver import dpm_solver_sample as dpm_solver_sample
from ._exact import GaussianMixtureScore as GaussianMixtureScore
from ._loss import DSMLoss as DSMLoss
from ._metrics import mmd as mmd
from ._metrics import sliced_wasserstein as sliced_wasserstein
from ._samplers import ProbabilityFlowField as ProbabilityFlowField
from ._samplers import SamplerOutput as SamplerOutput
from ._samplers import pc_sample as pc_sample
from ._samplers import probability_flow_cnf as probability_flow_cnf
from ._samplers import probability_flow_log_prob as probability_flow_log_prob
from ._samplers import probability_flow_sample as probability_flow_sample
from ._samplers import reverse_sde_sample as reverse_sde_sample
from ._score import ScoreMLP as ScoreMLP
from ._score import ScoreModel as ScoreModel
from ._sde import VESDE as VESDE
from ._sde import VPSDE as VPSDE
from ._sde import AbstractDiffusionSDE as AbstractDiffusionSDE

__all__ = [
    "AbstractDiffusionSDE",
    "VPSDE",
    "VESDE",
    "ScoreModel",
    "ScoreMLP",
    "DSMLoss",
    "GaussianMixtureScore",
    "SamplerOutput",
    "reverse_sde_sample",
    "pc_sample",
    "probability_flow_sample",
    "probability_flow_log_prob",
    "probability_flow_cnf",
    "ProbabilityFlowField",
    "dpm_solver_sample",
    "dpm_solver_orders",
    "mmd",
    "sliced_wasserstein",
    "DigitsClassifier",
    "frechet_distance",
    "class_distribution",
    "digits_quality",
]
