"""Scores of a sample set from a classifier's outputs: class probabilities ``(N, K)``.

* :func:`classifier_score` -- ``exp E_x KL(p(y|x) || p(y))``, the "Inception score" of the
  feature classifier;
* :func:`class_histogram` / :func:`class_histogram_kl` -- the predicted-class histogram and its
  KL divergence from uniform (mode collapse);
* :func:`mean_max_probability` (confidence) and :func:`label_accuracy` (class-conditional
  samples);
* :func:`classifier_metrics` -- all of them plus the Frechet distance of the features.

Pure functions of NumPy arrays, computed on the host in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxdiff.metrics._arrays import as_float64
from jaxdiff.metrics.frechet import FeatureStats, frechet_distance

__all__ = [
    "class_histogram",
    "class_histogram_kl",
    "classifier_metrics",
    "classifier_score",
    "label_accuracy",
    "mean_max_probability",
]


def _check_probs(probs: Any, name: str = "probs") -> np.ndarray:
    p = as_float64(probs, name, ndim=2)
    if p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"{name} must have shape (N, K) with N >= 1 and K >= 2; got {p.shape}.")
    if (p < -1e-6).any() or np.abs(p.sum(axis=1) - 1.0).max() > 1e-3:
        raise ValueError(
            f"{name} must hold probability vectors (non-negative rows summing to 1); got row "
            f"sums in [{p.sum(axis=1).min():.4g}, {p.sum(axis=1).max():.4g}]. Apply "
            "jax.nn.softmax to logits first."
        )
    return np.clip(p, 0.0, 1.0)


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
