"""Sample-quality metrics: Frechet distance, classifier scores, MMD, sliced Wasserstein, bits/dim.

Inception weights cannot be fetched here, so image quality is measured in the feature space of
small classifiers the project trains itself (:mod:`jaxdiff.classifier`), the way TF-GAN's MNIST
Frechet distance does. Everything below except :func:`evaluate_samples` and the bits/dim helpers
is a pure function of NumPy arrays, computed on the host in float64.

Images (feature-space metrics):

* :class:`FeatureStats` -- running float64 sums ``n``, ``sum x``, ``sum x x^T`` over batches of
  features, giving the mean and covariance of a feature set without holding it in memory.
* :func:`frechet_distance` -- ``||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2)``, the
  Frechet distance of two Gaussians, with the matrix square root taken from symmetric eigh.
* :func:`classifier_score` (``exp E_x KL(p(y|x) || p(y))``, the "Inception score" of the feature
  classifier), :func:`class_histogram_kl`, :func:`mean_max_probability`, :func:`label_accuracy`.

Point clouds:

* :func:`mmd_rbf` -- squared maximum mean discrepancy with a mixture of RBF kernels whose
  bandwidths are multiples of the median pairwise distance (:func:`median_heuristic`).
* :func:`sliced_wasserstein` -- the mean 1-Wasserstein distance of 1-D projections on fixed
  random directions (:func:`wasserstein_1d` is the exact 1-D distance).

Likelihood: :func:`images_bits_per_dim` / :func:`mnist_bits_per_dim` wrap
:func:`jaxdiff.losses.bits_per_dim` (the DDPM variational bound) for a whole image set.

Everything together: :func:`evaluate_samples` validates a ``samples.npy`` array and returns a dict
with every metric next to its reference values (real data against real data, the floor; noise
against real data, the ceiling). ``python -m experiments.evaluate`` prints that dict as JSON.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff._validate import check_sample_labels

__all__ = [
    "EVALUATION_KINDS",
    "MIN_RECOMMENDED_SAMPLES",
    "FeatureStats",
    "class_histogram",
    "class_histogram_kl",
    "classifier_metrics",
    "classifier_score",
    "evaluate_samples",
    "frechet_distance",
    "frechet_distance_from_features",
    "images_bits_per_dim",
    "label_accuracy",
    "mean_max_probability",
    "median_heuristic",
    "mmd_rbf",
    "mnist_bits_per_dim",
    "point_metrics",
    "quantize_8bit",
    "sliced_wasserstein",
    "wasserstein_1d",
]

#: Values of ``kind`` accepted by :func:`evaluate_samples`.
EVALUATION_KINDS = ("mnist", "digits", "points")
#: Fewer samples than this still work but give a noisy (and, for the Frechet distance, biased
#: upwards) estimate; :func:`evaluate_samples` warns below it.
MIN_RECOMMENDED_SAMPLES = 1000


# --------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------


def _as_float64(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
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


def _check_probs(probs: Any, name: str = "probs") -> np.ndarray:
    p = _as_float64(probs, name, ndim=2)
    if p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"{name} must have shape (N, K) with N >= 1 and K >= 2; got {p.shape}.")
    if (p < -1e-6).any() or np.abs(p.sum(axis=1) - 1.0).max() > 1e-3:
        raise ValueError(
            f"{name} must hold probability vectors (non-negative rows summing to 1); got row "
            f"sums in [{p.sum(axis=1).min():.4g}, {p.sum(axis=1).max():.4g}]. Apply "
            "jax.nn.softmax to logits first."
        )
    return np.clip(p, 0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# Feature statistics and the Frechet distance
# --------------------------------------------------------------------------------------------------


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
        f = _as_float64(features, "features", ndim=2)
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
    mu1 = _as_float64(mu1, "mu1", ndim=1)
    mu2 = _as_float64(mu2, "mu2", ndim=1)
    c1 = _as_float64(cov1, "cov1", ndim=2)
    c2 = _as_float64(cov2, "cov2", ndim=2)
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


# --------------------------------------------------------------------------------------------------
# Classifier-based scores
# --------------------------------------------------------------------------------------------------


def classifier_score(probs: Any) -> float:
    """``exp(mean_i KL(p(y|x_i) || p(y)))`` with ``p(y) = mean_i p(y|x_i)``.

    The Inception score of Salimans et al. (2016) with the project's own classifier. It lies in
    ``[1, K]``: high when every sample is confidently one class and all classes occur equally.

    Args:
      probs: ``(N, K)`` class probabilities ``p(y|x_i)`` (rows sum to 1).
    """
    p = _check_probs(probs)
    marginal = p.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(marginal)), 0.0)
    return float(np.exp(terms.sum(axis=1).mean()))


def class_histogram(probs: Any) -> np.ndarray:
    """Fraction of samples whose most probable class is k: float64 ``(K,)`` summing to 1."""
    p = _check_probs(probs)
    return np.bincount(p.argmax(axis=1), minlength=p.shape[1]) / p.shape[0]


def class_histogram_kl(probs: Any) -> float:
    """``KL(h || uniform) = sum_k h_k log(K h_k)`` of the predicted-class histogram ``h``, in nats.

    0 when the predicted classes are exactly balanced, ``log K`` (2.303 for 10 classes) when every
    sample is predicted as the same class (mode collapse).

    Args:
      probs: ``(N, K)`` class probabilities.
    """
    h = class_histogram(probs)
    k = h.shape[0]
    nz = h > 0
    return float(np.sum(h[nz] * np.log(k * h[nz])))


def mean_max_probability(probs: Any) -> float:
    """Mean over samples of ``max_k p(k|x)``: the classifier's confidence, in ``[1/K, 1]``."""
    return float(_check_probs(probs).max(axis=1).mean())


