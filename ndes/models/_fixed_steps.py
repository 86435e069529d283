"""The step count of a fixed-step solve, known when the solve is built (`_common.py` uses
it to run diffrax's loop with exact `max_steps` and one checkpoint per step)."""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["fixed_step_count"]


def _concrete_scalar(x) -> np.ndarray | None:
    try:
        arr = np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None
    return arr if arr.shape == () and np.issubdtype(arr.dtype, np.number) else None


def fixed_step_count(stepsize_controller, t0, t1, dt0) -> int | None:
    """The number of steps diffrax's loop takes, when it is known when the solve is built:
    `len(ts) - 1` for `StepTo(ts)`; for `ConstantStepSize` with concrete `t0`, `t1`, `dt0`,
    `ceil(|t1 - t0| / nextafter(|dt0|))` in the solve's time dtype, as
    `diffrax.ConstantStepSize.init` computes it. `None` otherwise (adaptive controllers,
    traced times, an infinite `t1`)."""
    if type(stepsize_controller) is diffrax.StepTo:
        return int(np.shape(stepsize_controller.ts)[0]) - 1
    if type(stepsize_controller) is not diffrax.ConstantStepSize or dt0 is None:
        return None
    vals = [_concrete_scalar(x) for x in (t0, t1, dt0)]
    if any(v is None for v in vals):
        return None
    dtype = jnp.result_type(t0, t1, dt0)  # weak Python floats as diffrax types them
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    dtype = np.dtype(jax.dtypes.canonicalize_dtype(dtype))
    a, b, d = (np.asarray(v, dtype) for v in vals)
    if not (np.isfinite(a) and np.isfinite(b) and np.isfinite(d)) or d == 0:
        return None
    q = np.abs(b - a) / np.nextafter(np.abs(d), np.asarray(np.inf, dtype))
    n = int(np.ceil(q))
    return n if n >= 1 else None
