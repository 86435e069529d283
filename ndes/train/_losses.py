"""Ready-made `loss_fn`s for `ndes.fit`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._aux import solution_aux

__all__ = ["classification_loss"]


def classification_loss(
    model: Any,
    batch: Sequence[Any],
    *,
    key: PRNGKeyArray,
    regularizers: Sequence = (),
    train_step: ArrayLike | None = None,
) -> tuple[Float[Array, ""], dict[str, Any]]:
    """Mean softmax cross-entropy of a classifier, with its penalty, counters and accuracy.

    A `loss_fn` for `ndes.fit` (see its contract). The batch is a tuple whose last entry
    holds the integer labels, `(*inputs, labels)`; the model is called as
    `model(*inputs, key=key, regularizers=regularizers, train_step=train_step)` and must
    return `(logits, output)` with `logits` of shape `(B, num_classes)` and `output`
    anything with `penalty`, `penalty_terms` and `stats` (an `ndes.models.ModelOutput`).
    `ndes.models.ODEClassifier`, `CDEClassifier` and `StableSDEClassifier` follow this
    protocol (the stable SDE uses `key` for its Brownian motion; the others ignore it), and
    `ndes.data.prepare_cde` returns a batch of this shape.

    **Arguments:**

    - `model`: the classifier.
    - `batch`: `(*inputs, labels)`, `labels` of shape `(B,)` with values in
      `0 .. num_classes - 1`.
    - `key`, `regularizers`, `train_step`: as `ndes.fit` passes them.

    **Returns:** `(loss, aux)`: the mean cross-entropy (nats; the penalty is not included,
    `ndes.fit` adds `aux["penalty"]`), and `ndes.train.solution_aux(output)` plus
    `"accuracy"`, the batch accuracy in percent.
    """
    *inputs, labels = batch
    logits, out = model(*inputs, key=key, regularizers=regularizers, train_step=train_step)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    aux = solution_aux(out)
    aux["accuracy"] = jnp.mean(jnp.argmax(logits, -1) == labels) * 100.0
    return jnp.mean(ce), aux
