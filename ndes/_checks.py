"""Argument checks shared across ndes's modules (one message format for every caller)."""

from __future__ import annotations

import numbers

__all__ = ["check_int"]


def check_int(value, name: str, owner: str, minimum: int = 1, hint: str = "") -> int:
    """`value` as a Python int, or a `ValueError` naming `owner`, `name` and the bound.

    Accepts any integral number (`int`, `numpy.integer`), not `bool`; `hint` is appended
    to the message (e.g. what the number counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{owner}: {name}={value!r} must be an int >= {minimum}{hint}.")
    return int(value)
