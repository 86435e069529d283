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


# ---- missingness and features ---------------------------------------------------------------


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
    assert feats.shape == (20, 15, 7) and feats.dtype == np.float64
    assert not np.isnan(feats).any()
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


def test_diffrax_hermite_gives_nan_for_all_nan_channel():
    # Why hermite_coefficients refuses NaN: diffrax fills gaps itself, but not an empty channel.
    ys = jnp.stack([jnp.arange(5.0), jnp.full(5, jnp.nan)], axis=-1)
    coeffs = diffrax.backward_hermite_coefficients(jnp.arange(5.0), ys)
    assert jnp.isnan(coeffs[0][:, 1]).all()
    with pytest.raises(ValueError, match="channel 1 of series 0 is entirely NaN"):
        nd.hermite_coefficients(jnp.arange(5.0)[None], ys[None])


def test_bad_inputs():
    times, values, lengths = _toy()
    with pytest.raises(ValueError, match="missing fraction"):
        nd.drop_observations(values, lengths, 1.0)
    with pytest.raises(ValueError, match="missing fraction"):
        nd.drop_observations(values, lengths, -0.1)
    with pytest.raises(ValueError, match="lengths"):
        nd.drop_observations(values, lengths[:3], 0.3)
    bad = values.copy()
    bad[2, :, 1] = np.nan
    with pytest.raises(ValueError, match="channel 1 of series 2 is entirely NaN"):
        nd.cde_features(times, bad)
    bad[4] = np.nan
    with pytest.raises(ValueError, match="series 4 is entirely NaN"):
        nd.cde_features(times, bad)
    with pytest.raises(ValueError, match="strictly increasing"):
        nd.cde_features(times[:, ::-1], values)
    repeated = times.copy()
    repeated[3, 5] = repeated[3, 4]
    with pytest.raises(ValueError, match=r"strictly increasing .*series 3"):
        nd.cde_features(repeated, values)
    nan_times = times.copy()
    nan_times[1, 2] = np.nan
    with pytest.raises(ValueError, match="series 1 contain NaN"):
        nd.cde_features(nan_times, values)
    with pytest.raises(ValueError, match="shape"):
        nd.cde_features(times[:, :3], values)
    with pytest.raises(ValueError, match=r"shape \(N, L, C\)"):
        nd.cde_features(times, values[..., 0])
    inf = values.copy()
    inf[0, 3, 0] = np.inf
    with pytest.raises(ValueError, match="inf"):
        nd.cde_features(times, inf)


@pytest.mark.parametrize("fn", [nd.hermite_coefficients, nd.linear_coefficients])
def test_coefficients_bad_inputs(fn):
    times, values, _ = _toy(n=5, length=6, c=2)
    feats = nd.cde_features(times, values)
    raw = values.copy()
    raw[1, 2] = np.nan  # missing value: must go through cde_features
    with pytest.raises(ValueError, match="build them with cde_features"):
        fn(times, raw)
    raw[3, :, 0] = np.nan
    with pytest.raises(ValueError, match="channel 0 of series 3 is entirely NaN"):
        fn(times, raw)
    raw[1] = np.nan
    with pytest.raises(ValueError, match="series 1 is entirely NaN"):
        fn(times, raw)
    with pytest.raises(ValueError, match="strictly increasing"):
        fn(times[:, ::-1], feats)
    with pytest.raises(ValueError, match="shape"):
        fn(times[:3], feats)
    with pytest.raises(ValueError, match=r"shape \(N, L, D\)"):
        fn(times, feats[0])
    with pytest.raises(ValueError, match="at least 2 time points"):
        fn(times[:, :1], feats[:, :1])
    inf = feats.copy()
    inf[0, 0, 1] = -np.inf
    with pytest.raises(ValueError, match="inf"):
        fn(times, inf)
    out = fn(times, feats)
    assert all(not jnp.isnan(c).any() for c in jax.tree.leaves(out))


# ---- synthetic ------------------------------------------------------------------------------


