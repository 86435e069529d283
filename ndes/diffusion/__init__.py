"""`ndes.diffusion`: score-based diffusion models (Song et al. 2021) on ndes's solves and counters.

Forward SDEs (`VPSDE`, `VESDE`), the denoising score-matching loss (`DSMLoss`) and a default
time-conditioned score network (`ScoreMLP`, bound to its SDE by `ScoreModel`), samplers that
each return their exact number of score evaluations, and sample-quality metrics.
"""

from ._exact import GaussianMixtureScore as GaussianMixtureScore
from ._loss import DSMLoss as DSMLoss
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
]
