import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ndes.data as nd


def _toy(n=20, length=15, c=3, seed=0):
    rng = np.random.default_rng(seed)
    times = np.tile(np.arange(length, dtype=float), (n, 1))
    return times, rng.normal(size=(n, length, c)), np.full(n, length)


@pytest.mark.parametrize("frac", [0.0, 0.3, 0.5, 0.7])
def test_missing_and_features_nan_free(frac):
    times, values, lengths = _toy()
    dropped = nd.drop_observations(values, lengths, frac, seed=1)
    assert np.isclose(np.isnan(dropped[..., 0]).mean(), frac, atol=1 / 15)
    assert not np.isnan(dropped[:, 0]).any()  # first observation always kept
    np.testing.assert_array_equal(
        np.isnan(dropped), np.isnan(nd.drop_observations(values, lengths, frac, seed=1))
    )
    feats = nd.cde_features(times, dropped)
    assert feats.shape == (20, 15, 7) and not np.isnan(feats).any()
    coeffs = nd.hermite_coefficients(times, feats)
    assert all(not jnp.isnan(c).any() for c in coeffs)
    interp = diffrax.CubicInterpolation(jnp.asarray(times[0]), jax.tree.map(lambda c: c[0], coeffs))
    obs = jax.vmap(interp.evaluate)(jnp.asarray(times[0]))
    np.testing.assert_allclose(obs, feats[0], atol=1e-10)


def test_missing_seeds_differ():
    _, values, lengths = _toy()
    a = np.isnan(nd.drop_observations(values, lengths, 0.5, seed=0))
    b = np.isnan(nd.drop_observations(values, lengths, 0.5, seed=1))
    assert (a != b).any()


def test_bad_inputs():
    times, values, lengths = _toy()
    with pytest.raises(ValueError, match="missing fraction"):
        nd.drop_observations(values, lengths, 1.0)
    with pytest.raises(ValueError, match="lengths"):
        nd.drop_observations(values, lengths[:3], 0.3)
    bad = values.copy()
    bad[2, :, 1] = np.nan
    with pytest.raises(ValueError, match="entirely NaN"):
        nd.cde_features(times, bad)
    with pytest.raises(ValueError, match="strictly increasing"):
        nd.cde_features(times[:, ::-1], values)
    with pytest.raises(ValueError, match="shape"):
        nd.cde_features(times[:, :3], values)


def test_ou_deterministic_and_stationary():
    ts = jnp.linspace(0.0, 5.0, 11)
    a = nd.ornstein_uhlenbeck(jax.random.key(0), 4000, ts, theta=2.0, mu=1.0, sigma=0.6)
    b = nd.ornstein_uhlenbeck(jax.random.key(0), 4000, ts, theta=2.0, mu=1.0, sigma=0.6)
    np.testing.assert_array_equal(a, b)
    var = 0.6**2 / 4
    # 4000 samples: mean std error sqrt(var/4000) ≈ 0.0047, so 5 sigma ≈ 0.024; variance rel. error ~ 5*sqrt(2/4000)
    assert abs(float(a[:, -1].mean()) - 1.0) < 0.024
    assert abs(float(a[:, -1].var()) / var - 1) < 0.12


def test_japanese_vowels():
    pytest.importorskip("aeon")
    d = nd.load_uea("JapaneseVowels", missing=0.3)
    assert d.train.values.shape[0] == 270 and d.test.values.shape[0] == 370
    assert d.channels == 12 and d.num_classes == 9
    assert d.train.lengths.min() >= 7 and d.train.lengths.max() <= 29
    assert abs(np.nanmean(d.train.values)) < 1e-8
    feats = nd.cde_features(d.train.times, d.train.values)
    assert not np.isnan(feats).any()
    with pytest.raises(ValueError, match="available offline"):
        nd.load_uea("Nope")


def test_digits():
    pytest.importorskip("sklearn")
    Xtr, ytr, Xte, yte = nd.load_digits(seed=0)
    assert Xtr.shape[0] + Xte.shape[0] == 1797 and Xtr.shape[1] == 64 and Xtr.dtype == np.float32
    assert len(np.unique(ytr)) == 10