def test_spirals():
    ts = jnp.linspace(0.0, 2.0, 6)
    y0, ys = nd.spirals(jax.random.key(0), 8, ts)
    assert y0.shape == (8, 2) and ys.shape == (8, 6, 2) and ys.dtype == ts.dtype
    np.testing.assert_array_equal(ys[:, 0], y0)
    r = jnp.linalg.norm(y0, axis=-1)
    assert (r >= 0.5).all() and (r < 1.3).all()
    np.testing.assert_array_equal(ys, nd.spirals(jax.random.key(0), 8, ts)[1])
    assert not np.array_equal(ys, nd.spirals(jax.random.key(1), 8, ts)[1])
    with pytest.raises(ValueError, match=r"spirals: num=0 must be an int >= 1"):
        nd.spirals(jax.random.key(0), 0, ts)
    with pytest.raises(ValueError, match="strictly increasing"):
        nd.spirals(jax.random.key(0), 2, ts[::-1])
    with pytest.raises(ValueError, match="radius"):
        nd.spirals(jax.random.key(0), 2, ts, radius=(1.0, 0.5))


@pytest.fixture(scope="module")
def lv_ode():
    ts = jnp.linspace(0.0, 5.0, 11)
    return ts, *nd.lotka_volterra(jax.random.key(0), 16, ts)


def test_lotka_volterra_ode(lv_ode):
    ts, y0, ys = lv_ode
    assert y0.shape == (16, 2) and ys.shape == (16, 11, 2) and ys.dtype == ts.dtype
    np.testing.assert_array_equal(ys[:, 0], y0)
    assert (y0 >= 0.5).all() and (y0 < 3.0).all()
    # The first integral V = delta x - gamma log x + beta y - alpha log y is conserved.
    alpha, beta, gamma, delta = 1.5, 1.0, 3.0, 1.0
    x, y = ys[..., 0], ys[..., 1]
    V = delta * x - gamma * jnp.log(x) + beta * y - alpha * jnp.log(y)
    assert float(jnp.abs(V - V[:, :1]).max()) < 1e-7
    np.testing.assert_array_equal(ys, nd.lotka_volterra(jax.random.key(0), 16, ts)[1])


def test_lotka_volterra_sde(lv_ode):
    ts, y0_ode, ys_ode = lv_ode
    kw = dict(noise=0.2, dt=1e-2)
    y0, ys = nd.lotka_volterra(jax.random.key(0), 16, ts, **kw)
    assert ys.shape == (16, 11, 2) and ys.dtype == ts.dtype
    np.testing.assert_array_equal(y0, y0_ode)  # same key: same initial states
    np.testing.assert_allclose(ys[:, 0], y0, rtol=1e-12)
    assert (ys > 0).all() and jnp.isfinite(ys).all()
    np.testing.assert_array_equal(ys, nd.lotka_volterra(jax.random.key(0), 16, ts, **kw)[1])
    assert not np.allclose(ys, nd.lotka_volterra(jax.random.key(1), 16, ts, **kw)[1])
    assert float(jnp.abs(ys - ys_ode).max()) > 0.05  # the noise matters
    # Vanishing noise recovers the ODE up to the fixed-step (order-2) discretisation error.
    _, tiny = nd.lotka_volterra(jax.random.key(0), 16, ts, noise=1e-9, dt=1e-2)
    assert float(jnp.abs(tiny - ys_ode).max()) < 2e-2


