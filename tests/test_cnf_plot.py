"""ndes.plot.plot_density_2d / plot_digit_samples: files written, bad input refused."""

import diffrax
import jax.random as jr
import numpy as np
import pytest

import ndes
from ndes.plot import plot_density_2d, plot_digit_samples

FAST = dict(stepsize_controller=diffrax.ConstantStepSize(), dt0=0.25)


def test_density_map_and_digit_grid_are_written(tmp_path):
    model = ndes.CNF.mlp(2, 4, 1, key=jr.key(0), **FAST)
    data = np.asarray(ndes.data.toy_2d("moons", 200, key=jr.key(1)))
    out = plot_density_2d(model, data, tmp_path / "d.png", key=jr.key(2), grid=12, num_samples=50)
    assert out == tmp_path / "d.png" and out.stat().st_size > 0
    digits = ndes.CNF.mlp(64, 4, 0, key=jr.key(0), **FAST)
    dd = ndes.data.load_digits_density()
    out = plot_digit_samples(digits, tmp_path / "s.png", key=jr.key(3), to_pixels=dd.to_pixels,
                             num_samples=6, title="samples")  # fmt: skip
    assert out.stat().st_size > 0


def test_bad_input_raises(tmp_path):
    model = ndes.CNF.mlp(2, 4, 1, key=jr.key(0), **FAST)
    with pytest.raises(ValueError, match=r"data must have shape \(N, 2\)"):
        plot_density_2d(model, np.zeros((5, 3)), tmp_path / "d.png", key=jr.key(0))
    with pytest.raises(ValueError, match="must be 64-d"):
        plot_digit_samples(model, tmp_path / "s.png", key=jr.key(0), to_pixels=lambda x: x)
