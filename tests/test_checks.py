"""The shared positive-number check (`ndes._checks.check_positive`) behind every public
argument that must be a positive finite real: one rule (any real scalar, not bool, finite,
> 0) and one message format, `owner: name=value must be a positive finite number`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ndes
from ndes._checks import check_positive, positive_real
from ndes.data import cde_features
from ndes.diffusion import VESDE, VPSDE, mmd


@pytest.mark.parametrize(
    "value", [0.5, 3, np.float32(0.25), np.float64(2.0), np.int64(4), jnp.asarray(0.1)]
)
def test_real_scalars_of_every_kind_pass_as_floats(value):
    out = check_positive(value, "x", "owner")
    assert type(out) is float and out == pytest.approx(float(value))


@pytest.mark.parametrize(
    "value",
    [
        0,
        0.0,
        -1.0,
        float("nan"),
        float("inf"),
        True,
        np.bool_(True),
        "0.1",
        None,
        [1.0],
        jnp.ones(2),
        jnp.asarray(1 + 1j),
    ],
)
def test_everything_else_is_refused_naming_owner_and_argument(value):
    assert positive_real(value) is None
    with pytest.raises(ValueError, match=r"owner: x=.* must be a positive finite number; hint"):
        check_positive(value, "x", "owner", "; hint")


def test_public_arguments_share_the_rule():
    # A string used to pass through float() silently, and True counted as 1.0.
    with pytest.raises(ValueError, match=r"VPSDE: beta_min='0.1' must be a positive finite"):
        VPSDE(beta_min="0.1")
    with pytest.raises(ValueError, match=r"VESDE: sigma_min=True must be a positive finite"):
        VESDE(sigma_min=True)
    with pytest.raises(ValueError, match=r"mmd: bandwidth=-1.0 must be a positive finite"):
        mmd(jnp.zeros((3, 2)), jnp.ones((3, 2)), bandwidth=-1.0)
    with pytest.raises(ValueError, match=r"NeuralLSDE\(time_span=True\) must be a positive"):
        ndes.NeuralLSDE(2, 4, 1, key=jax.random.key(0), input_channels=2, time_span=True)
    # NumPy and JAX scalars are accepted where Python floats are.
    assert VPSDE(beta_min=np.float32(0.1), beta_max=jnp.asarray(20.0)).beta_max == 20.0
    times, values = np.tile(np.arange(4.0), (2, 1)), np.ones((2, 4, 1))
    feats = cde_features(times, values, time_scale=np.float32(3.0))
    np.testing.assert_allclose(feats[0, :, 0], np.arange(4.0) / 3.0)
    with pytest.raises(ValueError, match=r"cde_features\(time_scale=0.0\) must be a positive"):
        cde_features(times, values, time_scale=0.0)