def label_accuracy(probs: Any, labels: Any) -> float:
    """Fraction of samples whose most probable class equals the requested label.

    Args:
      probs: ``(N, K)`` class probabilities. labels: ``(N,)`` integer labels in ``0..K-1``.
    """
    p = _check_probs(probs)
    y = np.asarray(labels)
    if y.shape != (p.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"labels must be an integer array of shape ({p.shape[0]},); got {y.dtype} {y.shape}."
        )
    return float(np.mean(p.argmax(axis=1) == y))


def classifier_metrics(
    features: Any,
    probs: Any,
    ref_mean: Any,
    ref_cov: Any,
    labels: Any | None = None,
) -> dict[str, float]:
    """All classifier-based metrics of one sample set.

    Args:
      features: ``(N, D)`` penultimate-layer features of the samples.
      probs: ``(N, K)`` class probabilities of the samples.
      ref_mean, ref_cov: ``(D,)`` and ``(D, D)`` feature statistics of the reference set.
      labels: optional ``(N,)`` requested labels of class-conditional samples.

    Returns:
      ``{"fid", "classifier_score", "class_kl_uniform", "mean_max_prob"}`` plus
      ``"label_accuracy"`` when ``labels`` is given.
    """
    stats = FeatureStats.from_features(features)
    out = {
        "fid": frechet_distance(stats.mean, stats.cov, ref_mean, ref_cov),
        "classifier_score": classifier_score(probs),
        "class_kl_uniform": class_histogram_kl(probs),
        "mean_max_prob": mean_max_probability(probs),
    }
    if labels is not None:
        out["label_accuracy"] = label_accuracy(probs, labels)
    return out


# --------------------------------------------------------------------------------------------------
# Point clouds: MMD and sliced Wasserstein
# --------------------------------------------------------------------------------------------------


