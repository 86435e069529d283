r"""The three stable neural SDE classes of Oh, Lee & Park 2024 (ICLR 2024), as drift and
diffusion formulas on `AbstractStableSDE` (`_stable_sde.py`, which holds the shared
networks, the solve and the checks, and the paper's and the reference code's details)."""

from __future__ import annotations

import jax.numpy as jnp

from ._stable_sde import AbstractStableSDE

__all__ = ["NeuralLSDE", "NeuralLNSDE", "NeuralGSDE"]


class _AbstractGammaDrift(AbstractStableSDE):
    """The drift of the LSDE and the LNSDE: the network's output $\gamma$ itself, squashed by
    $\tanh$ in the bounded version."""

    def drift(self, t, z, x):
        g = self._gamma(t, z, x)
        return jnp.tanh(g) if self.bounded else g


class NeuralLSDE(_AbstractGammaDrift):
    r"""Langevin-type stable neural SDE (Oh, Lee & Park 2024, eq. LSDE):
    $\mathrm{d}z = \gamma(z, X_t)\,\mathrm{d}t + \sigma(t)\,\mathrm{d}W_t$ (additive noise, so
    Itô = Stratonovich and the additive-noise SRK solvers `diffrax.ShARK`/`SRA1`/`SEA`
    apply). Bounded version: $\tanh\gamma$ and $\tanh(\mathrm{sigmoid}(\theta)\sigma(t))$.
    The drift MLP's input is `[z, X_t]` (no time features).

    **Arguments:** `hidden_size`, `width`, `depth`, `key`, `input_channels`, `out_size`,
    `bounded`, `theta`, `sde_type`, `dtype`, `time_span`, `settings`, `sde` (and the solver
    settings' fields as keywords) -- each as documented in `AbstractStableSDE`. With additive noise
    both `sde_type`s give the same solution, so any SDE solver is accepted.

    For adaptive solves prefer `solver=diffrax.ShARK()` (with `sde_type="stratonovich"`):
    its error estimate sees only the drift, so it takes far fewer steps than `Heun`
    (measurements in docs/sde.md) and works with `ErrorEstimate`."""

    time_input = False
    additive = True

    def _noise_raw(self, t, z):
        return self.sigma(t, z.dtype)


class NeuralLNSDE(_AbstractGammaDrift):
    r"""Linear-noise stable neural SDE (Oh, Lee & Park 2024, eq. LNSDE):
    $\mathrm{d}z = \gamma(t, z, X_t)\,\mathrm{d}t + \sigma(t) \odot z\,\mathrm{d}W_t$.
    Bounded version: $\tanh\gamma$ and $\tanh(\mathrm{sigmoid}(\theta)\,\sigma(t) \odot z)$.
    The drift MLP's input is `[sin t, cos t, z, X_t]`.

    **Arguments:** `hidden_size`, `width`, `depth`, `key`, `input_channels`, `out_size`,
    `bounded`, `theta`, `sde_type`, `dtype`, `time_span`, `settings`, `sde` (and the solver
    settings' fields as keywords) -- each as documented in `AbstractStableSDE`."""

    time_input = True
    additive = False

    def _noise_raw(self, t, z):
        return self.sigma(t, z.dtype) * z


class NeuralGSDE(AbstractStableSDE):
    r"""Geometric stable neural SDE (Oh, Lee & Park 2024, eq. GSDE):
    $\mathrm{d}z = \gamma(t, z, X_t) \odot z\,\mathrm{d}t + \sigma(t) \odot z\,\mathrm{d}W_t$.
    Bounded version (the authors' code): drift $\tanh(\gamma \odot \tanh z)$, diffusion
    $\tanh(\mathrm{sigmoid}(\theta)\,\sigma(t) \odot z)$. With $z_0 \ne 0$ componentwise, the
    unbounded geometric SDE keeps each component's sign. The drift MLP's input is
    `[sin t, cos t, z, X_t]`.

    **Arguments:** `hidden_size`, `width`, `depth`, `key`, `input_channels`, `out_size`,
    `bounded`, `theta`, `sde_type`, `dtype`, `time_span`, `settings`, `sde` (and the solver
    settings' fields as keywords) -- each as documented in `AbstractStableSDE`."""

    time_input = True
    additive = False

    def drift(self, t, z, x):
        g = self._gamma(t, z, x)
        if self.bounded:
            return jnp.tanh(g * jnp.tanh(z))
        return g * z

    def _noise_raw(self, t, z):
        return self.sigma(t, z.dtype) * z
