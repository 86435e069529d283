r"""Sample quality on scikit-learn's 8x8 digits with no download: a small classifier trained on
real digits, the class distribution it assigns to samples, and the Fréchet distance in its
hidden-layer feature space (an FID, Heusel et al. 2017, with a digits MLP in place of
Inception)."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._checks import check_int

__all__ = ["DigitsClassifier", "frechet_distance", "class_distribution", "digits_quality"]

_MAX_PIXEL = 16.0


def _pixels(pixels, owner: str) -> np.ndarray:
    p = np.asarray(pixels, np.float64)
    if p.ndim != 2 or p.shape[1] != 64:
        raise ValueError(
            f"{owner}: pixels must have shape (n, 64) (8x8 digits, values in 0..16); got "
            f"{p.shape}. Map model samples back with DigitsDensity.to_pixels first."
        )
    return p


class DigitsClassifier(eqx.Module):
    r"""A one-hidden-layer ReLU MLP on pixels scaled to $[0, 1]$ (pixel / 16), trained on real
    digits by scikit-learn's `MLPClassifier` (Adam, L2 penalty `alpha`) and frozen as arrays.

    `features(pixels)` is the hidden layer $h = \mathrm{ReLU}(W_1 p/16 + b_1)$ (shape
    `(n, hidden)`): the space of the Fréchet distance. `logits` / `predict` give the class
    scores / labels. Build it with `DigitsClassifier.fit(pixels, labels)`.

    **Fields:** `w1` `(64, hidden)`, `b1` `(hidden,)`, `w2` `(hidden, 10)`, `b2` `(10,)`.
    """

    w1: Float[Array, "64 h"]
    b1: Float[Array, " h"]
    w2: Float[Array, "h c"]
    b2: Float[Array, " c"]

    @classmethod
    def fit(
        cls,
        pixels: Int[ArrayLike, "n 64"],
        labels: Int[ArrayLike, " n"],
        *,
        hidden: int = 64,
        alpha: float = 1e-3,
        max_iter: int = 500,
        seed: int = 0,
    ) -> DigitsClassifier:
        """Train on real digit pixels `(n, 64)` (0..16) and their `labels` `(n,)` (0..9).

        **Arguments:** `hidden` (feature width, default 64), `alpha` (L2 weight),
        `max_iter` (Adam epochs), `seed`. **Returns:** the trained classifier."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        p = _pixels(pixels, "DigitsClassifier.fit")
        y = np.asarray(labels)
        if y.shape != (p.shape[0],):
            raise ValueError(
                f"DigitsClassifier.fit: labels must have shape ({p.shape[0]},), one per image; "
                f"got {y.shape}."
            )
        hidden = check_int(hidden, "hidden", "DigitsClassifier.fit")
        clf = MLPClassifier((hidden,), alpha=alpha, max_iter=max_iter, random_state=seed, tol=1e-6)
        with warnings.catch_warnings():  # the tolerance is tight on purpose: all epochs run
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(p / _MAX_PIXEL, y)
        (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_
        return cls(*(jnp.asarray(a, jnp.float32) for a in (w1, b1, w2, b2)))

    def features(self, pixels: Float[ArrayLike, "n 64"]) -> Float[Array, "n h"]:
        """The hidden-layer activations of `pixels` `(n, 64)` (0..16)."""
        p = jnp.asarray(_pixels(pixels, "DigitsClassifier.features"), self.w1.dtype)
        return jnp.maximum(p / _MAX_PIXEL @ self.w1 + self.b1, 0.0)

    def logits(self, pixels: Float[ArrayLike, "n 64"]) -> Float[Array, "n c"]:
        """Class scores `(n, 10)` of `pixels` `(n, 64)`."""
        return self.features(pixels) @ self.w2 + self.b2

    def predict(self, pixels: Float[ArrayLike, "n 64"]) -> Int[Array, " n"]:
        """Predicted labels `(n,)`."""
        return jnp.argmax(self.logits(pixels), axis=-1)


def frechet_distance(x: Float[ArrayLike, "n k"], y: Float[ArrayLike, "m k"]) -> float:
    r"""The Fréchet (2-Wasserstein) distance between Gaussians fitted to two feature sets
    (Dowson & Landau 1982; the FID of Heusel et al., "GANs trained by a two time-scale update
    rule converge to a local Nash equilibrium", NeurIPS 2017, eq. 6):

    $$d^2 = \lVert\mu_x - \mu_y\rVert^2 + \operatorname{Tr}\big(\Sigma_x + \Sigma_y
    - 2(\Sigma_x^{1/2}\Sigma_y\Sigma_x^{1/2})^{1/2}\big),$$

    computed in float64 by symmetric eigendecompositions (negative round-off eigenvalues
    clipped to 0). Unbiased covariances ($n-1$). `x` and `y` are the two feature sets,
    `(n, k)` and `(m, k)`, each with at least 2 rows. **Returns:** $d^2$ (squared feature unit; the
    FID convention reports $d^2$). It is biased upward for small sets: compare with a
    data-vs-data floor of the same sizes."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"frechet_distance: x and y must be feature sets (n, k) and (m, k) with the same k; "
            f"got {a.shape} and {b.shape}."
        )
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("frechet_distance: each set needs at least 2 rows for a covariance.")
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    ev, vec = np.linalg.eigh(ca)
    sqrt_a = (vec * np.sqrt(np.clip(ev, 0, None))) @ vec.T
    mid = sqrt_a @ cb @ sqrt_a
    tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((mid + mid.T) / 2), 0, None)))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(ca) + np.trace(cb) - 2 * tr_sqrt)


def class_distribution(labels: Int[ArrayLike, " n"], num_classes: int = 10) -> dict:
    r"""The class shares of predicted `labels` `(n,)` in `0..num_classes-1`.

    **Returns:** a dict with `shares` `(num_classes,)` (sum 1), `entropy_bits` (the Shannon
    entropy of the shares, at most $\log_2$ `num_classes` = 3.32 bits for 10 balanced classes;
    low means mode collapse), `max_share` (the most frequent class's share; 0.1 when
    balanced) and `min_share`."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(
            f"class_distribution: labels must be a non-empty 1-D array; got {y.shape}."
        )
    if np.any(y < 0) or np.any(y >= num_classes):
        raise ValueError(f"class_distribution: labels must lie in 0..{num_classes - 1}.")
    shares = np.bincount(y.astype(int), minlength=num_classes) / y.size
    nz = shares[shares > 0]
    return {
        "shares": shares,
        "entropy_bits": float(-np.sum(nz * np.log2(nz))),
        "max_share": float(shares.max()),
        "min_share": float(shares.min()),
    }


