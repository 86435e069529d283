"""`ndes.data.logsig_windows`: the log-ODE method's windowed log-signatures (float64 numerics)."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ndes
import ndes.data as nd


def _levy_area_chen(segment):
    """The depth-2 signature of a piecewise-linear path by Chen's identity, antisymmetrised:
    an independent reference for the areas (O(L^2) double loop)."""
    d = np.diff(segment, axis=0)
    sig2 = np.zeros((segment.shape[1],) * 2)
    for k in range(len(d)):
        sig2 += 0.5 * np.outer(d[k], d[k])
        for m in range(k + 1, len(d)):
            sig2 += np.outer(d[k], d[m])
    area = 0.5 * (sig2 - sig2.T)
    i, j = np.triu_indices(segment.shape[1], k=1)
    return area[i, j]


def test_unit_square_loop_has_area_one():
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], float)[None]
    times, path, lengths = nd.logsig_windows(np.arange(5.0)[None], square, stride=4)
    np.testing.assert_array_equal(times, [[0.0, 4.0]])
    # the loop returns to its start (increment 0) and encloses area +1 counter-clockwise
    np.testing.assert_allclose(path[0, -1], [0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_array_equal(lengths, [2])
    _, reverse, _ = nd.logsig_windows(np.arange(5.0)[None], square[:, ::-1], stride=4)
    np.testing.assert_allclose(reverse[0, -1, 2], -1.0, atol=1e-12)  # clockwise: -1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 3),
    length=st.integers(2, 13),
    channels=st.integers(1, 4),
    stride=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_areas_match_chen_identity(n, length, channels, stride, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, length, channels))
    times = np.cumsum(rng.uniform(0.1, 1.0, size=(n, length)), axis=1)
    t, path, lengths = nd.logsig_windows(times, x, stride=stride)
    knots = np.unique(np.append(np.arange(0, length, stride), length - 1))
    pairs = channels * (channels - 1) // 2
    assert path.shape == (n, len(knots), channels + pairs) and path.dtype == np.float64
    np.testing.assert_array_equal(t, times[:, knots])
    np.testing.assert_array_equal(path[..., :channels], x[:, knots])  # level 1: X at the knots
    np.testing.assert_array_equal(lengths, np.full(n, len(knots)))
    for b in range(n):
        total = np.zeros(pairs)
        np.testing.assert_array_equal(path[b, 0, channels:], total)
        for w in range(len(knots) - 1):
            total = total + _levy_area_chen(x[b, knots[w] : knots[w + 1] + 1])
            np.testing.assert_allclose(path[b, w + 1, channels:], total, atol=1e-10)


def test_depth_one_is_subsampling_and_stride_one_adds_no_area():
    times = np.tile(np.arange(10.0), (2, 1))
    x = np.random.default_rng(0).normal(size=(2, 10, 3))
    _, p1, _ = nd.logsig_windows(times, x, stride=4, depth=1)
    np.testing.assert_array_equal(p1, x[:, [0, 4, 8, 9]])
    _, p2, _ = nd.logsig_windows(times, x, stride=1)
    np.testing.assert_array_equal(p2[..., :3], x)
    np.testing.assert_allclose(p2[..., 3:], 0.0, atol=1e-15)  # a straight piece has no area


def test_padding_after_a_series_end_adds_nothing():
    """UEA padding: cde_features holds a short series constant after its end; its windows
    past the end carry no log-signature and its new length ends at the covering knot."""
    times = np.tile(np.arange(12.0), (2, 1))
    values = np.random.default_rng(1).normal(size=(2, 12, 2))
    values[1, 6:] = np.nan  # series 1 has 6 valid points (last index 5)
    feats = nd.cde_features(times, values)
    t, path, lengths = nd.logsig_windows(times, feats, stride=4, lengths=np.array([12, 6]))
    np.testing.assert_array_equal(t[0], [0.0, 4.0, 8.0, 11.0])
    np.testing.assert_array_equal(lengths, [4, 3])  # knot 8 is the first at or after index 5
    # only the time channel 0 keeps moving after knot 8: every other increment, and every
    # area (one of its two channels is constant in that window), is 0
    still = list(range(1, path.shape[-1]))
    np.testing.assert_allclose(path[1, 3, still], path[1, 2, still], atol=1e-12)


def test_neural_cde_runs_the_log_ode_method():
    """The public pipeline end to end: features -> windows -> linear path -> NeuralCDE, with
    one fixed step per window (cost 3W + 1 with Bosh3) and finite gradients."""
    times = np.tile(np.arange(30.0), (4, 1))
    values = np.random.default_rng(2).normal(size=(4, 30, 2))
    feats = nd.cde_features(times, values)
    t, path, lengths = nd.logsig_windows(times, feats, stride=7)
    ts, coeffs = nd.linear_coefficients(t, path)
    model = ndes.NeuralCDE(
        path.shape[-1], 8, 3, 16, 1, key=jax.random.key(0),
        interpolation=diffrax.LinearInterpolation,
    )  # fmt: skip
    out = model(ts, coeffs)
    windows = path.shape[1] - 1
    assert windows == 5 and out.ys.shape == (4, 3)
    assert int(out.stats["num_fevals"]) == 3 * windows + 1

    def loss(m):
        return jnp.sum(m(ts, coeffs).ys ** 2)

    grads = eqx.filter_grad(loss)(model)
    leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_array))
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stride": 0}, r"logsig_windows: stride=0 must be an int >= 1"),
        ({"stride": 2.5}, r"stride=2.5 must be an int"),
        ({"stride": True}, r"stride=True must be an int"),
        ({"stride": 2, "depth": 3}, r"depth=3 must be 1 or 2"),
        ({"stride": 2, "lengths": np.array([5, 5])}, r"lengths must be 3 ints in \[1, 6\]"),
        ({"stride": 2, "lengths": np.array([0, 5, 5])}, r"lengths must be 3 ints"),
        ({"stride": 2, "lengths": np.array([1.0, 5, 5])}, r"dtype float64"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    times = np.tile(np.arange(6.0), (3, 1))
    x = np.zeros((3, 6, 2))
    with pytest.raises(ValueError, match=match):
        nd.logsig_windows(times, x, **kwargs)


def test_bad_paths_raise():
    times = np.tile(np.arange(6.0), (3, 1))
    x = np.zeros((3, 6, 2))
    x[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="features contain NaN; build them with cde_features"):
        nd.logsig_windows(times, x, stride=2)
    with pytest.raises(ValueError, match="strictly increasing"):
        nd.logsig_windows(times[:, ::-1], np.zeros((3, 6, 2)), stride=2)
    with pytest.raises(ValueError, match="at least 2 time points"):
        nd.logsig_windows(times[:, :1], np.zeros((3, 1, 2)), stride=2)
