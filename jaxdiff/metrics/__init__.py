"""Sample-quality metrics: pure functions of arrays, one module per family.

* :mod:`~jaxdiff.metrics.frechet` -- :class:`FeatureStats` (running float64 mean ``(D,)`` and
  covariance ``(D, D)`` of ``(B, D)`` feature batches) and :func:`frechet_distance`, the FID
  formula ``||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2)``.
* :mod:`~jaxdiff.metrics.classification` -- scores of class probabilities ``(N, K)``:
  :func:`classifier_score` (``exp E_x KL(p(y|x) || p(y))``, the "Inception score"),
  :func:`class_histogram_kl`, :func:`mean_max_probability`, :func:`label_accuracy`, and
  :func:`classifier_metrics` (all of them plus the Frechet distance of the features).
* :mod:`~jaxdiff.metrics.points` -- point clouds ``(N, D)``: :func:`mmd_rbf` (RBF kernels at
  multiples of the :func:`median_heuristic` bandwidth) and :func:`sliced_wasserstein` (1-D
  projections on fixed random directions; :func:`wasserstein_1d` is the exact 1-D distance).
* :mod:`~jaxdiff.metrics.likelihood` -- :func:`images_bits_per_dim` / :func:`mnist_bits_per_dim`,
  the DDPM variational bound of :func:`jaxdiff.losses.bits_per_dim` over a whole image set.

Everything but the bits/dim helpers is computed on the host in float64 with NumPy. Nothing here
knows about feature networks, caches or data sets of samples: :mod:`jaxdiff.evaluation` trains
the feature classifiers and computes these metrics for a ``samples.npy`` array
(:func:`jaxdiff.evaluation.evaluate_samples`); this package never imports it.
"""

from jaxdiff.metrics.classification import (
    class_histogram,
    class_histogram_kl,
    classifier_metrics,
    classifier_score,
    label_accuracy,
    mean_max_probability,
)
from jaxdiff.metrics.frechet import FeatureStats, frechet_distance, frechet_distance_from_features
from jaxdiff.metrics.likelihood import images_bits_per_dim, mnist_bits_per_dim, quantize_8bit
from jaxdiff.metrics.points import (
    median_heuristic,
    mmd_rbf,
    point_metrics,
    sliced_wasserstein,
    wasserstein_1d,
)

__all__ = [
    "FeatureStats",
    "class_histogram",
    "class_histogram_kl",
    "classifier_metrics",
    "classifier_score",
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
