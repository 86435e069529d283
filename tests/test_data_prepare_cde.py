"""ndes.data.prepare_cde: the one UEA preparation for neural CDEs (config, example, users)."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ndes
import ndes.data as nd


def _split(n=4, length=6, c=2, seed=0):
    """A padded split as `load_uea` returns it: series 1 ends early, a value missing."""
    rng = np.random.default_rng(seed)
    times = np.tile(np.arange(length, dtype=float), (n, 1))
    values = rng.normal(size=(n, length, c))
    lengths = np.array([length, 3] + [length] * (n - 2))
    values[1, 3:] = np.nan  # past series 1's end
    values[0, 2, 1] = np.nan  # a dropped observation
    return nd.Split(times, values, lengths, np.arange(n) % 3)


def test_prepare_cde_is_cde_features_with_defaults_and_hermite_coefficients():
    split = _split()
    out = nd.prepare_cde(split)
    n, length, c = split.values.shape
    dtype = np.dtype(jnp.result_type(float))
    assert isinstance(out, nd.CDEData) and out.channels == 2 * c + 1
    assert out.times.dtype == dtype and out.t1.dtype == dtype and out.labels.dtype == np.int32
    assert all(k.shape == (n, length - 1, 2 * c + 1) and k.dtype == dtype for k in out.coeffs)
    np.testing.assert_array_equal(out.t1, [5.0, 2.0, 5.0, 5.0])  # each series' last point
    np.testing.assert_array_equal(out.labels, [0, 1, 2, 0])
    # The path interpolates cde_features with its default scales at every observation time.
    feats = nd.cde_features(split.times, split.values)
    assert feats[:, -1, 0].max() == 1.0 and feats[0, -1, c + 1] == 1.0  # time, count: O(1)
    path = jax.vmap(lambda t, k: diffrax.CubicInterpolation(t, k))(out.times, out.coeffs)
    at = jax.vmap(lambda p, t: jax.vmap(p.evaluate)(t))(path, out.times)
    np.testing.assert_allclose(at, feats, rtol=1e-6, atol=1e-6)


def test_prepare_cde_passes_scales_and_refuses_an_all_nan_series():
    split = _split()
    scaled = nd.prepare_cde(split, time_scale=10.0, count_scale=12.0)
    feats = nd.cde_features(split.times, split.values, time_scale=10.0, count_scale=12.0)
    path = diffrax.CubicInterpolation(scaled.times[0], tuple(k[0] for k in scaled.coeffs))
    np.testing.assert_allclose(path.evaluate(scaled.times[0, -1]), feats[0, -1], atol=1e-6)
    values = split.values.copy()
    values[2] = np.nan
    with pytest.raises(ValueError, match="series 2 is entirely NaN"):
        nd.prepare_cde(nd.Split(split.times, values, split.lengths, split.labels))


def test_prepare_cde_batch_trains_a_cde_classifier(getkey):
    data = nd.prepare_cde(_split())
    # The default solve is fixed-step: ErrorEstimate then needs its tolerances explicitly.
    cde = ndes.NeuralCDE(data.channels, 4, 3, 8, 1, key=getkey())
    model = ndes.models.CDEClassifier(cde)
    res = ndes.fit(
        model,
        data,
        ndes.train.classification_loss,
        optax.adam(1e-2),
        key=getkey(),
        batch_size=2,
        steps=2,
        regularizers=(ndes.ErrorEstimate(0.1, rtol=1e-3, atol=1e-6),),
        progress=False,
    )
    assert [r["step"] for r in res.history] == [1, 2]
    rec = res.history[-1]
    assert np.isfinite(rec["loss"]) and rec["penalty_terms"]["ErrorEstimate"] > 0
    assert 0.0 <= rec["accuracy"] <= 100.0
