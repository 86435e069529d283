"""ndes.plot's diffusion figures: files written (Agg), bad input refused."""

from __future__ import annotations

import jax.random as jr
import numpy as np
import pytest

import ndes
from ndes import diffusion as D
from ndes.plot import (
    plot_diffusion_digits,
    plot_diffusion_samples_2d,
    plot_quality_vs_nfe,
    plot_reverse_trajectories,
)


def _written(path):
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_samples_beside_data(tmp_path):
    rng = np.random.default_rng(0)
    data, s = rng.normal(size=(200, 2)), rng.normal(size=(100, 2))
    out = plot_diffusion_samples_2d({"a": s, "b": s + 1}, data, tmp_path / "x" / "s.png",
                                    title="t")  # fmt: skip
    assert out == tmp_path / "x" / "s.png"
    _written(out)
    _written(plot_diffusion_samples_2d(s, data, tmp_path / "one.png"))
    pix = rng.integers(0, 17, (40, 64))
    _written(plot_diffusion_digits({"sampler": pix}, pix, tmp_path / "d.png", num=9, title="t"))


def test_trajectories_and_quality_vs_nfe(tmp_path):
    means = np.array([[-2.0, 0.0], [2.0, 0.0]])
    covs = np.stack([0.1 * np.eye(2)] * 2)
    exact = D.GaussianMixtureScore(means, covs, D.VPSDE())
    model = D.ScoreModel(exact, D.VPSDE(), parametrisation="score")
    out = plot_reverse_trajectories(
        model,
        tmp_path / "tr.png",
        key=jr.key(0),
        data=np.zeros((5, 2)),
        num_trajectories=8,
        steps=20,
    )
    _written(out)
    res = {"DPM-Solver-2": [(20, 0.01), (10, 0.03)], "PF-ODE": [(60, 0.02, 0.01), (200, 0.02, 0.0)]}
    _written(plot_quality_vs_nfe(res, tmp_path / "q.png", metric="MMD²", floor=0.0, log_y=False))


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"data must have shape \(N, 2\)"):
        plot_diffusion_samples_2d(np.zeros((3, 2)), np.zeros((3, 3)), tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"samples\['samples'\] must have shape \(n, 2\)"):
        plot_diffusion_samples_2d(np.zeros((3, 3)), np.zeros((3, 2)), tmp_path / "a.png")
    with pytest.raises(ValueError, match="samples is empty"):
        plot_diffusion_samples_2d({}, np.zeros((3, 2)), tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"data must have shape \(N, 64\)"):
        plot_diffusion_digits(np.zeros((3, 64)), np.zeros((3, 2)), tmp_path / "a.png")
    with pytest.raises(ValueError, match="num=0"):
        plot_diffusion_digits(np.zeros((3, 64)), np.zeros((3, 64)), tmp_path / "a.png", num=0)
    net = D.ScoreMLP(3, 4, 1, key=jr.key(0))
    with pytest.raises(ValueError, match="must be a 2-D"):
        plot_reverse_trajectories(D.ScoreModel(net, D.VPSDE()), tmp_path / "a.png", key=jr.key(0))
    net2 = D.ScoreModel(D.ScoreMLP(2, 4, 1, key=jr.key(0)), D.VPSDE())
    with pytest.raises(ValueError, match="num_trajectories=0"):
        plot_reverse_trajectories(net2, tmp_path / "a.png", key=jr.key(0), num_trajectories=0)
    with pytest.raises(ValueError, match="non-empty dict"):
        plot_quality_vs_nfe({}, tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"results\['x'\] must be a list"):
        plot_quality_vs_nfe({"x": [1, 2, 3]}, tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()
    assert ndes.plot.plot_quality_vs_nfe is plot_quality_vs_nfe