def _check_points(x: Any, name: str) -> np.ndarray:
    arr = _as_float64(x, name)
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

    ``W1 = integral |F_u(t) - F_v(t)| dt``, the same value as ``scipy.stats.wasserstein_distance``;
    the sets may have different sizes.
    """
    u = np.sort(_as_float64(u, "u", ndim=1))
    v = np.sort(_as_float64(v, "v", ndim=1))
    if u.size == 0 or v.size == 0:
        raise ValueError("wasserstein_1d needs at least one value in each set.")
    if u.size == v.size:
        return float(np.abs(u - v).mean())
    allv = np.sort(np.concatenate([u, v]))
    deltas = np.diff(allv)
    cu = np.searchsorted(u, allv[:-1], side="right") / u.size
    cv = np.searchsorted(v, allv[:-1], side="right") / v.size
    return float(np.sum(np.abs(cu - cv) * deltas))


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


# --------------------------------------------------------------------------------------------------
# Bits per dimension through the variational bound
# --------------------------------------------------------------------------------------------------


def quantize_8bit(images: Any) -> np.ndarray:
    """Snap images in ``[-1, 1]`` onto the 256-level grid ``k / 127.5 - 1`` (float32, same shape).

    The discretised decoder of DDPM (sec. 3.3) assumes 8-bit data; resized images are not on
    that grid until snapped.
    """
    x = np.asarray(images, dtype=np.float32)
    return (np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0).astype(np.float32)


def images_bits_per_dim(
    apply: Callable[..., jax.Array],
    params: Any,
    schedule: Any,
    images: Any,
    *,
    labels: Any | None = None,
    batch_size: int = 100,
    seed: int = 0,
    prediction: str = "eps",
    variance: str = "posterior",
) -> np.ndarray:
    """Variational-bound bits/dim of each image (DDPM eq. 5 via :func:`jaxdiff.bits_per_dim`).

    Args:
      apply: ``apply(params, x, t, labels=None) -> prediction`` (see
        :func:`jaxdiff.models.apply.split_model`).
      params: the model parameters (e.g. the EMA parameters).
      schedule: the :class:`jaxdiff.Schedule` the model was trained with.
      images: ``(N, H, W, C)`` images in ``[-1, 1]``; snapped to the 8-bit grid first.
      labels: optional ``(N,)`` int labels passed to ``apply`` (class-conditional models).
      batch_size: images per compiled call; the last batch is padded (results discarded).
      seed: batch ``b`` uses the noise key ``fold_in(key(seed), b)``.

    Returns:
      float64 ``(N,)`` bits/dim (``L_T + sum_t L_t``); T model calls per batch.
    """
    from jaxdiff.data import check_images
    from jaxdiff.losses import bits_per_dim

    x = quantize_8bit(check_images(images, name="images", value_range=(-1.0, 1.0)))
    n = x.shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}.")
    y = None if labels is None else np.asarray(labels, dtype=np.int32)
    if y is not None and y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the images; got {y.shape}.")
    batch_size = min(batch_size, n)

    @jax.jit
    def batch_bpd(params, x0, y0, key):
        def denoise_fn(x_t, t):
            return apply(params, x_t, t, y0)

        total, _ = bits_per_dim(
            denoise_fn, schedule, x0, key, prediction=prediction, variance=variance
        )
        return total

    key = jax.random.key(seed)
    out = []
    for b, i in enumerate(range(0, n, batch_size)):
        xb = x[i : i + batch_size]
        yb = None if y is None else y[i : i + batch_size]
        pad = batch_size - xb.shape[0]
        if pad:
            xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
            yb = None if yb is None else np.concatenate([yb, np.repeat(yb[-1:], pad)])
        res = batch_bpd(params, jnp.asarray(xb), None if yb is None else jnp.asarray(yb),
                        jax.random.fold_in(key, b))  # fmt: skip
        out.append(np.asarray(res, dtype=np.float64)[: batch_size - pad])
    return np.concatenate(out)


def mnist_bits_per_dim(
    apply: Callable[..., jax.Array],
    params: Any,
    schedule: Any,
    *,
    limit: int | None = 1000,
    batch_size: int = 100,
    seed: int = 0,
    image_size: int = 28,
    conditional: bool = False,
    data_dir: str | os.PathLike | None = None,
    prediction: str = "eps",
    variance: str = "posterior",
) -> float:
    """Mean variational-bound bits/dim of the first ``limit`` MNIST test images.

    The test images (resized to ``image_size`` if it is not 28) are snapped onto the 8-bit grid
    in ``[-1, 1]`` and passed through :func:`images_bits_per_dim`. The bound costs T (e.g. 1000)
    model evaluations per batch, so keep ``limit`` small on a CPU.

    Args:
      apply, params, schedule: the model (see :func:`images_bits_per_dim`).
      limit: number of test images (``None``: all 10,000).
      conditional: pass the true test labels to ``apply`` (class-conditional models).
      data_dir: prepared tensorflow-datasets folder (default ``$TFDS_DATA_DIR``).

    Returns:
      Mean bits/dim (a Python float). Published DDPM numbers on CIFAR-10 are ~3.7; MNIST models
      typically land between 1 and 2.
    """
    from jaxdiff.data import load_mnist

    images, labels = load_mnist("test", data_dir=data_dir, image_size=image_size, limit=limit)
    bpd = images_bits_per_dim(
        apply, params, schedule, images,
        labels=labels if conditional else None, batch_size=batch_size, seed=seed,
        prediction=prediction, variance=variance,
    )  # fmt: skip
    return float(bpd.mean())


# --------------------------------------------------------------------------------------------------
# evaluate_samples: validation + every metric next to its references
# --------------------------------------------------------------------------------------------------


def _check_sample_dtype(arr: np.ndarray, what: str) -> None:
    if not np.issubdtype(arr.dtype, np.floating):
        hint = (
            " For uint8 images divide by 255 (x.astype(np.float32) / 255)."
            if np.issubdtype(arr.dtype, np.integer)
            else ""
        )
        raise ValueError(
            f"samples must be a float array ({what}; the samples.npy convention is float32); got "
            f"dtype {arr.dtype}.{hint}"
        )


def _warn_few(n: int) -> None:
    if n < MIN_RECOMMENDED_SAMPLES:
        warnings.warn(
            f"only {n} samples: the metrics are computed, but with fewer than "
            f"{MIN_RECOMMENDED_SAMPLES} they are noisy (and the Frechet distance is biased "
            "upwards). The reference values below use the same number of samples, so compare "
            "against them, and use >= 1000 samples for numbers you report.",
            stacklevel=3,
        )


def _with_references(samples: dict, real: dict, noise: dict) -> dict:
    return {k: {"samples": v, "real": real[k], "noise": noise[k]} for k, v in samples.items()}


def evaluate_samples(
    samples: Any,
    kind: str,
    *,
    dataset: str | None = None,
    labels: Any | None = None,
    cache_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Every metric of a sample set, each next to its real-data floor and noise ceiling.

    Args:
      samples: float array following the ``samples.npy`` contract:

        * ``kind="mnist"``: ``(N, 28, 28, 1)`` (or ``(N, 32, 32, 1)``, mapped back to 28x28 for the
          classifier) in ``[0, 1]``;
        * ``kind="digits"``: ``(N, 8, 8, 1)`` in ``[0, 1]``;
        * ``kind="points"``: ``(N, D)`` in data coordinates, ``D`` the dimension of ``dataset``.

        Images need ``N >= feature_dim + 1`` (129 for MNIST, 65 for digits) for a covariance;
        use ``N >= 1000`` for a stable estimate.
      kind: ``"mnist"``, ``"digits"`` or ``"points"``.
      dataset: for ``kind="points"``, one of :data:`jaxdiff.data.POINT_DATASETS`.
      labels: optional ``(N,)`` int requested classes of class-conditional image samples; adds
        ``label_accuracy``.
      cache_dir: where the feature classifiers and the reference features are cached (default
        ``$JAXDIFF_CACHE_DIR``, ``$XDG_CACHE_HOME/jaxdiff`` or ``~/.cache/jaxdiff``); a missing
        classifier is trained (MNIST: a couple of minutes on a CPU), a stale or corrupt one is
        retrained.
      data_dir: prepared tensorflow-datasets folder for MNIST (default ``$TFDS_DATA_DIR``; with
        neither, MNIST is downloaded, see :func:`jaxdiff.data.load_mnist`).
      progress: show tqdm progress bars (on stderr) while training a classifier.

    Returns:
      A JSON-serialisable dict: ``kind``, ``num_samples``, ``metrics`` mapping each metric name to
      ``{"samples": value, "real": floor, "noise": ceiling}``, ``references`` (what "real" and
      "noise" were computed on; they use the same number of samples as ``samples``, up to the
      size of the reference pools) and, for images, ``feature_network`` and ``class_histogram``.

    Raises:
      ValueError: bad ``kind``/``dataset``, wrong shape, dtype or range, NaN/inf, too few
        samples, bad labels; the message says how to fix it.
    """
    if kind not in EVALUATION_KINDS:
        raise ValueError(f"kind must be one of {', '.join(EVALUATION_KINDS)}; got {kind!r}.")
    arr = np.asarray(samples)
    if kind == "points":
        if labels is not None:
            raise ValueError("labels are only used for image samples (kind mnist or digits).")
        return _evaluate_points(arr, dataset, cache_dir=cache_dir)
    if dataset is not None:
        raise ValueError(f"dataset is only used with kind='points'; got dataset={dataset!r}.")
    return _evaluate_images(
        arr, kind, labels=labels, cache_dir=cache_dir, data_dir=data_dir, progress=progress
    )


