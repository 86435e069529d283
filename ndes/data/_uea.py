"""UEA/UCR classification sets shipped inside aeon (Bagnall et al. 2018)."""

import dataclasses
import functools
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, Int

from .._checks import check_int
from ._features import cde_features, hermite_coefficients
from ._missing import drop_observations


def _aeon_data_dir() -> Path:
    import aeon.datasets

    return Path(aeon.datasets.__file__).parent / "data"


def _is_classification(ts_file: Path) -> bool:
    """A `.ts` file is a classification set when its header declares class labels."""
    with ts_file.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            low = line.strip().lower()
            if low.startswith("@classlabel"):
                return low.split()[1:2] == ["true"]
            if low.startswith("@data"):
                return False
    return False


@functools.cache
def available_uea() -> tuple[str, ...]:
    """The classification sets aeon ships inside its package (loadable offline), sorted.

    Asked of the installed aeon: every folder of `aeon/datasets/data` holding
    `NAME_TRAIN.ts` and `NAME_TEST.ts` whose header declares class labels (regression sets
    such as `Covid3Month` are left out). Raises `ImportError` without aeon (the `data`
    extra: `pip install ndes[data]`).
    """
    root = _aeon_data_dir()
    names = []
    for d in sorted(root.iterdir()):
        train, test = d / f"{d.name}_TRAIN.ts", d / f"{d.name}_TEST.ts"
        if train.is_file() and test.is_file() and _is_classification(train):
            names.append(d.name)
    return tuple(names)


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: a frozen dataclass of host NumPy arrays (data, never traced or trained).

    - `times` (N, L) float64: the integer time index 0, 1, ..., L-1 (also past each series'
      end, so times are strictly increasing everywhere; with `load_uea(max_length=...)` the
      index of the kept points divided by the stride, again 0, 1, ...).
    - `values` (N, L, C) float64: NaN where an observation was dropped or past the series' end.
    - `lengths` (N,) int: number of valid time points per series.
    - `labels` (N,) int: class index in `0 .. num_classes-1` (sorted order of aeon's labels).
    """

    times: Float[np.ndarray, "N L"]
    values: Float[np.ndarray, "N L C"]
    lengths: Int[np.ndarray, " N"]
    labels: Int[np.ndarray, " N"]


@dataclasses.dataclass(frozen=True)
class UEADataset:
    """A loaded set, as `load_uea` returns it: a frozen dataclass of host NumPy data.

    - `name`: the set's name as aeon ships it (e.g. `"BasicMotions"`).
    - `train`, `test`: the two `Split`s as aeon ships them (aeon's own train/test
      partition, not re-split), both padded to the same length `L` (the longest series of
      either split), after dropping observations and (by default) standardising.
    - `num_classes`: number of distinct labels over both splits; `labels` lie in
      `0 .. num_classes-1`.
    - `channels`: `C`, the number of raw channels of each series (before any feature
      construction such as `prepare_cde`'s `D = 2 C + 1`).
    - `mean`, `std` `(C,)` float64: the per-channel train statistics used to standardise,
      NaN-aware, computed after dropping observations, in the units of the raw data
      (computed even when `standardise=False`; a channel with zero spread gets `std = 1`).
      Map standardised values back with `values * std + mean`.
    - `stride`: `1`, or the subsampling stride `load_uea(max_length=...)` applied (a point
      at time `t` of the splits is point `t * stride` of the series as aeon ships it).
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    channels: int
    mean: Float[np.ndarray, " C"]
    std: Float[np.ndarray, " C"]
    stride: int = 1


def _to_split(X, y, classes, L) -> Split:
    n, c = len(X), X[0].shape[0]
    values = np.full((n, L, c), np.nan)
    lengths = np.array([x.shape[1] for x in X])
    for i, x in enumerate(X):
        values[i, : x.shape[1]] = np.asarray(x, dtype=float).T
    times = np.tile(np.arange(L, dtype=float), (n, 1))
    labels = np.searchsorted(classes, y)
    return Split(times, values, lengths, labels)


def load_uea(
    name: str,
    *,
    missing: float = 0.0,
    seed: int = 0,
    standardise: bool = True,
    max_length: int | None = None,
) -> UEADataset:
    """Load a shipped UEA/UCR classification set as its train/test splits (as shipped by aeon).

    Missingness: `drop_observations(values, lengths, missing, seed)` on the train split and
    `seed + 1` on the test split (first observation of a series always kept); the same seed
    gives the same mask. Standardisation: per channel, NaN-aware, train statistics only
    (computed after dropping), applied to both splits. Series of unequal length are padded
    to the longest (NaN values, increasing times; `lengths` says where each ends).

    **Arguments:**

    - `name`: any classification set that aeon ships (`ndes.data.available_uea()` lists
      them: univariate and multivariate, equal and unequal length).
    - `missing`: fraction in `[0, 1)` of each series' time points dropped (all channels
      set to NaN together, `round(missing * length)` points, never the first), as
      `drop_observations` does (default `0.0`: none).
    - `seed`: seed of the drop mask (train `seed`, test `seed + 1`; default `0`).
    - `standardise`: `True` (default) subtracts the train `mean` and divides by the train
      `std` per channel, in both splits; `False` returns the raw values (the statistics are
      still in the result).
    - `max_length`: `None` (default) keeps every time point; an int `>= 2` keeps every
      `stride`-th point of a set whose padded length `L` exceeds it, `stride =
      ceil(L / max_length)`, after the drop and the standardisation above (so both are those
      of the full series). Times are divided by `stride` (the kept points stay one time unit
      apart) and `lengths` become `(lengths - 1) // stride + 1`. What it is for: a neural CDE
      on long series learns more in the same number of steps from a subsampled series
      (measured in [results](../results.md): OSULeaf, ACSF1, ArrowHead), while the stable
      SDEs and MiniRocket do as well or better at full length.

    **Returns:** a `UEADataset`.

    Raises `ValueError` for a name
    aeon does not ship (nothing is downloaded), `missing` outside [0, 1), or a `max_length`
    that is not an int `>= 2`.
    """
    shipped = available_uea()
    if name not in shipped:
        raise ValueError(
            f"unknown dataset {name!r}; available offline (the classification sets aeon "
            f"ships): {', '.join(shipped)}."
        )
    if not 0.0 <= missing < 1.0:
        raise ValueError(
            f"missing fraction must lie in [0, 1), got {missing!r}; use e.g. 0.3, 0.5 or 0.7."
        )
    if max_length is not None:
        max_length = check_int(max_length, "max_length", "load_uea", 2, " or None (every point)")
    from aeon.datasets import load_classification

    Xtr, ytr = load_classification(name, split="train")
    Xte, yte = load_classification(name, split="test")
    classes = np.unique(np.concatenate([ytr, yte]))
    L = max(max(x.shape[1] for x in Xtr), max(x.shape[1] for x in Xte))
    tr, te = _to_split(Xtr, ytr, classes, L), _to_split(Xte, yte, classes, L)
    tr = dataclasses.replace(tr, values=drop_observations(tr.values, tr.lengths, missing, seed))
    te = dataclasses.replace(te, values=drop_observations(te.values, te.lengths, missing, seed + 1))
    mean = np.nanmean(tr.values, axis=(0, 1))
    std = np.nanstd(tr.values, axis=(0, 1))
    std = np.where(std > 0, std, 1.0)
    if standardise:
        tr = dataclasses.replace(tr, values=(tr.values - mean) / std)
        te = dataclasses.replace(te, values=(te.values - mean) / std)
    stride = 1
    if max_length is not None and L > max_length:
        stride = -(-L // max_length)
        tr, te = _subsample(tr, stride), _subsample(te, stride)
    return UEADataset(name, tr, te, len(classes), tr.values.shape[-1], mean, std, stride)


def _subsample(split: Split, stride: int) -> Split:
    """Every `stride`-th time point of a padded split, on a unit-spaced time grid."""
    keep = np.arange(0, split.times.shape[1], stride)
    return dataclasses.replace(
        split,
        times=split.times[:, keep] / stride,
        values=split.values[:, keep],
        lengths=(split.lengths - 1) // stride + 1,
    )


class CDEData(NamedTuple):
    """A split ready for `ndes.NeuralCDE` and `ndes.fit`: host NumPy arrays with a leading
    series axis `N`, in JAX's default float dtype (float32 unless `jax_enable_x64`).

    A `NamedTuple`, so it is a pytree (`ndes.fit` batches every leaf along `N`) and unpacks
    as `*inputs, labels = batch` (`ndes.train.classification_loss` does).

    - `times` (N, L): the observation times (`Split.times`).
    - `coeffs`: the 4-tuple of backward-Hermite cubic coefficients, each (N, L-1, D), of the
      features `[time, forward-filled values, observation counts]` (D = 2 C + 1).
    - `t1` (N,): each series' last real observation time (where its readout is taken).
    - `labels` (N,) int32: class indices.
    """

    times: Float[np.ndarray, "N L"]
    coeffs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    t1: Float[np.ndarray, " N"]
    labels: Int[np.ndarray, " N"]

    @property
    def channels(self) -> int:
        """D: the number of path channels (`NeuralCDE`'s `input_channels`)."""
        return int(self.coeffs[0].shape[-1])


def prepare_cde(
    split: Split, *, time_scale: float | None = None, count_scale: float | None = None
) -> CDEData:
    """A UEA split as neural-CDE inputs: features, Hermite coefficients, final times, labels.

    The one preparation used by `ndes train` (`data.name = "uea"`) and
    `examples/uea_classification.py`: `cde_features(split.times, split.values)` with its
    default scales (time divided by the longest span, counts by the padded length `L`, so
    every channel moves by O(1); Kidger et al. 2020 for the count channel), cast to JAX's
    default float dtype, then `hermite_coefficients`. The path is constant after a series'
    last observation, and `t1` is that observation's time.

    **Arguments:**

    - `split`: `UEADataset.train` or `.test` from `ndes.data.load_uea` (standardised values,
      NaN where missing).
    - `time_scale`, `count_scale`: passed to `cde_features`. The defaults agree between the
      train and test splits of `load_uea` (both padded to the same length on the same grid);
      otherwise pass the train split's scales to the test split's call.

    **Returns:** a `CDEData` of host arrays (see there for shapes).

    Raises `ValueError` as `cde_features` and `hermite_coefficients` do (e.g. an all-NaN
    series).
    """
    dtype = np.dtype(jnp.result_type(float))
    feats = cde_features(
        split.times, split.values, time_scale=time_scale, count_scale=count_scale
    ).astype(dtype)
    times = np.asarray(split.times, dtype)
    coeffs = tuple(np.asarray(c) for c in hermite_coefficients(times, feats))
    t1 = times[np.arange(len(times)), np.asarray(split.lengths) - 1]
    return CDEData(times, coeffs, t1, np.asarray(split.labels, np.int32))
