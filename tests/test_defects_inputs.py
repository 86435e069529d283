"""Input defects: wrong state or channel sizes, overflowing or empty data, and `ndes train`
misuse get a clear error naming the argument (or the config key) and the fix."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import ndes
from ndes.cli import main

TS = jnp.linspace(0.0, 1.0, 5)
STABLE = (ndes.NeuralLSDE, ndes.NeuralLNSDE, ndes.NeuralGSDE)


# ---- row 7: state and channel sizes ----------------------------------------------------------


@pytest.mark.parametrize("batch_mode", ["joint", "vmap"])
@pytest.mark.parametrize("shape", [(3,), (4, 3)])
def test_neural_ode_wrong_state_size_names_expected_and_received(batch_mode, shape):
    model = ndes.NeuralODE.mlp(2, 8, 1, key=jr.key(0), batch_mode=batch_mode)
    with pytest.raises(ValueError, match=r"NeuralODE: `y0` has 3 components .* size 2"):
        model(TS, jnp.ones(shape))


def test_neural_ode_custom_field_wrong_state_size():
    class Field(eqx.Module):
        w: jax.Array

        def __call__(self, t, y, args):
            return self.w @ y

    model = ndes.NeuralODE(Field(jnp.ones((2, 2))))
    with pytest.raises(
        ValueError, match=r"NeuralODE: the vector field fails on one state of shape \(3,\)"
    ):
        model(TS, jnp.ones(3))
    wrong_out = ndes.NeuralODE(Field(jnp.ones((3, 2))))
    with pytest.raises(ValueError, match=r"must return the state's shape \(2,\).*got \(3,\)"):
        wrong_out(TS, jnp.ones(2))
    # The right size still solves, also under jit.
    out = eqx.filter_jit(lambda m, y: m(TS, y))(model, jnp.ones((2, 2)))
    assert out.ys.shape == (2, 5, 2)


@pytest.mark.parametrize("noise", ["diagonal", "general"])
def test_neural_sde_wrong_state_size(noise):
    kw = dict(noise_size=3) if noise == "general" else {}
    model = ndes.NeuralSDE.mlp(2, 8, 1, key=jr.key(0), num_steps=4, noise=noise, **kw)
    with pytest.raises(ValueError, match=r"NeuralSDE: `y0` has 3 components .* drift .* size 2"):
        model(TS, jnp.ones((4, 3)), key=jr.key(1))
    drift = ndes.MLPVectorField(3, 8, 1, key=jr.key(2))
    mixed = ndes.NeuralSDE(drift, model.diffusion, noise=noise, num_steps=4, **kw)
    with pytest.raises(ValueError, match=r"NeuralSDE: `y0` has 3 .* diffusion .* size 2"):
        mixed(TS, jnp.ones(3), key=jr.key(1))


@eqx.filter_jit  # one compilation instead of many eager ones
def _path(x):
    if x.ndim == 2:
        return diffrax.CubicInterpolation(TS, diffrax.backward_hermite_coefficients(TS, x))
    coeffs = jax.vmap(diffrax.backward_hermite_coefficients, in_axes=(None, 0))(TS, x)
    return jax.vmap(lambda c: diffrax.CubicInterpolation(TS, c))(coeffs)


def _paths(channels, batch=None):
    return _path(jnp.ones((5, channels) if batch is None else (batch, 5, channels)))


@pytest.mark.parametrize(
    "cls, batch_mode", [(c, "joint") for c in STABLE] + [(ndes.NeuralLSDE, "vmap")]
)
def test_stable_sde_wrong_control_channels(cls, batch_mode):
    model = cls(
        4, 8, 1, key=jr.key(0), input_channels=3, out_size=2, num_steps=4, batch_mode=batch_mode
    )
    msg = f"{cls.__name__}: the control path has 2 channels but the model was built with "
    msg += "input_channels=3"
    with pytest.raises(ValueError, match=msg):
        model(TS, _paths(2), key=jr.key(1))
    with pytest.raises(ValueError, match=msg):
        model(TS, _paths(2, batch=3), key=jr.key(1))
    with pytest.raises(ValueError, match=msg):
        model(TS, _paths(2, batch=3), key=jr.key(1), z0=jnp.ones((3, 4)))
    with pytest.raises(ValueError, match=r"`z0` holds 2 states .* control path holds 3 series"):
        model(TS, _paths(3, batch=3), key=jr.key(1), z0=jnp.ones((2, 4)))
    out = eqx.filter_eval_shape(lambda m, p: m(TS, p, key=jr.key(1)), model, _paths(3, batch=3))
    assert out.ys.shape == (3, 2)


# ---- row 8: overflowing coefficients ----------------------------------------------------------


def test_hermite_coefficients_of_huge_values_raise_standardise():
    times = np.tile(np.linspace(0.0, 4e-3, 5), (2, 1))
    values = np.random.default_rng(0).normal(size=(2, 5, 2))
    values[0, 2, 1] = 1e300
    with pytest.warns(UserWarning, match="standardise them first"):
        feats = ndes.data.cde_features(times, values)
    assert np.isfinite(feats).all()
    with pytest.raises(ValueError, match="Hermite coefficients overflow .*Standardise"):
        ndes.data.hermite_coefficients(times, feats)
    # Linear interpolation divides by the step once: overflows at smaller steps.
    assert np.isfinite(np.asarray(ndes.data.linear_coefficients(times, feats)[1])).all()
    with pytest.raises(ValueError, match="linear interpolation's values or slopes overflow"):
        ndes.data.linear_coefficients(times * 1e-6, feats)
    # Standardised values are fine.
    values[0, 2, 1] = 0.0
    coeffs = ndes.data.hermite_coefficients(times, ndes.data.cde_features(times, values))
    assert all(np.isfinite(np.asarray(c)).all() for c in coeffs)


# ---- row 10: empty data and bad lengths -------------------------------------------------------


@pytest.mark.parametrize(
    "shape, match",
    [
        ((0, 5, 2), "no series"),
        ((2, 5, 0), "no channels"),
        ((2, 0, 2), "no time points"),
    ],
)
def test_cde_features_empty_axes_named(shape, match):
    times = np.tile(np.arange(float(shape[1])), (shape[0], 1))
    with pytest.raises(ValueError, match=f"values of shape .* has {match}"):
        ndes.data.cde_features(times, np.zeros(shape))
    with pytest.raises(ValueError, match=f"features of shape .* has {match}"):
        ndes.data.hermite_coefficients(times, np.zeros(shape))


@pytest.mark.parametrize(
    "lengths, match",
    [
        (np.array([6, 5]), r"lengths must lie in \[1, L\] = \[1, 5\].*lengths\[0\] = 6"),
        (np.array([5, 0]), r"lengths\[1\] = 0"),
        (np.array([-1, 5]), r"lengths\[0\] = -1"),
        (np.array([3.7, 5.0]), "lengths must be integers"),
        (np.array([3.0, 5.0]), "lengths must be integers"),
    ],
)
def test_drop_observations_bad_lengths(lengths, match):
    with pytest.raises(ValueError, match=match):
        ndes.data.drop_observations(np.ones((2, 5, 2)), lengths, 0.5)


# ---- rows 11 and 12: ndes train misuse --------------------------------------------------------

_TINY = """
steps = 1
batch_size = {batch_size}

