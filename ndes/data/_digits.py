"""scikit-learn's shipped 8x8 digits (1797 images, 10 classes)."""

import numpy as np
from jaxtyping import Float, Int


def load_digits(
    *, test_fraction: float = 0.25, seed: int = 0
) -> tuple[
    Float[np.ndarray, "Ntr 64"],
    Int[np.ndarray, " Ntr"],
    Float[np.ndarray, "Nte 64"],
    Int[np.ndarray, " Nte"],
]:
    """scikit-learn's 8x8 digits (1797 images, 10 classes, shipped with scikit-learn: no
    download), split and standardised with the train statistics.

    **Arguments:**

    - `test_fraction`: the share of images in the test split, in (0, 1); the split is
      stratified by class.
    - `seed`: seed of the split; the same seed gives the same split.

    **Returns:** `(x_train, y_train, x_test, y_test)`: float32 features of shape `(N, 64)`
    (each pixel standardised by the train mean and standard deviation) and int labels of
    shape `(N,)`.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}.")
    from sklearn.datasets import load_digits as _ld
    from sklearn.model_selection import train_test_split

    X, y = _ld(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(
        X, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    mean, std = Xtr.mean(0), Xtr.std(0)
    std = np.where(std > 0, std, 1.0)
    return (
        ((Xtr - mean) / std).astype(np.float32),
        ytr,
        ((Xte - mean) / std).astype(np.float32),
        yte,
    )