def _evaluate_images(
    arr: np.ndarray,
    kind: str,
    *,
    labels: Any | None,
    cache_dir: str | os.PathLike | None,
    data_dir: str | os.PathLike | None,
    progress: bool,
) -> dict[str, Any]:
    from jaxdiff import classifier as clf_mod
    from jaxdiff.data import check_images

    spec = clf_mod.CLASSIFIER_SPECS[kind]
    h, w, c = spec.image_shape
    _check_sample_dtype(arr, f"images (N, {h}, {w}, {c}) in [0, 1]")
    allowed = [(h, w, c)] + ([(32, 32, 1)] if kind == "mnist" else [])
    if arr.ndim == 3 and arr.shape[1:] in [s[:2] for s in allowed]:
        raise ValueError(
            f"samples must have shape (N, {h}, {w}, {c}) (channels last); got {arr.shape}. Add "
            "the channel axis with samples[..., None]."
        )
    if arr.ndim == 4 and arr.shape[1:] not in allowed and (*arr.shape[2:], arr.shape[1]) in allowed:
        raise ValueError(
            f"samples must be channels last, (N, {h}, {w}, {c}); got {arr.shape}, which looks "
            "channels first. Use np.moveaxis(samples, 1, -1)."
        )
    if arr.ndim != 4 or arr.shape[1:] not in allowed:
        also = " or (N, 32, 32, 1)" if kind == "mnist" else ""
        raise ValueError(
            f"{kind} samples must have shape (N, {h}, {w}, {c}){also}, channels last, in "
            f"[0, 1]; got shape {arr.shape}."
        )
    arr = check_images(arr, name="samples", value_range=(0.0, 1.0))
    n = arr.shape[0]
    need = spec.feature_dim + 1
    if n < need:
        raise ValueError(
            f"got {n} samples, but the Frechet distance in the {spec.feature_dim}-dimensional "
            f"{kind} feature space needs at least feature_dim + 1 = {need} samples for a "
            f"covariance; use >= {MIN_RECOMMENDED_SAMPLES} for a stable estimate."
        )
    y = None if labels is None else check_sample_labels(labels, n, spec.num_classes)
    _warn_few(n)

    classifier = clf_mod.load_classifier(
        kind, cache_dir=cache_dir, data_dir=data_dir, progress=progress
    )
    size = arr.shape[1]
    ref = clf_mod.reference_features(
        classifier, cache_dir=cache_dir, data_dir=data_dir, image_size=size
    )
    feats, probs = classifier.features_and_probs(np.clip(arr, 0.0, 1.0).astype(np.float32))
    n_ref = min(n, ref.real_features.shape[0])
    sample_metrics = classifier_metrics(feats, probs, ref.target_mean, ref.target_cov, y)
    real_metrics = classifier_metrics(
        ref.real_features[:n_ref], ref.real_probs[:n_ref], ref.target_mean, ref.target_cov,
        None if y is None else ref.real_labels[:n_ref],
    )  # fmt: skip
    noise_metrics = classifier_metrics(
        ref.noise_features[:n_ref], ref.noise_probs[:n_ref], ref.target_mean, ref.target_cov,
        None if y is None else ref.real_labels[:n_ref],
    )  # fmt: skip
    return {
        "kind": kind,
        "num_samples": n,
        "image_size": size,
        "metrics": _with_references(sample_metrics, real_metrics, noise_metrics),
        "class_histogram": [round(float(v), 6) for v in class_histogram(probs)],
        "references": {
            "target": ref.target_description,
            "real": f"{n_ref} {ref.real_description} (the floor)",
            "noise": f"{n_ref} {ref.noise_description} (the ceiling)",
        },
        "feature_network": classifier.describe(),
    }


