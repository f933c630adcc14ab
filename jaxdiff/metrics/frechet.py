"""Feature statistics and the Frechet distance of two Gaussians (the FID formula).

* :class:`FeatureStats` -- running float64 sums ``n``, ``sum x``, ``sum x x^T`` over batches of
  ``(B, D)`` features, giving the mean ``(D,)`` and covariance ``(D, D)`` of a feature set
  without holding it in memory.
* :func:`frechet_distance` -- ``||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2)``, with
  the matrix square root taken from symmetric eigh.

Pure functions of NumPy arrays, computed on the host in float64.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from jaxdiff.metrics._arrays import as_float64

__all__ = ["FeatureStats", "frechet_distance", "frechet_distance_from_features"]


class FeatureStats(NamedTuple):
    """Running float64 sums over feature vectors, for their mean and covariance.

    Immutable (an optax-style NamedTuple): :meth:`update` returns new statistics. To keep the
    covariance accurate when the mean is large compared to the spread, the sums are taken of
    ``x - shift``, where ``shift`` is the mean of the first batch (any fixed vector gives the same
    mean and covariance up to rounding).

    Attributes:
      n: number of feature vectors seen.
      shift: ``(D,)`` float64, subtracted before summing.
      sum: ``(D,)`` float64, ``sum_i (x_i - shift)``.
      sum_outer: ``(D, D)`` float64, ``sum_i (x_i - shift)(x_i - shift)^T``.

    Example::

        stats = FeatureStats.zeros(128)
        for batch in batches:                      # each (B, 128)
            stats = stats.update(features(batch))
        mu, cov = stats.mean, stats.cov           # (128,), (128, 128)
    """

    n: int
    shift: np.ndarray
    sum: np.ndarray
    sum_outer: np.ndarray

    @classmethod
    def zeros(cls, dim: int) -> FeatureStats:
        """Empty statistics for ``dim``-dimensional features."""
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
            raise ValueError(f"dim must be an int >= 1; got {dim!r}.")
        return cls(0, np.zeros(dim), np.zeros(dim), np.zeros((dim, dim)))

    @classmethod
    def from_features(cls, features: Any, batch_size: int | None = None) -> FeatureStats:
        """Statistics of a whole ``(N, D)`` feature array (accumulated in batches if given)."""
        f = np.asarray(features)
        if f.ndim != 2:
            raise ValueError(f"features must have shape (N, D); got shape {f.shape}.")
        stats = cls.zeros(f.shape[1])
        step = f.shape[0] if batch_size is None else int(batch_size)
        for i in range(0, f.shape[0], max(step, 1)):
            stats = stats.update(f[i : i + step])
        return stats

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.sum.shape[0])

    def update(self, features: Any) -> FeatureStats:
        """Add a batch ``(B, D)`` of feature vectors (any float dtype; summed in float64)."""
        f = as_float64(features, "features", ndim=2)
        if f.shape[1] != self.dim:
            raise ValueError(
                f"features have dimension {f.shape[1]} but these statistics were started with "
                f"dimension {self.dim}."
            )
        if f.shape[0] == 0:
            return self
        shift = f.mean(axis=0) if self.n == 0 else self.shift
        c = f - shift
        return FeatureStats(self.n + f.shape[0], shift, self.sum + c.sum(axis=0),
                            self.sum_outer + c.T @ c)  # fmt: skip

    @property
    def mean(self) -> np.ndarray:
        """``(D,)`` float64 mean of the features seen."""
        if self.n < 1:
            raise ValueError("no features were added to these statistics yet.")
        return self.shift + self.sum / self.n

    @property
    def cov(self) -> np.ndarray:
        """``(D, D)`` float64 unbiased covariance (``ddof=1``, like ``np.cov``)."""
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors; have {self.n}.")
        m = self.sum / self.n
        cov = (self.sum_outer - self.n * np.outer(m, m)) / (self.n - 1)
        return 0.5 * (cov + cov.T)


def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix via eigh."""
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: Any, cov1: Any, mu2: Any, cov2: Any) -> float:
    """Frechet (2-Wasserstein) distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``.

    ``d^2 = ||mu1 - mu2||^2 + tr(C1) + tr(C2) - 2 tr((C1^1/2 C2 C1^1/2)^1/2)``
    (Dowson & Landau 1982; the FID of Heusel et al. 2017). The trace term equals
    ``tr((C1 C2)^1/2)`` but is computed from symmetric matrices only: ``C1^1/2`` from
    ``eigh(C1)``, then the eigenvalues of the symmetric PSD matrix ``C1^1/2 C2 C1^1/2``. So there
    is no complex ``sqrtm`` output to discard and singular covariances (fewer samples than
    dimensions) are handled; negative rounding-level eigenvalues are clipped to zero.

    Args:
      mu1, mu2: ``(D,)`` means. cov1, cov2: ``(D, D)`` symmetric PSD covariances.

    Returns:
      The squared distance ``d^2`` (what FID reports) as a Python float ``>= 0``, computed in
      float64 with NumPy.
    """
    mu1 = as_float64(mu1, "mu1", ndim=1)
    mu2 = as_float64(mu2, "mu2", ndim=1)
    c1 = as_float64(cov1, "cov1", ndim=2)
    c2 = as_float64(cov2, "cov2", ndim=2)
    d = mu1.shape[0]
    for name, shape in (("mu2", mu2.shape), ("cov1", c1.shape), ("cov2", c2.shape)):
        want = (d,) if name == "mu2" else (d, d)
        if shape != want:
            raise ValueError(
                f"{name} must have shape {want} to match mu1 of shape ({d},); got {shape}."
            )
    for name, c in (("cov1", c1), ("cov2", c2)):
        scale = max(float(np.abs(c).max()), 1e-300)
        if np.abs(c - c.T).max() > 1e-6 * scale:
            raise ValueError(f"{name} must be symmetric (a covariance matrix).")
    c1, c2 = 0.5 * (c1 + c1.T), 0.5 * (c2 + c2.T)
    s1 = _sqrtm_psd(c1)
    m = s1 @ c2 @ s1
    eig = np.linalg.eigvalsh(0.5 * (m + m.T))
    tr_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(c1) + np.trace(c2) - 2.0 * tr_sqrt)
    return max(value, 0.0)


def frechet_distance_from_features(features1: Any, features2: Any) -> float:
    """:func:`frechet_distance` between the Gaussian fits of two ``(N, D)`` feature sets."""
    a = FeatureStats.from_features(features1)
    b = FeatureStats.from_features(features2)
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)
