r"""Divergence of a vector field, exact or by Hutchinson's estimator, with the Jacobian's
Frobenius norm from the same computation.

Shared by `ndes.CNF` (the instantaneous change of variables, Chen et al. 2018, FFJORD,
Grathwohl et al. 2019) and the likelihood of a probability-flow ODE: both integrate
$\nabla\!\cdot f = \operatorname{tr}(\partial f/\partial z)$ along a trajectory.

- **Exact** (`method="exact"`): one linearisation of `f` at `z` and `d` Jacobian-vector products
  (one per basis vector, `jax.vmap`ed), i.e. the Jacobian column by column, as FFJORD's
  `divergence_bf` (`rtqichen/ffjord`, `lib/layers/odefunc.py`, `d` VJPs on the batch sum) and
  the diffrax CNF example's `exact_logp_wrapper` (`jax.jacfwd` then the trace,
  `patrick-kidger/diffrax`, `docs/examples/continuous_normalising_flows.ipynb`). Cost: `d`
  JVPs; use it for small `d`. It also gives $\lVert J\rVert_F^2$ exactly.
- **Hutchinson** (`method="hutchinson"`): one vector-Jacobian product with a probe
  $\varepsilon$ ($\mathbb{E}[\varepsilon\varepsilon^\top] = I$):
  $\widehat{\nabla\!\cdot f} = (\varepsilon^\top J)\,\varepsilon$, unbiased for the trace
  (Hutchinson 1989), as FFJORD's `divergence_approx` (`e_dzdx = grad(f, y, e)`,
  `sum(e_dzdx * e)`) and the diffrax example's `approx_logp_wrapper` (`jax.vjp`,
  `sum(eps_dfdy * eps)`). From the *same* VJP, $\lVert\varepsilon^\top J\rVert^2$ is an unbiased
  estimate of $\lVert J\rVert_F^2$ -- the Jacobian term of RNODE (Finlay et al. 2020; their
  `cfinlay/ffjord-rnode` `divergence_approx` returns it beside the trace, as a mean over the
  `d` entries where this is the sum) -- at no extra cost.

The probe must be drawn once per solve and held fixed through it: resampling it at every
evaluation makes the ODE stochastic and an adaptive solver's step count explode (torchdiffeq
issue #120). `draw_probe` draws it; the caller keeps it for the whole solve.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["divergence", "draw_probe", "check_method", "check_probe", "METHODS", "PROBES"]

Method = Literal["exact", "hutchinson"]
Probe = Literal["gaussian", "rademacher"]
METHODS = ("exact", "hutchinson")
PROBES = ("gaussian", "rademacher")


def check_method(method: str, owner: str) -> None:
    if method not in METHODS:
        raise ValueError(
            f"{owner}: divergence={method!r} is not a divergence method; use 'exact' (d "
            "Jacobian-vector products, exact, for small dimension) or 'hutchinson' (one "
            "vector-Jacobian product with a random probe, unbiased)."
        )


def check_probe(probe: str, owner: str) -> None:
    if probe not in PROBES:
        raise ValueError(
            f"{owner}: probe={probe!r} is not a probe kind; use 'gaussian' (standard normal "
            "entries) or 'rademacher' (+-1 entries, lower variance)."
        )


def draw_probe(
    key: PRNGKeyArray, shape: tuple[int, ...], dtype, probe: Probe = "gaussian"
) -> Float[Array, "..."]:
    """A Hutchinson probe of `shape` with $\\mathbb{E}[\\varepsilon\\varepsilon^\\top] = I$:
    standard normal (`"gaussian"`) or Rademacher (`"rademacher"`, +-1 with equal probability)
    entries. Draw it once per solve."""
    check_probe(probe, "draw_probe")
    if probe == "gaussian":
        return jr.normal(key, shape, dtype)
    return jr.rademacher(key, shape, dtype)


def divergence(
    fn: Callable[[Array], Array],
    z: Float[Array, "*shape"],
    *,
    method: Method = "exact",
    eps: Float[Array, "*shape"] | None = None,
) -> tuple[Float[Array, "*shape"], Float[Array, ""], Float[Array, ""]]:
    r"""`(fn(z), div, frob)`: the value of `fn` at one state `z`, its divergence
    $\operatorname{tr}(\partial\,\mathrm{fn}/\partial z)$ and the squared Frobenius norm of its
    Jacobian, all from one linearisation of `fn`.

    **Arguments:**

    - `fn`: maps a state of `z`'s shape to an array of the same shape (one sample; `jax.vmap`
      this function for a batch of independent samples).
    - `z`: the state, any shape (the divergence is over all its entries).
    - `method`: `"exact"` (the trace and $\lVert J\rVert_F^2$ from the `z.size` columns of the
      Jacobian, `z.size` JVPs) or `"hutchinson"` (needs `eps`).
    - `eps`: the Hutchinson probe, shaped like `z`, drawn once per solve (`draw_probe`).

    **Returns:** `fn(z)` (shape of `z`), the divergence (scalar, units 1/time for a velocity
    field) and $\lVert J\rVert_F^2$ (scalar, 1/time$^2$): exact for `"exact"`; for
    `"hutchinson"` the unbiased estimates $(\varepsilon^\top J)\varepsilon$ and
    $\lVert\varepsilon^\top J\rVert^2$ from one VJP.
    """
    check_method(method, "divergence")
    z = jnp.asarray(z)
    if method == "exact":
        fz, jvp_fn = jax.linearize(fn, z)
        if getattr(fz, "shape", None) != z.shape:
            raise ValueError(
                f"divergence: fn must return the state's shape {z.shape}; got "
                f"{getattr(fz, 'shape', type(fz).__name__)}."
            )
        size = z.size
        basis = jnp.eye(size, dtype=z.dtype).reshape((size,) + z.shape)
        cols = jax.vmap(jvp_fn)(basis).reshape(size, size)  # cols[i] = J e_i
        return fz, jnp.trace(cols), jnp.sum(jnp.square(cols))
    if eps is None:
        raise ValueError(
            "divergence: method='hutchinson' needs eps= (a probe shaped like z, drawn once per "
            "solve with draw_probe)."
        )
    eps = jnp.asarray(eps)
    if eps.shape != z.shape:
        raise ValueError(f"divergence: eps must have the state's shape {z.shape}; got {eps.shape}.")
    fz, vjp_fn = jax.vjp(fn, z)
    if getattr(fz, "shape", None) != z.shape:
        raise ValueError(
            f"divergence: fn must return the state's shape {z.shape}; got "
            f"{getattr(fz, 'shape', type(fz).__name__)}."
        )
    (eps_j,) = vjp_fn(eps.astype(fz.dtype))
    return fz, jnp.sum(eps_j * eps), jnp.sum(jnp.square(eps_j))