#: Seeds of the fresh point-cloud samples: the reference set, the real-vs-real floor, the noise.
POINTS_REFERENCE_SEEDS = {"reference": 10_007, "real": 20_011, "noise": 30_011}
#: Point clouds larger than this are subsampled (fixed seed) to keep the O(N^2) MMD fast.
MAX_POINTS = 5000
_POINTS_REF_VERSION = "points-ref-v1"


def _evaluate_points(
    arr: np.ndarray, dataset: str | None, *, cache_dir: str | os.PathLike | None
) -> dict[str, Any]:
    from jaxdiff.data import POINT_DATASETS, make_points

    if dataset is None:
        raise ValueError(
            "kind='points' needs the data set the samples imitate: pass dataset= (--dataset) "
            f"one of {', '.join(sorted(POINT_DATASETS))}."
        )
    if dataset not in POINT_DATASETS:
        raise ValueError(
            f"unknown point dataset {dataset!r}; known: {', '.join(sorted(POINT_DATASETS))}."
        )
    dim = POINT_DATASETS[dataset][0]
    _check_sample_dtype(arr, f"points (N, {dim}) in data coordinates")
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(
            f"{dataset} samples must have shape (N, {dim}) (points in data coordinates); got "
            f"shape {arr.shape}."
        )
    n_all = arr.shape[0]
    if n_all < 2:
        raise ValueError(
            f"got {n_all} points; MMD needs at least 2 (use >= {MIN_RECOMMENDED_SAMPLES})."
        )
    if not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise ValueError(
            f"samples contain {n_bad} non-finite values (NaN or inf) out of {arr.size}. This "
            "usually means training diverged; lower the learning rate or clip gradients."
        )
    _warn_few(n_all)
    x = arr.astype(np.float64)
    if n_all > MAX_POINTS:
        x = x[np.random.default_rng(0).choice(n_all, MAX_POINTS, replace=False)]
    n = x.shape[0]
    seeds = POINTS_REFERENCE_SEEDS
    y_ref = make_points(dataset, n, seed=seeds["reference"]).astype(np.float64)
    bandwidth = median_heuristic(y_ref)
    sample_metrics = point_metrics(x, y_ref, bandwidth=bandwidth)

    from jaxdiff.classifier import cached_json

    def compute_refs() -> dict:
        real = make_points(dataset, n, seed=seeds["real"]).astype(np.float64)
        noise = np.random.default_rng(seeds["noise"]).standard_normal((n, dim))
        return {
            "real": point_metrics(real, y_ref, bandwidth=bandwidth),
            "noise": point_metrics(noise, y_ref, bandwidth=bandwidth),
        }

    refs = cached_json(
        "points-references.json", f"{_POINTS_REF_VERSION}/{dataset}/n={n}", compute_refs,
        cache_dir=cache_dir,
    )  # fmt: skip
    return {
        "kind": "points",
        "dataset": dataset,
        "num_samples": n_all,
        "num_evaluated": n,
        "metrics": _with_references(sample_metrics, refs["real"], refs["noise"]),
        "references": {
            "target": f"{n} fresh make_points({dataset!r}, seed={seeds['reference']}) points",
            "real": f"{n} more make_points({dataset!r}, seed={seeds['real']}) points (the floor)",
            "noise": f"{n} standard Gaussian N(0, I_{dim}) points, the diffusion prior "
            "(the ceiling)",
        },
        "kernel": {"bandwidth_median": bandwidth, "scales": [0.5, 1.0, 2.0]},
        "sliced_wasserstein_projections": 256,
    }
