"""UEA/UCR classification sets shipped inside aeon (Bagnall et al. 2018)."""

import dataclasses
import functools
from pathlib import Path

import numpy as np
from jaxtyping import Float, Int

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
      end, so times are strictly increasing everywhere).
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
    """A loaded set. `mean`/`std` (C,) are the train statistics used to standardise (in the
    units of the raw data; computed even when `standardise=False`)."""

    name: str
    train: Split
    test: Split
    num_classes: int
    channels: int
    mean: Float[np.ndarray, " C"]
    std: Float[np.ndarray, " C"]


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
    name: str, *, missing: float = 0.0, seed: int = 0, standardise: bool = True
) -> UEADataset:
    """Load a shipped UEA/UCR classification set as its train/test splits (as shipped by aeon).

    Missingness: `drop_observations(values, lengths, missing, seed)` on the train split and
    `seed + 1` on the test split (first observation of a series always kept); the same seed
    gives the same mask. Standardisation: per channel, NaN-aware, train statistics only
    (computed after dropping), applied to both splits. Series of unequal length are padded
    to the longest (NaN values, increasing times; `lengths` says where each ends).

    `name`: any classification set that aeon ships (`ndes.data.available_uea()` lists them:
    univariate and multivariate, equal and unequal length). Raises `ValueError` for a name
    aeon does not ship (nothing is downloaded) or `missing` outside [0, 1).
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
    return UEADataset(name, tr, te, len(classes), tr.values.shape[-1], mean, std)
