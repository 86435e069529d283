r"""Sample-quality measures between two sets of samples: MMD with an RBF kernel (unbiased) and
the sliced Wasserstein distance."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import check_int, check_positive

__all__ = ["mmd", "sliced_wasserstein"]


def _pair(x, y, owner):
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{owner}: x and y must be sample sets of shapes (n, d) and (m, d) with the same d; "
            f"got {x.shape} and {y.shape}."
        )
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"{owner}: each sample set needs at least 2 samples; got {x.shape[0]}, "
                         f"{y.shape[0]}.")  # fmt: skip
    return x, y


def _sq_dists(a, b):
    return jnp.maximum(jnp.sum(a**2, -1)[:, None] + jnp.sum(b**2, -1)[None, :] - 2 * a @ b.T, 0.0)


def mmd(
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, "m d"],
    bandwidth: float | None = None,
) -> Float[Array, ""]:
    r"""The unbiased estimate of the squared maximum mean discrepancy (Gretton, Borgwardt,
    Rasch, Schölkopf, Smola, "A kernel two-sample test", JMLR 2012, eq. 3) with the RBF
    kernel $k(a, b) = \exp(-\lVert a - b\rVert^2 / (2\ell^2))$:

    $$\widehat{\mathrm{MMD}}^2_u = \tfrac{1}{n(n-1)}\sum_{i\ne j}k(x_i, x_j)
    + \tfrac{1}{m(m-1)}\sum_{i\ne j}k(y_i, y_j) - \tfrac{2}{nm}\sum_{i,j}k(x_i, y_j).$$

    **Arguments:** `x` `(n, d)`, `y` `(m, d)`; `bandwidth` $\ell$ (same unit as the data;
    default: the median heuristic, the median pairwise distance of the pooled samples).

    **Returns:** a scalar (squared data-free unit; it can be slightly negative, being
    unbiased; 0 in expectation when the two distributions are equal). Cost $O((n+m)^2 d)$.
    """
    x, y = _pair(x, y, "mmd")
    dxx, dyy, dxy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)
    if bandwidth is None:
        pooled = jnp.concatenate([x, y])
        d = _sq_dists(pooled, pooled)
        iu = jnp.triu_indices(pooled.shape[0], 1)
        ell2 = jnp.median(d[iu])  # ell = median pairwise distance
    else:
        bandwidth = check_positive(bandwidth, "bandwidth", "mmd", ", or None (the median)")
        ell2 = bandwidth**2
    n, m = x.shape[0], y.shape[0]

    def k(d):
        return jnp.exp(-d / (2 * ell2))

    kxx = (jnp.sum(k(dxx)) - n) / (n * (n - 1))
    kyy = (jnp.sum(k(dyy)) - m) / (m * (m - 1))
    return kxx + kyy - 2 * jnp.mean(k(dxy))


def sliced_wasserstein(
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, "m d"],
    key: PRNGKeyArray,
    *,
    num_projections: int = 256,
    p: int = 2,
) -> Float[Array, ""]:
    r"""The sliced $p$-Wasserstein distance (Rabin, Peyré, Delon, Bernot 2011; Bonneel et al.
    2015) $\big(\mathbb E_\theta\,W_p^p(\theta^\top_\# \mu, \theta^\top_\# \nu)\big)^{1/p}$,
    $\theta$ uniform on the unit sphere, estimated with `num_projections` random directions
    drawn from `key`. Each 1-D distance is between empirical quantile functions: sorted
    projections when `n == m`, else both sets' quantiles at the `max(n, m)` mid-points
    $(i + 1/2)/\max(n, m)$ (linear interpolation). `x` `(n, d)` and `y` `(m, d)` are the
    two sample sets; `p` >= 1 is the order.

    **Returns:** a scalar in the data's unit; 0 for identical sets.
    """
    x, y = _pair(x, y, "sliced_wasserstein")
    num_projections = check_int(num_projections, "num_projections", "sliced_wasserstein")
    if p not in (1, 2):
        raise ValueError(f"sliced_wasserstein: p={p!r} must be 1 or 2.")
    theta = jr.normal(key, (num_projections, x.shape[1]), x.dtype)
    theta = theta / jnp.linalg.norm(theta, axis=-1, keepdims=True)
    px, py = jnp.sort(x @ theta.T, axis=0), jnp.sort(y @ theta.T, axis=0)
    n, m = px.shape[0], py.shape[0]
    if n != m:
        q = (jnp.arange(max(n, m)) + 0.5) / max(n, m)

        def quantiles(v):
            grid = (jnp.arange(v.shape[0]) + 0.5) / v.shape[0]
            return jax.vmap(lambda col: jnp.interp(q, grid, col), 1, 1)(v)

        px, py = quantiles(px), quantiles(py)
    w = jnp.mean(jnp.abs(px - py) ** p, axis=0)
    return jnp.mean(w) ** (1.0 / p)
