r"""scikit-learn's 8x8 digits as a density-estimation problem (64-d), reported in bits/dim.

The pixels are integers $p \in \{0, \dots, 16\}$ (17 levels). Following RealNVP (Dinh et al.
2017) and FFJORD (Grathwohl et al. 2019):

1. **Uniform dequantization** (Theis et al. 2016): $v = p + u$, $u \sim U[0, 1)^{64}$. A
   density on $v$ bounds the discrete log-likelihood: $\log P(p) \ge \mathbb{E}_u \log p_V(p+u)$.
2. **Logit transform**: $s = \alpha + (1 - 2\alpha)\, v / 17$,
   $y = \operatorname{logit}(s) = \log s - \log(1 - s)$.
3. **Standardisation** with the *train* split's per-pixel mean and std of $y$ only:
   $x = (y - \mu) / \sigma$.

The model sees $x$; its log-density in pixel space is
$\log p_V(v) = \log p_X(x) + \log\lvert\det \partial x/\partial v\rvert$ with

$$\log\lvert\det \partial x/\partial v\rvert = \sum_{i=1}^{64}\Big[\log(1-2\alpha)
- \log 17 - \log s_i - \log(1 - s_i) - \log\sigma_i\Big],$$

and bits per dimension are $-\log p_V(v) / (64 \ln 2)$: the number usually reported for
image flows (pixel bins of width 1).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np
from jaxtyping import Float, Int

__all__ = ["DigitsDensity", "load_digits_density"]

_LEVELS = 17  # sklearn digits pixels are 0..16


@dataclasses.dataclass(frozen=True)
class DigitsDensity:
    """The digits density problem: the transformed train/test sets and the maps between
    pixel space and the model's space (see the module docstring for the formulas).

    **Fields:**

    - `x_train`, `x_test`: float32, shape `(N, 64)`: dequantized, logit-transformed,
      standardised pixels (one dequantization draw, fixed by the seed).
    - `logdet_train`, `logdet_test`: float64, shape `(N,)`: $\\log|\\det\\partial x/\\partial
      v|$ of each row, to add to a model's log-density (`bits_per_dim` does it).
    - `pixels_train`, `pixels_test`: int, shape `(N, 64)`, the raw pixels in 0..16.
    - `y_train`, `y_test`: the digit labels (not needed for density estimation).
    - `mean`, `std`: the train statistics in logit space, shape `(64,)`.
    - `alpha`: the logit transform's margin.
    - `levels`: the number of pixel levels, 17 (values 0..16): the dequantization's scale.
    """

    x_train: Float[np.ndarray, "Ntr 64"]
    x_test: Float[np.ndarray, "Nte 64"]
    logdet_train: Float[np.ndarray, " Ntr"]
    logdet_test: Float[np.ndarray, " Nte"]
    pixels_train: Int[np.ndarray, "Ntr 64"]
    pixels_test: Int[np.ndarray, "Nte 64"]
    y_train: Int[np.ndarray, " Ntr"]
    y_test: Int[np.ndarray, " Nte"]
    mean: Float[np.ndarray, " 64"]
    std: Float[np.ndarray, " 64"]
    alpha: float
    levels: int = _LEVELS

    def transform(
        self, pixels: Int[np.ndarray, "N 64"], rng: np.random.Generator | int
    ) -> tuple[Float[np.ndarray, "N 64"], Float[np.ndarray, " N"]]:
        """Dequantize pixels (0..16) with fresh uniform noise from `rng` and map them to the
        model's space: returns `(x, logdet)` as in the fields (use it for a new draw of
        the noise each epoch)."""
        pixels = np.asarray(pixels)
        if pixels.ndim != 2 or pixels.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"DigitsDensity.transform: pixels must have shape (N, {self.mean.shape[0]}); "
                f"got {pixels.shape}."
            )
        rng = np.random.default_rng(rng)
        v = pixels.astype(np.float64) + rng.uniform(size=pixels.shape)
        return _forward(v, self.alpha, self.mean, self.std, self.levels)

    def to_pixels(self, x: Float[np.ndarray, "N 64"]) -> Float[np.ndarray, "N 64"]:
        """The inverse map from model space to continuous pixel values $v \\in [0, 17]$ (e.g.
        to show samples; `np.floor` gives the discrete pixel)."""
        y = np.asarray(x, np.float64) * self.std + self.mean
        s = 1.0 / (1.0 + np.exp(-y))
        return np.clip((s - self.alpha) / (1 - 2 * self.alpha) * self.levels, 0.0, self.levels)

    def bits_per_dim(
        self, log_prob: Float[np.ndarray, " N"], logdet: Float[np.ndarray, " N"]
    ) -> float:
        """Mean bits per pixel of a model's log-density `log_prob` (nats, in model space) of
        rows whose `logdet` the fields give: $-\\overline{(\\log p_X + \\text{logdet})} /
        (64 \\ln 2)$."""
        log_prob, logdet = np.asarray(log_prob, np.float64), np.asarray(logdet, np.float64)
        if log_prob.shape != logdet.shape:
            raise ValueError(
                f"DigitsDensity.bits_per_dim: log_prob shape {log_prob.shape} must equal "
                f"logdet shape {logdet.shape} (one value per row)."
            )
        d = self.mean.shape[0]
        return float(-np.mean(log_prob + logdet) / (d * math.log(2)))


def _forward(v, alpha, mean, std, levels):
    s = alpha + (1 - 2 * alpha) * v / levels
    y = np.log(s) - np.log1p(-s)
    x = (y - mean) / std
    logdet = np.sum(
        math.log(1 - 2 * alpha) - math.log(levels) - np.log(s) - np.log1p(-s) - np.log(std),
        axis=-1,
    )
    return x.astype(np.float32), logdet


def load_digits_density(
    *, test_fraction: float = 0.2, seed: int = 0, alpha: float = 0.05
) -> DigitsDensity:
    """scikit-learn's 8x8 digits (1797 images, shipped: no download) for density estimation:
    uniform dequantization, logit transform, train-only standardisation, a seeded split.

    **Arguments:**

    - `test_fraction`: the share of images in the test split, in (0, 1) (stratified by
      class).
    - `seed`: seeds both the split and the dequantization noise.
    - `alpha`: the logit margin in (0, 0.5), RealNVP's 0.05 by default (keeps the logit
      finite at pixels 0 and 16).

    **Returns:** a `DigitsDensity` (`x_train`, `x_test` of shape `(N, 64)`, float32, and
    the log-det-Jacobians for bits/dim in pixel space).

    **References:** Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", ICLR
    2017; Theis, van den Oord, Bethge, "A note on the evaluation of generative models", ICLR
    2016; Grathwohl et al., "FFJORD", ICLR 2019.
    """
    if not (isinstance(test_fraction, numbers.Real) and 0.0 < test_fraction < 1.0):
        raise ValueError(
            f"load_digits_density: test_fraction={test_fraction!r} must lie in (0, 1)."
        )
    if not (isinstance(alpha, numbers.Real) and 0.0 < alpha < 0.5):
        raise ValueError(
            f"load_digits_density: alpha={alpha!r} must lie in (0, 0.5), e.g. 0.05 (RealNVP)."
        )
    from sklearn.datasets import load_digits as _ld
    from sklearn.model_selection import train_test_split

    X, y = _ld(return_X_y=True)
    X = X.astype(np.int64)
    ptr, pte, ytr, yte = train_test_split(
        X, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    rng = np.random.default_rng(seed)
    vtr = ptr + rng.uniform(size=ptr.shape)
    vte = pte + rng.uniform(size=pte.shape)
    s_tr = alpha + (1 - 2 * alpha) * vtr / _LEVELS
    logit_tr = np.log(s_tr) - np.log1p(-s_tr)
    mean, std = logit_tr.mean(0), logit_tr.std(0)
    std = np.where(std > 0, std, 1.0)
    xtr, ldtr = _forward(vtr, alpha, mean, std, _LEVELS)
    xte, ldte = _forward(vte, alpha, mean, std, _LEVELS)
    return DigitsDensity(
        x_train=xtr, x_test=xte, logdet_train=ldtr, logdet_test=ldte,
        pixels_train=ptr, pixels_test=pte, y_train=ytr, y_test=yte,
        mean=mean, std=std, alpha=float(alpha),
    )  # fmt: skip
