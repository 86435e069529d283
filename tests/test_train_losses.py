"""ndes.train.classification_loss and the classifiers of ndes.models that follow its protocol."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import ndes
from ndes.models import ModelOutput, ODEClassifier
from ndes.train import classification_loss


class _FixedLogits(eqx.Module):
    """Returns given logits plus, with `noise`, a draw from the key it is called with."""

    logits: jax.Array
    noise: float = 0.0

    def __call__(self, x, *, key, regularizers=(), train_step=None):
        out = ModelOutput(
            ys=jnp.zeros(()),
            penalty=jnp.asarray(0.5),
            penalty_terms={"Made": jnp.asarray(5.0)},
            stats={"num_fevals": jnp.asarray(7)},
        )
        draw = jax.random.normal(key, self.logits.shape)
        return self.logits + self.noise * draw + 0 * x[:, :1], out


def test_classification_loss_is_mean_cross_entropy_with_accuracy():
    logits = jnp.array([[np.log(3.0), 0.0], [0.0, 0.0], [2.0, 0.0]])
    labels = jnp.array([0, 1, 1])
    key = jax.random.key(3)
    loss, aux = classification_loss(
        _FixedLogits(logits), (jnp.zeros((3, 1)), labels), key=key, regularizers=()
    )
    expected = -np.mean([np.log(0.75), np.log(0.5), np.log(1 / (1 + np.e**2))])
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    np.testing.assert_allclose(aux["accuracy"], 100.0 / 3)  # argmax of row 2 is 0: wrong
    assert aux["penalty"] == 0.5 and aux["penalty_terms"] == {"Made": 5.0}
    assert aux["num_fevals"] == 7


def test_classification_loss_passes_the_key_to_the_model():
    model, batch = (
        _FixedLogits(jnp.zeros((2, 3)), noise=1.0),
        (jnp.zeros((2, 1)), jnp.array([0, 2])),
    )
    k1, k2 = jax.random.key(11), jax.random.key(12)
    drawn = jax.random.normal(k1, (2, 3))
    expected = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(drawn, batch[1]))
    loss1, _ = classification_loss(model, batch, key=k1)
    loss2, _ = classification_loss(model, batch, key=k2)
    np.testing.assert_allclose(loss1, expected, rtol=1e-12)
    assert abs(float(loss1 - loss2)) > 1e-3


def test_ode_classifier_trains_and_vmap_mode_matches_joint(getkey):
    x = jax.random.normal(getkey(), (6, 5))
    y = jnp.array([0, 1, 2, 0, 1, 2])
    model = ODEClassifier(5, 3, 4, 8, 1, key=getkey())
    joint, out = model(x)
    per, out_v = model.with_batch_mode("vmap")(x)
    assert joint.shape == per.shape == (6, 3)
    np.testing.assert_allclose(joint, per, rtol=1e-4, atol=1e-6)
    assert jnp.shape(out.stats["num_fevals"]) == () and out_v.stats["num_fevals"].shape == (6,)
    res = ndes.fit(
        model,
        (x, y),
        classification_loss,
        optax.adam(1e-2),
        key=getkey(),
        batch_size=3,
        steps=2,
        regularizers=(ndes.ErrorEstimate(1.0),),
        progress=False,
    )
    rec = res.history[-1]
    assert np.isfinite(rec["loss"]) and rec["penalty_terms"]["ErrorEstimate"] > 0
    assert "accuracy" in rec and rec["num_fevals"] > 0
