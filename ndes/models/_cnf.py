r"""`ndes.CNF`: a continuous normalizing flow (FFJORD), solved by `ndes.diffeqsolve`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import check_int
from ._common import JointField, ModelOutput, SolverSettings, settings_from, solve_batch
from ._divergence import Method, Probe, check_method, check_probe, divergence, draw_probe
from ._mlp import MLPVectorField

__all__ = ["CNF", "StandardNormal"]

_DEFAULTS = dict(
    solver=diffrax.Tsit5(),
    stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-5),
    adjoint=diffrax.RecursiveCheckpointAdjoint(),
    dt0=None,
    max_steps=4096,
    batch_mode="joint",
)


class StandardNormal(eqx.Module):
    """The standard normal base distribution $\\mathcal N(0, I)$ of a CNF.

    Any base works that has `log_prob(z) -> scalar` for one sample `z` of shape `(d,)` and
    `sample(key, shape, dtype) -> array` (shape `(n, d)`).
    """

    def log_prob(self, z: Float[Array, " d"]) -> Float[Array, ""]:
        return -0.5 * (jnp.sum(jnp.square(z)) + z.size * math.log(2 * math.pi))

    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...], dtype) -> Float[Array, "..."]:
        return jr.normal(key, shape, dtype)


class _CNFField(eqx.Module):
    """The augmented field $(z, \\ell) \\mapsto (f(t, z), -\\nabla\\cdot f(t, z))$ on one sample
    or (`joint`) a batch, with the probe `eps` fixed for the solve. `with_rates` returns the
    same value together with RNODE's kinetic and Jacobian rates (batch sums) read from the
    *same* evaluation of $f$ and the same VJP (the protocol of `ndes.CNFKineticEnergy` /
    `ndes.CNFJacobianFrobenius`)."""

    field: Callable
    method: str = eqx.field(static=True)
    eps: Array | None
    joint: bool = eqx.field(static=True)

    def _one(self, t, z, eps, args):
        return divergence(lambda y: self.field(t, y, args), z, method=self.method, eps=eps)

    def _all(self, t, z, args):
        if not self.joint:
            return self._one(t, z, self.eps, args)
        eps_axis = None if self.eps is None else 0
        return jax.vmap(self._one, in_axes=(None, 0, eps_axis, None))(t, z, self.eps, args)

    def __call__(self, t, y, args):
        return self.with_rates(t, y, args)[0]

    def with_rates(self, t, y, args):
        z, logp = y
        fz, div, frob = self._all(t, z, args)
        rates = {"kinetic": jnp.sum(jnp.square(fz)), "frobenius": jnp.sum(frob)}
        return (fz, (-div).astype(logp.dtype)), rates


class CNF(eqx.Module):
    r"""A continuous normalizing flow: $\dot z = f_\theta(t, z)$ maps data $x = z(0)$ to
    $z(T)$ under a base density $p_Z$, and (instantaneous change of variables)
    $\log p(x) = \log p_Z(z(T)) + \int_0^T \nabla\!\cdot f(t, z(t))\,dt$.

    The density solve integrates the augmented state $(z, \ell)$, $\dot\ell = -\nabla\!\cdot f$,
    from `0` to `T` (FFJORD's convention); sampling draws $z(T) \sim p_Z$ and solves back to
    `0`. Both go through `ndes.diffeqsolve`, so every ndes regularizer and the exact counters
    apply; `stats["num_fevals"]` counts evaluations of the augmented field (each is one
    evaluation of $f$ plus one VJP (Hutchinson) or `d` JVPs (exact)).

    **Divergence**: `"hutchinson"` (default; one VJP with a probe
    drawn once per solve from the `key` and held fixed through it, as FFJORD; resampling inside
    a solve makes the adaptive solver's NFE explode, torchdiffeq #120) or `"exact"` (`d` JVPs;
    small `d`). `probe`: `"gaussian"` (default, FFJORD's) or `"rademacher"`.

    **Batches** (`x` of shape `(B, d)`): `batch_mode="joint"` (default, as FFJORD) solves the
    batch as one state with shared steps; `"vmap"` solves each sample alone. Regularizers are
    per-sample quantities (batch means) in both. RNODE's terms on $f$ itself, at no extra
    forward cost: `ndes.CNFKineticEnergy`, `ndes.CNFJacobianFrobenius` (the latter from the
    divergence's own probe and VJP). `ndes.KineticEnergy` / `ndes.JacobianFrobenius` also
    work but see the augmented field (they include the $\ell$ component).

    **Arguments:**

    - `vector_field`: `f(t, z, args) -> dz/dt` on one sample `z` of shape `(d,)`, e.g.
      `MLPVectorField(d, ..., time_input=True)`; see `CNF.mlp`.
    - `base`: the base distribution (default `StandardNormal()`).
    - `t1`: the flow's time horizon `T` (default 1.0).
    - `divergence`, `probe`: see above.
    - `settings` or the flat keywords `solver` (default Tsit5), `stepsize_controller`
      (default `PIDController(rtol=1e-3, atol=1e-5)`), `adjoint`, `dt0` (a positive step;
      sampling uses `-dt0`), `max_steps` (4096), `batch_mode`; see `ndes.models.SolverSettings`.

    **References:** Chen, Rubanova, Bettencourt, Duvenaud, "Neural ordinary differential
    equations", NeurIPS 2018; Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud, "FFJORD:
    free-form continuous dynamics for scalable reversible generative models", ICLR 2019.
    """

    vector_field: Callable
    base: Any
    t1: float = eqx.field(static=True)
    divergence: Method = eqx.field(static=True)
    probe: Probe = eqx.field(static=True)
    settings: SolverSettings

    def __init__(
        self,
        vector_field: Callable,
        *,
        base: Any = None,
        t1: float = 1.0,
        divergence: Method = "hutchinson",
        probe: Probe = "gaussian",
        settings: SolverSettings | None = None,
        **options: Any,
    ):
        check_method(divergence, "CNF")
        check_probe(probe, "CNF")
        t1 = float(t1)
        if not (math.isfinite(t1) and t1 > 0):
            raise ValueError(f"CNF: t1={t1} must be a finite positive time horizon, e.g. 1.0.")
        self.vector_field = vector_field
        self.base = StandardNormal() if base is None else base
        self.t1, self.divergence, self.probe = t1, divergence, probe
        self.settings = settings_from(_DEFAULTS, settings, options, "CNF")
        self.settings.check("CNF", "pass the step, e.g. dt0=0.05")
        if self.settings.dt0 is not None and self.settings.dt0 <= 0:
            raise ValueError(
                f"CNF: dt0={self.settings.dt0} must be positive (the density solve runs from 0 "
                "to t1; sampling uses -dt0)."
            )

    @classmethod
    def mlp(
        cls,
        data_size: int,
        width: int = 64,
        depth: int = 3,
        *,
        key: PRNGKeyArray,
        activation: Callable = jnp.tanh,
        **kwargs: Any,
    ) -> "CNF":
        """A CNF whose field is a time-conditioned `MLPVectorField(data_size, width, depth)`
        (tanh, as FFJORD's toy models); `kwargs` go to `CNF`."""
        field = MLPVectorField(
            data_size, width, depth, key=key, time_input=True, activation=activation
        )
        return cls(field, **kwargs)

    # -- checks ---------------------------------------------------------------------------
    def _check_x(self, x: ArrayLike, name: str, args: Any) -> Array:
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(float)
        if x.ndim not in (1, 2) or x.shape[-1] < 1:
            raise ValueError(f"CNF: `{name}` must have shape (d,) or (B, d); got shape {x.shape}.")
        d = x.shape[-1]
        try:
            out = jax.eval_shape(
                lambda y: self.vector_field(0.0, y, args), jax.ShapeDtypeStruct((d,), x.dtype)
            )
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"CNF: `{name}` has {d} features per sample (shape {x.shape}) but the vector "
                f"field fails on a state of size {d}; pass data of the dimension the field was "
                f"built for. ({e})"
            ) from e
        if getattr(out, "shape", None) != (d,):
            raise ValueError(
                f"CNF: the vector field must return shape ({d},) for `{name}` samples of "
                f"dimension {d}; got {getattr(out, 'shape', type(out).__name__)}."
            )
        msg = f"CNF: `{name}` contains NaN or inf; clean or drop those samples."
        try:
            if not np.all(np.isfinite(np.asarray(x))):
                raise ValueError(msg)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            x = eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), msg)
        return x

    def _eps(self, key, like: Array, method_name: str) -> Array | None:
        if self.divergence == "exact":
            return None
        if key is None:
            raise ValueError(
                f"CNF.{method_name}: divergence='hutchinson' needs key= (a PRNG key for the "
                "probe, drawn once per solve), e.g. jax.random.key(step); or build the CNF "
                "with divergence='exact'."
            )
        return draw_probe(key, like.shape, like.dtype, self.probe)

    # -- solves ---------------------------------------------------------------------------
    def _solve_augmented(self, z0, eps, t0, t1, regularizers, train_step, args, owner):
        batch = None if z0.ndim == 1 else z0.shape[0]
        dt0 = self.settings.dt0
        dt0 = None if dt0 is None else math.copysign(dt0, t1 - t0)

        def solve(y, regs, joint, e):
            field = _CNFField(self.vector_field, self.divergence, e, joint)
            return self.settings.diffeqsolve(
                diffrax.ODETerm(field), t0, t1, y, args, saveat=diffrax.SaveAt(t1=True),
                regularizers=regs, train_step=train_step, dt0=dt0,
            )  # fmt: skip

        l0 = jnp.zeros(z0.shape[:-1], z0.dtype)
        out = solve_batch(
            solve, (z0, l0), batch, self.settings.batch_mode, regularizers, owner, eps
        )
        z1, l1 = out.ys
        return out, z1[..., -1, :], l1[..., -1]

    def _base_log_prob(self, z: Array) -> Array:
        return self.base.log_prob(z) if z.ndim == 1 else jax.vmap(self.base.log_prob)(z)

    def log_prob(
        self,
        x: Float[ArrayLike, " d"] | Float[ArrayLike, "B d"],
        key: PRNGKeyArray | None = None,
        *,
        regularizers: Sequence = (),
        train_step: ArrayLike | None = None,
        args: Any = None,
    ) -> ModelOutput:
        """The log-density of `x` (nats): one solve of $(z, \\ell)$ from 0 to `t1`.

        **Arguments:** `x` of shape `(d,)` or `(B, d)`; `key` for the Hutchinson probe (not
        needed with `divergence="exact"`); `regularizers`, `train_step`, `args` as for
        `ndes.NeuralODE`.

        **Returns:** a `ModelOutput` with `ys` = $\\log p(x)$, shape `()` or `(B,)`;
        `final_state` = $z(T)$ (the base-space image of `x`); `penalty`, `penalty_terms`
        (per-sample means), `stats` (counters of the augmented solve).
        """
        x = self._check_x(x, "x", args)
        eps = self._eps(key, x, "log_prob")
        out, z1, l1 = self._solve_augmented(
            x, eps, 0.0, self.t1, regularizers, train_step, args, "CNF.log_prob"
        )
        logp = self._base_log_prob(z1) - l1
        return ModelOutput(logp, out.penalty, out.penalty_terms, out.stats, final_state=z1)

    def _base_draw(self, key: PRNGKeyArray, num_samples: int, dtype) -> Array:
        num_samples = check_int(num_samples, "num_samples", "CNF")
        d = self._data_size()
        return jnp.asarray(self.base.sample(key, (int(num_samples), d), dtype))

    def _data_size(self) -> int:
        field = self.vector_field
        if isinstance(field, MLPVectorField):
            return field.mlp.in_size - int(field.time_input)
        size = getattr(field, "data_size", None)
        if size is None:
            raise ValueError(
                "CNF: cannot tell the data dimension of this vector field for sampling; give "
                "the field a `data_size` attribute or use an MLPVectorField."
            )
        return int(size)

    def sample(
        self,
        key: PRNGKeyArray,
        num_samples: int,
        *,
        regularizers: Sequence = (),
        train_step: ArrayLike | None = None,
        args: Any = None,
        dtype=None,
    ) -> ModelOutput:
        """`num_samples` draws $x = z(0)$: $z(T) \\sim p_Z$ solved back to 0 (the state $z$ only,
        no divergence: the cheapest solve).

        **Returns:** a `ModelOutput` with `ys` of shape `(num_samples, d)`, `final_state` the
        base draws $z(T)$, and the counters of the sampling solve."""
        z1 = self._base_draw(key, num_samples, dtype or jnp.result_type(float))
        dt0 = None if self.settings.dt0 is None else -self.settings.dt0

        def solve(y, regs, joint, _):
            field = JointField(self.vector_field) if joint else self.vector_field
            return self.settings.diffeqsolve(
                diffrax.ODETerm(field), self.t1, 0.0, y, args, saveat=diffrax.SaveAt(t1=True),
                regularizers=regs, train_step=train_step, dt0=dt0,
            )  # fmt: skip

        out = solve_batch(
            solve, z1, z1.shape[0], self.settings.batch_mode, regularizers, "CNF.sample"
        )
        x = out.ys[:, -1, :]
        return ModelOutput(x, out.penalty, out.penalty_terms, out.stats, final_state=z1)

    def sample_and_log_prob(
        self,
        key: PRNGKeyArray,
        num_samples: int,
        *,
        regularizers: Sequence = (),
        train_step: ArrayLike | None = None,
        args: Any = None,
        dtype=None,
    ) -> ModelOutput:
        """Samples with their log-density: the augmented solve from `t1` back to 0 from
        $z(T) \\sim p_Z$, $\\log p(x) = \\log p_Z(z(T)) + \\ell(0)$.

        **Returns:** a `ModelOutput` with `ys = (x, log_p)`, shapes `(num_samples, d)` and
        `(num_samples,)`; `final_state` the base draws."""
        k_base, k_probe = jr.split(key)
        z1 = self._base_draw(k_base, num_samples, dtype or jnp.result_type(float))
        eps = self._eps(k_probe, z1, "sample_and_log_prob")
        out, x, l0 = self._solve_augmented(
            z1, eps, self.t1, 0.0, regularizers, train_step, args, "CNF.sample_and_log_prob"
        )
        logp = self._base_log_prob(z1) + l0
        return ModelOutput((x, logp), out.penalty, out.penalty_terms, out.stats, final_state=z1)
