"""Figures (matplotlib on an Agg canvas: no display, no pyplot state, the user's backend
untouched). Every function writes a PNG and returns its path (the latent-SDE figures return
the figure).

- Training runs: `plot_history`, `plot_run`, `plot_tradeoff`.
- Latent SDE: `plot_posterior_and_forecast`, `plot_training`.
- Continuous normalizing flows: `plot_density_2d`, `plot_digit_samples`.
- Score-based diffusion: `plot_diffusion_samples_2d`, `plot_diffusion_digits`,
  `plot_reverse_trajectories`, `plot_quality_vs_nfe`.
"""

from ._cnf import plot_density_2d as plot_density_2d
from ._cnf import plot_digit_samples as plot_digit_samples
from ._diffusion import plot_diffusion_digits as plot_diffusion_digits
from ._diffusion import plot_diffusion_samples_2d as plot_diffusion_samples_2d
from ._diffusion import plot_quality_vs_nfe as plot_quality_vs_nfe
from ._diffusion import plot_reverse_trajectories as plot_reverse_trajectories
from ._latent_sde import plot_posterior_and_forecast as plot_posterior_and_forecast
from ._latent_sde import plot_training as plot_training
from ._training import plot_history as plot_history
from ._training import plot_run as plot_run
from ._training import plot_tradeoff as plot_tradeoff

__all__ = [
    "plot_history",
    "plot_run",
    "plot_tradeoff",
    "plot_posterior_and_forecast",
    "plot_training",
    "plot_density_2d",
    "plot_digit_samples",
    "plot_diffusion_samples_2d",
    "plot_diffusion_digits",
    "plot_reverse_trajectories",
    "plot_quality_vs_nfe",
]
