"""The input check every metric shares: a finite real array, as float64."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_float64(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """``x`` as a float64 NumPy array of rank ``ndim`` (any rank if ``None``), all values finite.

    Raises:
      ValueError: a non-numeric dtype, the wrong rank, or NaN/inf (with their count).
    """
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a real numeric array; got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have rank {ndim}; got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise ValueError(
            f"{name} contains {n_bad} non-finite values (NaN or inf) out of {arr.size}; "
            "remove them (or fix whatever produced them) before computing metrics."
        )
    return arr