[data]
name = "ornstein_uhlenbeck"
num_train = 8
num_test = 4
num_times = 3

[model]
width = 2
"""


def test_train_batch_larger_than_data_exits_2_with_one_line(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(_TINY.format(batch_size=64))
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("ndes train: error: config key 'batch_size' = 64 is larger than the 8")


def test_train_directory_exits_2_with_one_line(tmp_path, capsys):
    assert main(["train", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is a directory, not a TOML file" in err
    (tmp_path / "config.toml").write_text(_TINY.format(batch_size=4))
    assert main(["train", str(tmp_path)]) == 2
    assert "--resume" in capsys.readouterr().err
    file_run = tmp_path / "afile"
    file_run.write_text("")
    args = ["train", str(tmp_path / "config.toml"), "--run-dir", str(file_run)]
    assert main(args) == 2
    assert "is a file" in capsys.readouterr().err


def test_train_resume_without_checkpoint_says_it_starts_fresh(tmp_path, capsys, monkeypatch):
    import types

    calls = []

    def fake_fit(*args, **kw):  # the CLI's behaviour, not training, is under test
        calls.append(kw["resume"])
        return types.SimpleNamespace(interrupted=False, history=[], log_path="m", checkpoint="c")

    monkeypatch.setattr(ndes, "fit", fake_fit)
    cfg, run = tmp_path / "tiny.toml", tmp_path / "run"
    cfg.write_text(_TINY.format(batch_size=4))
    args = ["train", str(cfg), "--run-dir", str(run), "--no-progress", "--no-plot", "--resume"]
    assert main(args) == 0
    assert f"no checkpoint in {run}; training starts fresh" in capsys.readouterr().err
    # With a checkpoint there, --resume says nothing of the kind.
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step_000000001.json").write_text("{}")
    assert main(args) == 0
    assert "starts fresh" not in capsys.readouterr().err
    assert calls == [True, True]