def digits_quality(
    classifier: DigitsClassifier,
    sample_pixels: Float[ArrayLike, "n 64"],
    reference_pixels: Float[ArrayLike, "m 64"],
) -> dict:
    r"""Quality of sampled digits against held-out real ones: `sample_pixels` are mapped to
    discrete pixels by $\lfloor\cdot\rfloor$ clipped to 0..16 (the inverse of uniform
    dequantization), then classified by `classifier` (a trained `DigitsClassifier`), as are
    the `reference_pixels` (held-out real digits, pixel values 0..16).

    **Returns:** a dict with `fd` (`frechet_distance` of the classifier's hidden features,
    samples vs `reference_pixels`) and the `class_distribution` of the samples'
    predicted labels (`entropy_bits`, `max_share`, `min_share`, `shares`)."""
    s = _pixels(sample_pixels, "digits_quality")
    if not np.all(np.isfinite(s)):
        raise ValueError("digits_quality: sample_pixels contain NaN/inf (a diverged sampler).")
    s = np.clip(np.floor(s), 0, _MAX_PIXEL)
    r = _pixels(reference_pixels, "digits_quality")
    out = class_distribution(np.asarray(classifier.predict(s)), int(classifier.b2.shape[0]))
    out["fd"] = frechet_distance(classifier.features(s), classifier.features(r))
    return out
