"""Argument checks shared across ndes's modules (one message format for every caller)."""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["check_int", "check_positive", "finite_real", "positive_real"]


def check_int(value, name: str, owner: str, minimum: int = 1, hint: str = "") -> int:
    """`value` as a Python int, or a `ValueError` naming `owner`, `name` and the bound.

    Accepts any integral number (`int`, `numpy.integer`), not `bool`; `hint` is appended
    to the message (e.g. what the number counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{owner}: {name}={value!r} must be an int >= {minimum}{hint}.")
    return int(value)


def finite_real(value) -> float | None:
    """`value` as a Python float when it is a finite real number, else `None`.

    A real number is any `numbers.Real` (`int`, `float`, NumPy scalars) or a 0-d integer or
    floating array (NumPy or JAX, not traced); `bool` is not one."""
    if isinstance(value, bool | np.bool_):
        return None
    if not isinstance(value, numbers.Real):
        dtype = getattr(value, "dtype", None)
        if getattr(value, "shape", None) != () or dtype is None or dtype.kind not in "iuf":
            return None
    try:
        value = float(value)
    except (TypeError, ValueError):  # a traced scalar has no value yet
        return None
    return value if math.isfinite(value) else None


def positive_real(value) -> float | None:
    """`value` as a Python float when it is a finite real number > 0 (as `finite_real`
    defines a real number), else `None`."""
    value = finite_real(value)
    return value if value is not None and value > 0 else None


def check_positive(value, name: str, owner: str, hint: str = "") -> float:
    """`value` as a Python float, or a `ValueError` naming `owner` and `name`.

    Accepts what `positive_real` accepts (finite, > 0, not `bool`); `hint` is appended to
    the message (e.g. a typical value, or what the number means)."""
    out = positive_real(value)
    if out is None:
        raise ValueError(f"{owner}: {name}={value!r} must be a positive finite number{hint}.")
    return out
