r"""Score models: a network $s_\theta(t, x)$ (or noise predictor $\hat\varepsilon_\theta(t, x)$)
bound to its forward SDE, and a default time-conditioned MLP."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._sde import AbstractDiffusionSDE

__all__ = ["ScoreMLP", "ScoreModel", "PARAMETRISATIONS"]

Parametrisation = Literal["noise", "score"]
PARAMETRISATIONS = ("noise", "score")


class ScoreMLP(eqx.Module):
    r"""A small time-conditioned MLP, `net(t, x) -> (d,)` on one sample `x` of shape `(d,)`:
    an `eqx.nn.MLP` on $[x,\ t,\ \sin(\omega_k t),\ \cos(\omega_k t)]$ with fixed frequencies
    $\omega_k = \pi 2^k$, $k < $ `num_frequencies` (sinusoidal time features as in DDPM's
    embedding, Ho et al. 2020; Song et al. 2021 use random Fourier features of $\log\sigma$).

    **Arguments:** `data_size` (`d`), `width` (default 128), `depth` (hidden layers,
    default 3), `key`, `num_frequencies` (default 6), `activation` (default SiLU),
    `dtype`.
    """

    mlp: eqx.nn.MLP
    data_size: int = eqx.field(static=True)
    num_frequencies: int = eqx.field(static=True)

    def __init__(
        self,
        data_size: int,
        width: int = 128,
        depth: int = 3,
        *,
        key: PRNGKeyArray,
        num_frequencies: int = 6,
        activation: Callable = jax.nn.silu,
        dtype=None,
    ):
        if data_size < 1 or width < 1 or depth < 0 or num_frequencies < 0:
            raise ValueError(
                f"ScoreMLP needs data_size >= 1, width >= 1, depth >= 0, num_frequencies >= 0; "
                f"got data_size={data_size}, width={width}, depth={depth}, "
                f"num_frequencies={num_frequencies}."
            )
        self.data_size, self.num_frequencies = int(data_size), int(num_frequencies)
        in_size = data_size + 1 + 2 * num_frequencies
        self.mlp = eqx.nn.MLP(
            in_size, data_size, width, depth, activation=activation, key=key, dtype=dtype
        )

    def __call__(self, t: Float[ArrayLike, ""], x: Float[Array, " d"]) -> Float[Array, " d"]:
        t = jnp.reshape(jnp.asarray(t, x.dtype), (1,))
        w = math.pi * 2.0 ** jnp.arange(self.num_frequencies, dtype=x.dtype)
        feats = jnp.concatenate([x, t, jnp.sin(w * t), jnp.cos(w * t)])
        return self.mlp(feats)


def check_parametrisation(parametrisation: str, owner: str) -> None:
    if parametrisation not in PARAMETRISATIONS:
        raise ValueError(
            f"{owner}: parametrisation={parametrisation!r} is unknown; use 'noise' (the network "
            "predicts the noise eps, score = -eps/sigma_t) or 'score' (the network is the score)."
        )


class ScoreModel(eqx.Module):
    r"""A score model: a network bound to its forward SDE.

    With `parametrisation="noise"` (DDPM's $\hat\varepsilon_\theta$, Ho et al. 2020) the
    network predicts the noise and the score is $s = -\hat\varepsilon/\sigma_t$; with
    `"score"` the network is the score $s_\theta(t, x)$ (Song et al. 2021) and
    $\hat\varepsilon = -\sigma_t s$. Both see one sample `x` of shape `(d,)`; the methods
    here take one sample too (`jax.vmap` them for a batch, as the samplers do).

    **Arguments:**

    - `network`: any callable `network(t, x) -> (d,)` (an Equinox module to train), e.g.
      `ScoreMLP(d, key=...)`.
    - `sde`: the forward SDE (`VPSDE` / `VESDE`).
    - `parametrisation`: `"noise"` (default) or `"score"`.
    """

    network: Callable
    sde: AbstractDiffusionSDE
    parametrisation: str = eqx.field(static=True)

    def __init__(
        self,
        network: Callable,
        sde: AbstractDiffusionSDE,
        parametrisation: Parametrisation = "noise",
    ):
        check_parametrisation(parametrisation, "ScoreModel")
        if not isinstance(sde, AbstractDiffusionSDE):
            raise ValueError(
                f"ScoreModel: sde must be an ndes.diffusion SDE (VPSDE or VESDE); got "
                f"{type(sde).__name__}."
            )
        self.network, self.sde, self.parametrisation = network, sde, parametrisation

    @property
    def data_size(self) -> int | None:
        """The data dimension, when the network tells it (`network.data_size`)."""
        size = getattr(self.network, "data_size", None)
        return None if size is None else int(size)

    def score(self, t: Float[ArrayLike, ""], x: Float[Array, " d"]) -> Float[Array, " d"]:
        r"""The score $\nabla_x\log p_t(x)$ at time `t` of one sample `x`."""
        out = self.network(t, x)
        if self.parametrisation == "score":
            return out
        return -out / self.sde.sigma(t)

    def noise(self, t: Float[ArrayLike, ""], x: Float[Array, " d"]) -> Float[Array, " d"]:
        r"""The noise prediction $\hat\varepsilon(t, x) = -\sigma_t\,s(t, x)$."""
        out = self.network(t, x)
        if self.parametrisation == "noise":
            return out
        return -self.sde.sigma(t) * out

    def scaled_score(self, t: Float[ArrayLike, ""], x: Float[Array, " d"]) -> Float[Array, " d"]:
        r"""$\sigma_t\,s(t, x) = -\hat\varepsilon(t, x)$: the quantity DSM regresses on
        $-\varepsilon$ (finite as $\sigma_t \to 0$)."""
        return -self.noise(t, x)
