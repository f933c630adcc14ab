"""Distances between point clouds ``(N, D)`` and ``(M, D)``: MMD and sliced Wasserstein.

* :func:`mmd_rbf` -- squared maximum mean discrepancy with a mixture of RBF kernels whose
  bandwidths are multiples of the median pairwise distance (:func:`median_heuristic`).
* :func:`sliced_wasserstein` -- the mean 1-Wasserstein distance of 1-D projections on fixed
  random directions (:func:`wasserstein_1d` is the exact 1-D distance, from SciPy).

Pure functions of NumPy arrays, computed on the host in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxdiff.metrics._arrays import as_float64

__all__ = ["median_heuristic", "mmd_rbf", "point_metrics", "sliced_wasserstein", "wasserstein_1d"]


def _check_points(x: Any, name: str) -> np.ndarray:
    arr = as_float64(x, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, D) with N, D >= 1; got {arr.shape}.")
    return arr


def _pair_d2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.clip(d2, 0.0, None)


def median_heuristic(x: Any, *, max_points: int = 1000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of the points ``x`` ``(N, D)`` (distinct pairs).

    At most ``max_points`` points (a fixed random subset from ``seed``) are used, so the cost
    stays ``O(max_points^2)``.
    """
    x = _check_points(x, "x")
    if x.shape[0] < 2:
        raise ValueError("the median heuristic needs at least 2 points.")
    if x.shape[0] > max_points:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False)]
    d2 = _pair_d2(x, x)[np.triu_indices(x.shape[0], k=1)]
    med = float(np.sqrt(np.median(d2)))
    if med <= 0.0:
        raise ValueError("all points coincide; the median heuristic bandwidth would be 0.")
    return med


def mmd_rbf(
    x: Any,
    y: Any,
    *,
    bandwidth: float | None = None,
    scales: Sequence[float] = (0.5, 1.0, 2.0),
    unbiased: bool = False,
    block: int = 2048,
) -> float:
    """Squared maximum mean discrepancy with a mixture of RBF kernels (Gretton et al. 2012).

    ``k(a, b) = mean_s exp(-||a - b||^2 / (2 (s h)^2))`` over ``s`` in ``scales``, with ``h =
    bandwidth`` (default: :func:`median_heuristic` of ``x`` and ``y`` pooled; pass a fixed ``h``,
    e.g. the median of a reference set, to compare several sample sets on the same kernel).
    ``MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)``.

    Args:
      x: ``(N, D)`` points. y: ``(M, D)`` points.
      unbiased: the U-statistic (drops ``i == j`` terms; can be slightly negative) instead of the
        default V-statistic (always ``>= 0`` and exactly 0 for identical sets).
      block: rows per block of the kernel matrices (memory ``O(block * max(N, M))``).

    Returns:
      ``MMD^2`` as a Python float (float64 inside).
    """
    x, y = _check_points(x, "x"), _check_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension; got {x.shape} and {y.shape}.")
    if unbiased and min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("the unbiased MMD needs at least 2 points in each set.")
    if bandwidth is None:
        bandwidth = median_heuristic(np.concatenate([x, y]))
    if not (bandwidth > 0 and math.isfinite(bandwidth)):
        raise ValueError(f"bandwidth must be a positive finite number; got {bandwidth!r}.")
    gammas = np.array([1.0 / (2.0 * (s * bandwidth) ** 2) for s in scales])
    if len(gammas) == 0 or (np.asarray(scales) <= 0).any():
        raise ValueError(f"scales must be a non-empty sequence of positive numbers; got {scales}.")

    def kernel_sum(a: np.ndarray, b: np.ndarray) -> float:
        total = 0.0
        for i in range(0, a.shape[0], block):
            d2 = _pair_d2(a[i : i + block], b)
            total += float(np.mean([np.exp(-g * d2).sum() for g in gammas]))
        return total

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = kernel_sum(x, x), kernel_sum(y, y), kernel_sum(x, y)
    if unbiased:  # k(a, a) = 1 for every RBF kernel
        return (kxx - n) / (n * (n - 1)) + (kyy - m) / (m * (m - 1)) - 2.0 * kxy / (n * m)
    return max(kxx / n**2 + kyy / m**2 - 2.0 * kxy / (n * m), 0.0)


def wasserstein_1d(u: Any, v: Any) -> float:
    """Exact 1-Wasserstein distance between two 1-D empirical distributions (equal weights).

    ``W1 = integral |F_u(t) - F_v(t)| dt`` of the values ``u`` ``(N,)`` and ``v`` ``(M,)`` (the
    sizes may differ), computed by ``scipy.stats.wasserstein_distance`` after the checks here.
    """
    import scipy.stats  # ~1 s to import, and only this function needs it

    u = as_float64(u, "u", ndim=1)
    v = as_float64(v, "v", ndim=1)
    if u.size == 0 or v.size == 0:
        raise ValueError("wasserstein_1d needs at least one value in each set.")
    return float(scipy.stats.wasserstein_distance(u, v))


def sliced_wasserstein(x: Any, y: Any, *, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance: mean over random unit directions of the 1-D ``W1``.

    ``SW1(x, y) = mean_l W1(<x, theta_l>, <y, theta_l>)`` with ``num_projections`` directions
    ``theta_l`` drawn uniformly on the unit sphere from ``np.random.default_rng(seed)``, so the
    directions are the same on every call with the same ``seed`` and dimension. In 1-D every
    direction is ``+-1`` and the result is exactly :func:`wasserstein_1d`.

    Args:
      x: ``(N, D)`` points; y: ``(M, D)`` points (``M`` may differ from ``N``).

    Returns:
      A Python float in the units of the data.
    """
    x, y = _check_points(x, "x"), _check_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension; got {x.shape} and {y.shape}.")
    if num_projections < 1:
        raise ValueError(f"num_projections must be >= 1; got {num_projections}.")
    theta = np.random.default_rng(seed).standard_normal((num_projections, x.shape[1]))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    px, py = x @ theta.T, y @ theta.T  # (N, L), (M, L)
    if x.shape[0] == y.shape[0]:
        return float(np.abs(np.sort(px, axis=0) - np.sort(py, axis=0)).mean())
    return float(np.mean([wasserstein_1d(px[:, i], py[:, i]) for i in range(num_projections)]))


def point_metrics(x: Any, y: Any, *, bandwidth: float | None = None) -> dict[str, float]:
    """``{"mmd2_rbf", "sliced_wasserstein"}`` between samples ``x`` (N, D) and reference ``y``."""
    return {
        "mmd2_rbf": mmd_rbf(x, y, bandwidth=bandwidth),
        "sliced_wasserstein": sliced_wasserstein(x, y),
    }