def test_lotka_volterra_bad_inputs():
    ts = jnp.linspace(0.0, 1.0, 3)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="params must be four positive rates"):
        nd.lotka_volterra(key, 2, ts, params=(1.0, -1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="params must be four positive rates"):
        nd.lotka_volterra(key, 2, ts, params=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="noise must be >= 0"):
        nd.lotka_volterra(key, 2, ts, noise=-0.1)
    with pytest.raises(ValueError, match="y0_range"):
        nd.lotka_volterra(key, 2, ts, y0_range=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"lotka_volterra: dt=0.0 must be a positive finite"):
        nd.lotka_volterra(key, 2, ts, noise=0.1, dt=0.0)
    with pytest.raises(ValueError, match=r"dt=inf must be a positive finite number \(the"):
        nd.lotka_volterra(key, 2, ts, noise=0.1, dt=float("inf"))
    with pytest.raises(ValueError, match="params must be four positive rates"):
        nd.lotka_volterra(key, 2, ts, params=(1.0, "1", 1.0, 1.0))
    with pytest.raises(ValueError, match="noise must be >= 0"):
        nd.lotka_volterra(key, 2, ts, noise=float("nan"))
    with pytest.raises(ValueError, match="at least 2 times"):
        nd.lotka_volterra(key, 2, ts[:1])
    with pytest.raises(ValueError, match=r"lotka_volterra: num=2.5 must be an int >= 1"):
        nd.lotka_volterra(key, 2.5, ts)


def test_irregular_subsampling_pipeline(lv_ode):
    # Synthetic trajectories -> seeded irregular observations -> NaN-free CDE coefficients.
    ts, _, ys = lv_ode
    values = np.asarray(ys)
    n, length, _ = values.shape
    times = np.tile(np.asarray(ts), (n, 1))
    dropped = nd.drop_observations(values, np.full(n, length), 0.5, seed=0)
    assert np.isnan(dropped).any()
    feats = nd.cde_features(times, dropped)
    coeffs = nd.hermite_coefficients(times, feats)
    assert feats.shape == (n, length, 5)
    assert all(not jnp.isnan(c).any() for c in coeffs)
    ou = nd.ornstein_uhlenbeck(jax.random.key(0), n, ts)[..., None]
    ou_feats = nd.cde_features(times, nd.drop_observations(ou, np.full(n, length), 0.3))
    assert ou_feats.shape == (n, length, 3) and not np.isnan(ou_feats).any()


def test_ou_deterministic_and_stationary():
    ts = jnp.linspace(0.0, 5.0, 11)
    a = nd.ornstein_uhlenbeck(jax.random.key(0), 4000, ts, theta=2.0, mu=1.0, sigma=0.6)
    b = nd.ornstein_uhlenbeck(jax.random.key(0), 4000, ts, theta=2.0, mu=1.0, sigma=0.6)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4000, 11) and a.dtype == ts.dtype
    var = 0.6**2 / 4
    # 4000 samples: mean std error sqrt(var/4000) ≈ 0.0047, so 5 sigma ≈ 0.024;
    # variance relative error ≈ 5 * sqrt(2/4000) ≈ 0.11.
    assert abs(float(a[:, -1].mean()) - 1.0) < 0.024
    assert abs(float(a[:, -1].var()) / var - 1) < 0.12
    with pytest.raises(ValueError, match="strictly increasing"):
        nd.ornstein_uhlenbeck(jax.random.key(0), 3, ts[::-1])
    with pytest.raises(ValueError, match=r"ornstein_uhlenbeck: sigma=0.0 must be a positive"):
        nd.ornstein_uhlenbeck(jax.random.key(0), 3, ts, sigma=0.0)
    with pytest.raises(ValueError, match=r"theta=-1 must be a positive finite number \(the mean"):
        nd.ornstein_uhlenbeck(jax.random.key(0), 3, ts, theta=-1)
    with pytest.raises(ValueError, match="num_paths"):
        nd.ornstein_uhlenbeck(jax.random.key(0), -1, ts)
    assert nd.ornstein_uhlenbeck(jax.random.key(0), 2, jnp.arange(4)).dtype.kind == "f"


# ---- real data ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, n_train, n_test, length, classes",
    [("ArrowHead", 36, 175, 251, 3), ("GunPoint", 50, 150, 150, 2)],
)
def test_uea_univariate(name, n_train, n_test, length, classes):
    pytest.importorskip("aeon")
    d = nd.load_uea(name, missing=0.3, seed=0)
    assert d.train.values.shape == (n_train, length, 1)
    assert d.test.values.shape == (n_test, length, 1)
    assert d.channels == 1 and d.num_classes == classes
    for split in (d.train, d.test):
        assert split.values.dtype == np.float64 and split.times.dtype == np.float64
        assert (split.lengths == length).all()
        assert set(np.unique(split.labels)) == set(range(classes))
    assert d.mean.dtype == np.float64 and d.std.dtype == np.float64
    # Standardised with train statistics: train is centred and unit-variance.
    assert abs(np.nanmean(d.train.values)) < 1e-10
    assert abs(np.nanstd(d.train.values) - 1) < 1e-10
    # About 30% of each series dropped; same seed -> same mask, other seed -> other mask.
    assert abs(np.isnan(d.train.values).mean() - 0.3) < 0.01
    again = nd.load_uea(name, missing=0.3, seed=0)
    np.testing.assert_array_equal(d.train.values, again.train.values)
    np.testing.assert_array_equal(d.test.values, again.test.values)
    other = nd.load_uea(name, missing=0.3, seed=1)
    assert (np.isnan(other.train.values) != np.isnan(d.train.values)).any()
    feats = nd.cde_features(d.test.times, d.test.values)
    assert not np.isnan(feats).any()


