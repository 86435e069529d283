"""Equinox models solved by `ndes.diffeqsolve`, so every regularizer and counter applies."""

from ._mlp import MLPVectorField as MLPVectorField
