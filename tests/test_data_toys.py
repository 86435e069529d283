"""ndes.data.toy_2d (FFJORD's 2-D toys) and ndes.data.load_digits_density (bits/dim)."""

import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import ndes.data as nd


@pytest.mark.parametrize("name", nd.TOY_2D_NAMES)
def test_toy_shape_dtype_determinism(name):
    a = nd.toy_2d(name, 257, key=jr.key(0))
    b = nd.toy_2d(name, 257, key=jr.key(0))
    c = nd.toy_2d(name, 257, key=jr.key(1))
    assert a.shape == (257, 2) and a.dtype == jnp.float64  # x64 in the tests
    assert nd.toy_2d(name, 3, key=jr.key(0), dtype=jnp.float32).dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.all(np.isfinite(a)) and np.abs(a).max() < 6.0


def test_toy_shapes_are_what_they_claim():
    n = 4000
    g = np.asarray(nd.toy_2d("8gaussians", n, key=jr.key(2)))
    # eight clusters on the circle of radius 4/1.414: each point is near one centre
    ang = np.arange(8) * 2 * np.pi / 8
    centres = 4 / 1.414 * np.stack([np.cos(ang), np.sin(ang)], -1)
    d = np.linalg.norm(g[:, None, :] - centres[None], axis=-1)
    nearest = d.argmin(1)
    assert np.all(np.bincount(nearest, minlength=8) > n / 8 * 0.8)
    resid = g - centres[nearest]
    np.testing.assert_allclose(resid.std(0), 0.5 / 1.414, rtol=0.1)

    s = np.asarray(nd.toy_2d("2spirals", n, key=jr.key(3)))
    np.testing.assert_allclose(s.mean(0), 0.0, atol=0.15)  # the two arms are mirror images
    assert np.linalg.norm(s, axis=1).max() > 2.5

    m = np.asarray(nd.toy_2d("moons", n, key=jr.key(4)))
    # two moons: mean of the sklearn shape (0.5, 0.25), scaled by 2 and shifted
    np.testing.assert_allclose(m.mean(0), [0.0, 0.3], atol=0.1)

    p = np.asarray(nd.toy_2d("pinwheel", n, key=jr.key(5)))
    r = np.linalg.norm(p, axis=1)
    assert 1.0 < np.median(r) < 3.0  # arms away from the origin
    theta = np.arctan2(p[:, 1], p[:, 0])
    hist = np.histogram(theta, bins=40, range=(-np.pi, np.pi))[0]
    assert hist.min() < 0.3 * hist.mean()  # gaps between the five arms


def test_toy_bad_input():
    with pytest.raises(ValueError, match="not a 2-D toy; use one of 8gaussians"):
        nd.toy_2d("checkerboard", 10, key=jr.key(0))
    with pytest.raises(ValueError, match=r"n=0 must be an int >= 1 \(the number of points\)"):
        nd.toy_2d("moons", 0, key=jr.key(0))
    with pytest.raises(ValueError, match="dtype"):
        nd.toy_2d("moons", 4, key=jr.key(0), dtype=jnp.int32)


@pytest.fixture(scope="module")
def digits():
    return nd.load_digits_density(seed=0)


def test_digits_density_shapes_and_train_statistics(digits):
    assert digits.x_train.shape == (1437, 64) and digits.x_test.shape == (360, 64)
    assert digits.x_train.dtype == np.float32
    assert digits.logdet_train.shape == (1437,)
    np.testing.assert_allclose(digits.x_train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(digits.x_train.std(0), 1.0, atol=1e-4)
    assert abs(digits.x_test.mean()) > 1e-6  # test statistics are not used
    assert digits.pixels_train.min() == 0 and digits.pixels_train.max() == 16
    # the same seed gives the same problem; another seed another split and noise
    again = nd.load_digits_density(seed=0)
    np.testing.assert_array_equal(again.x_test, digits.x_test)
    other = nd.load_digits_density(seed=1)
    assert not np.array_equal(other.pixels_test, digits.pixels_test)


def test_digits_logdet_is_the_jacobian(digits):
    """logdet equals sum_i log dx_i/dv_i by central differences (the map is per pixel)."""
    rng = np.random.default_rng(0)
    pixels = digits.pixels_test[:5]
    u = rng.uniform(0.1, 0.9, size=pixels.shape)
    v = pixels + u
    from ndes.data._digits_density import _forward

    def fwd(v):
        s = digits.alpha + (1 - 2 * digits.alpha) * v / 17
        return (np.log(s) - np.log1p(-s) - digits.mean) / digits.std

    h = 1e-6
    fd = (fwd(v + h) - fwd(v - h)) / (2 * h)
    x, logdet = _forward(v, digits.alpha, digits.mean, digits.std, 17)
    np.testing.assert_allclose(logdet, np.log(fd).sum(1), rtol=1e-6)
    np.testing.assert_allclose(x, fwd(v), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(digits.to_pixels(fwd(v)), v, rtol=1e-9)


def test_digits_bits_per_dim_of_uniform_pixels(digits):
    """A model whose pixel-space density is uniform on [0, 17)^64 has log2(17) bits/dim."""
    x, logdet = digits.transform(digits.pixels_test, 3)
    # log p_X(x) = log p_V(v) - logdet with p_V = 17^-64
    log_px = -64 * math.log(17) - logdet
    np.testing.assert_allclose(digits.bits_per_dim(log_px, logdet), math.log2(17), rtol=1e-12)
    x2, _ = digits.transform(digits.pixels_test, 4)
    assert not np.allclose(x, x2)  # fresh dequantization noise
    assert np.all(np.floor(digits.to_pixels(x)) == digits.pixels_test)


def test_digits_bad_input(digits):
    with pytest.raises(ValueError, match="test_fraction=1.5 must lie in"):
        nd.load_digits_density(test_fraction=1.5)
    with pytest.raises(ValueError, match="alpha=0.7 must lie in"):
        nd.load_digits_density(alpha=0.7)
    with pytest.raises(ValueError, match="pixels must have shape"):
        digits.transform(np.zeros((3, 10), int), 0)
    with pytest.raises(ValueError, match="one value per row"):
        digits.bits_per_dim(np.zeros(3), np.zeros(4))


def test_toy_2d_counts_accept_numpy_ints_not_bools():
    """Counts are any integral number (numpy's too, as from `np.arange`), never a bool."""
    assert nd.toy_2d("moons", np.int64(5), key=jr.key(0)).shape == (5, 2)
    with pytest.raises(ValueError, match=r"n=True must be an int >= 1"):
        nd.toy_2d("moons", True, key=jr.key(0))


def test_eight_gaussians_mixture_is_what_toy_2d_samples():
    """The closed-form mixture (used for the exact score in the diffusion benchmark) has
    the centres and spread of `toy_2d("8gaussians")`'s draws."""
    from ndes.data._toys import _eight_gaussians_mixture

    means, covs = _eight_gaussians_mixture()
    x = np.asarray(nd.toy_2d("8gaussians", 8000, key=jr.key(3)), np.float64)
    nearest = np.argmin(((x[:, None] - means[None]) ** 2).sum(-1), 1)
    resid = x - means[nearest]
    np.testing.assert_allclose(resid.mean(0), 0.0, atol=0.01)
    np.testing.assert_allclose(resid.std(0), np.sqrt(covs[0, 0, 0]), rtol=0.05)
    assert np.bincount(nearest, minlength=8).min() > 800  # equal weights