def test_uea_standardises_with_train_statistics_only(monkeypatch):
    aeon_datasets = pytest.importorskip("aeon.datasets")
    base = nd.load_uea("GunPoint")
    real = aeon_datasets.load_classification

    def shifted_test(name, split=None, **kw):
        X, y = real(name, split=split, **kw)
        return (X * 100.0 + 7.0 if split == "test" else X), y

    monkeypatch.setattr(aeon_datasets, "load_classification", shifted_test)
    moved = nd.load_uea("GunPoint")
    np.testing.assert_array_equal(moved.mean, base.mean)
    np.testing.assert_array_equal(moved.std, base.std)
    np.testing.assert_array_equal(moved.train.values, base.train.values)
    assert not np.allclose(moved.test.values, base.test.values)
    raw = nd.load_uea("GunPoint", standardise=False)
    np.testing.assert_allclose((raw.train.values - base.mean) / base.std, base.train.values)


def test_uea_bad_inputs():
    with pytest.raises(ValueError, match="unknown dataset 'Nope'; available offline"):
        nd.load_uea("Nope")
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"missing fraction must lie in \[0, 1\)"):
            nd.load_uea("GunPoint", missing=bad)


def test_uea_max_length_keeps_every_stride_th_point_of_the_full_series():
    pytest.importorskip("aeon")
    full = nd.load_uea("GunPoint", missing=0.3, seed=2)  # length 150
    sub = nd.load_uea("GunPoint", missing=0.3, seed=2, max_length=64)
    assert full.stride == 1 and sub.stride == 3  # ceil(150 / 64)
    for f, s in ((full.train, sub.train), (full.test, sub.test)):
        assert s.values.shape == (f.values.shape[0], 50, 1)
        # the drop mask and the statistics are those of the full series
        np.testing.assert_array_equal(s.values, f.values[:, ::3], strict=True)
        np.testing.assert_array_equal(s.times, np.tile(np.arange(50.0), (len(s.labels), 1)))
        np.testing.assert_array_equal(s.labels, f.labels)
    np.testing.assert_array_equal(sub.mean, full.mean)
    # unequal lengths: a series of length l keeps ceil(l / stride) points
    jv = nd.load_uea("JapaneseVowels", max_length=10)  # padded length 29 -> stride 3
    ref = nd.load_uea("JapaneseVowels")
    assert jv.stride == 3 and jv.train.values.shape[1] == 10
    np.testing.assert_array_equal(jv.train.lengths, -(-ref.train.lengths // 3))
    last = jv.train.values[np.arange(270), jv.train.lengths - 1]
    assert not np.isnan(last).any()  # the last kept point of each series is a real one
    assert nd.load_uea("JapaneseVowels", max_length=29).stride == 1  # not longer: unchanged
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match=r"load_uea: max_length=.* must be an int >= 2"):
            nd.load_uea("GunPoint", max_length=bad)


def test_japanese_vowels():
    pytest.importorskip("aeon")
    d = nd.load_uea("JapaneseVowels", missing=0.3)
    assert d.train.values.shape[0] == 270 and d.test.values.shape[0] == 370
    assert d.channels == 12 and d.num_classes == 9
    assert d.train.lengths.min() >= 7 and d.train.lengths.max() <= 29
    assert abs(np.nanmean(d.train.values)) < 1e-8
    feats = nd.cde_features(d.train.times, d.train.values)
    assert not np.isnan(feats).any()


def test_digits():
    pytest.importorskip("sklearn")
    Xtr, ytr, Xte, yte = nd.load_digits(seed=0)
    assert Xtr.shape[0] + Xte.shape[0] == 1797 and Xtr.shape[1] == 64 and Xtr.dtype == np.float32
    assert len(np.unique(ytr)) == 10
