r"""The negative log-likelihood of a continuous normalizing flow, as a `loss_fn` for `ndes.fit`.

For data $x$ and a flow with log-density $\log p(x)$ (`ndes.CNF.log_prob`, nats), the loss is
the mean negative log-likelihood

$$\mathcal L = -\frac1B\sum_b \big(\log p(x_b) + c_b\big)$$

in nats, or in bits per dimension $\mathcal L / (d \ln 2)$ (the unit of image flows: RealNVP,
Dinh et al. 2017; FFJORD, Grathwohl et al. 2019). $c_b$ is an optional per-row correction,
the log-det-Jacobian of a fixed preprocessing from the space the likelihood is reported in
to the model's space (e.g. `ndes.data.load_digits_density`'s dequantize-logit-standardise map:
`logdet_train`), so that bits/dim are those of pixel space.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._aux import solution_aux

__all__ = ["cnf_nll_loss", "UNITS"]

UNITS = ("nats", "bits/dim")


def _split_batch(batch: Any) -> tuple[Array, Array | None]:
    if isinstance(batch, Mapping):
        if "x" not in batch:
            raise ValueError(
                "cnf_nll_loss: a dict batch must hold the data under 'x' (and optionally "
                f"'logdet'); got keys {sorted(batch)}."
            )
        return jnp.asarray(batch["x"]), batch.get("logdet")
    if isinstance(batch, tuple | list):
        if len(batch) not in (1, 2):
            raise ValueError(
                "cnf_nll_loss: a tuple batch must be (x,) or (x, logdet); got "
                f"{len(batch)} entries."
            )
        return jnp.asarray(batch[0]), (batch[1] if len(batch) == 2 else None)
    return jnp.asarray(batch), None


def cnf_nll_loss(
    model: Any,
    batch: Any,
    *,
    key: PRNGKeyArray,
    regularizers: Sequence = (),
    train_step: ArrayLike | None = None,
    units: Literal["nats", "bits/dim"] = "nats",
) -> tuple[Float[Array, ""], dict[str, Any]]:
    r"""Mean negative log-likelihood of a CNF on a batch, with its penalty and counters.

    A `loss_fn` for `ndes.fit` (see its contract): one `model.log_prob(x, key,
    regularizers=..., train_step=...)` solve per step, the Hutchinson probe drawn from the
    step's `key` (a fresh probe every step, fixed within the solve). The aux carries the
    counters of that density solve, so a `BudgetWeight` budgets the log-likelihood solve's
    NFE. For bits/dim use `functools.partial(cnf_nll_loss, units="bits/dim")`.

    **Arguments:**

    - `model`: an `ndes.CNF` (anything with `log_prob(x, key, *, regularizers, train_step)`
      returning an `ndes.models.ModelOutput` whose `ys` is the log-density, shape `(B,)`).
    - `batch`: the data `x` of shape `(B, d)`, or `(x,)`, `(x, logdet)`, or a dict with
      `"x"` and optionally `"logdet"`: `logdet` of shape `(B,)` is $\log|\det\partial x/
      \partial v|$ of a fixed preprocessing $v \mapsto x$, added to $\log p(x)$ so the loss
      is the NLL of $v$ (e.g. `(d.x_train, d.logdet_train)` of
      `ndes.data.load_digits_density`).
    - `key`, `regularizers`, `train_step`: as `ndes.fit` passes them.
    - `units`: `"nats"` (default) or `"bits/dim"` (divided by $d \ln 2$).

    **Returns:** `(loss, aux)`: the mean NLL in `units` (the penalty is not included;
    `ndes.fit` adds `aux["penalty"]`), and `ndes.train.solution_aux(output)` plus `"nll"`
    (nats per sample) and `"bits_per_dim"`, whatever `units` is.

    **References:** Chen et al., "Neural ordinary differential equations", NeurIPS 2018;
    Grathwohl et al., "FFJORD", ICLR 2019; Dinh, Sohl-Dickstein, Bengio, "Density estimation
    using Real NVP", ICLR 2017 (bits/dim).
    """
    if units not in UNITS:
        raise ValueError(f"cnf_nll_loss: units={units!r} is not a unit; use 'nats' or 'bits/dim'.")
    x, logdet = _split_batch(batch)
    if x.ndim != 2:
        raise ValueError(
            f"cnf_nll_loss: the data x must have shape (B, d) (a batch); got {x.shape}."
        )
    out = model.log_prob(x, key, regularizers=regularizers, train_step=train_step)
    logp = out.ys
    if logdet is not None:
        logdet = jnp.asarray(logdet)
        if logdet.shape != logp.shape:
            raise ValueError(
                f"cnf_nll_loss: logdet must have one value per row, shape {logp.shape}; got "
                f"{logdet.shape}."
            )
        logp = logp + logdet.astype(logp.dtype)
    nll = -jnp.mean(logp)
    bpd = nll / (x.shape[-1] * math.log(2))
    aux = solution_aux(out)
    aux["nll"], aux["bits_per_dim"] = nll, bpd
    return (nll if units == "nats" else bpd), aux
