"""Digits quality measures: Fréchet distance on closed forms, class shares, the classifier."""

from __future__ import annotations

import jax.random as jr
import numpy as np
import pytest

import ndes
from ndes.diffusion import DigitsClassifier, class_distribution, digits_quality, frechet_distance


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    # exact: the sample means/covariances enter the formula, so a shift by c adds |c|^2 and a
    # scaling by s gives (|mu|^2 + Tr C)(1 - s)^2 (commuting covariances)
    x = rng.normal(size=(500, 3))
    c = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(frechet_distance(x, x + c), c @ c, rtol=1e-9)
    tr = np.trace(np.cov(x, rowvar=False)) + np.sum(x.mean(0) ** 2)
    np.testing.assert_allclose(frechet_distance(x, 3.0 * x), tr * (1 - 3.0) ** 2, rtol=1e-9)
    assert abs(frechet_distance(x, x)) < 1e-9
    # population: N(0, diag(1, 4)) vs N(1, I): |mu|^2 + sum (sqrt(a) - sqrt(b))^2 = 2 + 1
    a = rng.normal(size=(200000, 2)) * np.array([1.0, 2.0])
    b = 1.0 + rng.normal(size=(200000, 2))
    np.testing.assert_allclose(frechet_distance(a, b), 3.0, rtol=0.02)


def test_class_distribution():
    out = class_distribution(np.array([0, 1, 2, 3]), 4)
    np.testing.assert_allclose(out["shares"], 0.25)
    np.testing.assert_allclose(out["entropy_bits"], 2.0)
    out = class_distribution(np.array([5, 5, 5, 1]))
    assert out["max_share"] == 0.75 and out["min_share"] == 0.0
    np.testing.assert_allclose(out["entropy_bits"], -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))


def test_classifier_separates_real_from_noise():
    dd = ndes.data.load_digits_density()
    clf = DigitsClassifier.fit(dd.pixels_train, dd.y_train, hidden=32, max_iter=200)
    assert np.mean(np.asarray(clf.predict(dd.pixels_test)) == dd.y_test) > 0.9
    assert clf.features(dd.pixels_test[:5]).shape == (5, 32)
    # the dequantized, transformed test set maps back to its own pixels: distance ~ 0
    real = digits_quality(clf, dd.to_pixels(dd.x_test), dd.pixels_test)
    assert abs(real["fd"]) < 1e-6 and real["entropy_bits"] > 3.2
    noise = np.random.default_rng(0).uniform(0, 17, (300, 64))
    bad = digits_quality(clf, noise, dd.pixels_test)
    train = digits_quality(clf, dd.pixels_train[:300], dd.pixels_test)
    assert bad["fd"] > 10 * train["fd"] > 0
    samples = ndes.diffusion.VPSDE().prior_sample(jr.key(0), (4, 64))
    assert digits_quality(clf, dd.to_pixels(np.asarray(samples)), dd.pixels_test)["fd"] > 0


def test_bad_input():
    with pytest.raises(ValueError, match="same k"):
        frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(np.zeros((1, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        class_distribution(np.zeros((2, 2), int))
    with pytest.raises(ValueError, match=r"must lie in 0..9"):
        class_distribution(np.array([10]))
    with pytest.raises(ValueError, match=r"shape \(n, 64\)"):
        DigitsClassifier.fit(np.zeros((5, 63)), np.zeros(5, int))
    with pytest.raises(ValueError, match="one per image"):
        DigitsClassifier.fit(np.zeros((5, 64)), np.zeros(4, int))
    with pytest.raises(ValueError, match="hidden=0"):
        DigitsClassifier.fit(np.zeros((5, 64)), np.zeros(5, int), hidden=0)
    clf = DigitsClassifier.fit(np.eye(64)[:20] * 16, np.arange(20) % 10, hidden=4, max_iter=5)
    with pytest.raises(ValueError, match="NaN/inf"):
        digits_quality(clf, np.full((3, 64), np.nan), np.zeros((3, 64)))
