"""ndes.data.load_uea on every classification set aeon ships (asked of aeon, no allow-list)."""

import numpy as np
import pytest

import ndes.data as nd

aeon_datasets = pytest.importorskip("aeon.datasets")


def test_available_asks_aeon():
    names = nd.available_uea()
    # Univariate and multivariate, equal and unequal length, long and short.
    for name in ("ArrowHead", "BasicMotions", "JapaneseVowels", "PickupGestureWiimoteZ", "ACSF1"):
        assert name in names
    # Regression sets and forecasting series are not classification sets.
    assert "Covid3Month" not in names and "Airline" not in names
    assert list(names) == sorted(names)


@pytest.mark.parametrize("name", nd.available_uea())
@pytest.mark.parametrize("missing", [0.0, 0.3])
def test_every_shipped_set_loads_with_aeon_sizes(name, missing):
    d = nd.load_uea(name, missing=missing, seed=0)
    for split, which in ((d.train, "train"), (d.test, "test")):
        X, y = aeon_datasets.load_classification(name, split=which)
        assert split.values.shape[0] == len(X) == len(y)
        assert split.values.shape[2] == X[0].shape[0] == d.channels
        np.testing.assert_array_equal(split.lengths, [x.shape[1] for x in X])
        assert split.values.shape[1] == max(
            max(x.shape[1] for x in aeon_datasets.load_classification(name, split=s)[0])
            for s in ("train", "test")
        )
        assert set(np.unique(split.labels)) <= set(range(d.num_classes))
        assert np.all(np.diff(split.times, axis=1) > 0)
        observed = ~np.isnan(split.values)
        valid = np.arange(split.values.shape[1])[None, :] < split.lengths[:, None]
        assert not observed[~valid].any()  # nothing observed past a series' end
        frac = 1 - observed[valid].mean()
        if missing == 0.0:
            assert frac == 0.0
        else:
            assert 0.2 < frac < 0.35
    # Features build without NaN on every set (the first observation is always kept).
    feats = nd.cde_features(d.train.times, d.train.values)
    assert np.isfinite(feats).all()


def test_unknown_name_lists_what_aeon_ships():
    with pytest.raises(
        ValueError, match=r"unknown dataset 'Nope'; available offline .*aeon.*BasicMotions"
    ):
        nd.load_uea("Nope")
    with pytest.raises(ValueError, match="unknown dataset 'Airline'"):
        nd.load_uea("Airline")  # a forecasting series, not a classification set


def test_cde_features_warns_on_unstandardised_values():
    times = np.tile(np.arange(5.0), (2, 1))
    values = np.random.default_rng(0).normal(size=(2, 5, 1)) * 1e3
    with pytest.warns(UserWarning, match=r"values reach \|x\| = .*standardise them first"):
        nd.cde_features(times, values)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nd.cde_features(times, values / 1e3)  # standardised: silent
