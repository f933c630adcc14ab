"""Evaluating samples: feature classifiers, their cache, and every metric of a sample set.

Inception weights cannot be fetched here, so image quality is measured in the feature space of
small classifiers the project trains itself, the way TF-GAN's MNIST Frechet distance does. The
metric math itself is in :mod:`jaxdiff.metrics`, which this package imports (never the other
way round). One module per job:

* :mod:`~jaxdiff.evaluation.features` -- :class:`ClassifierSpec` and :data:`CLASSIFIER_SPECS`,
  the networks (:class:`MnistFeatureNet`, :class:`DigitsFeatureNet`) and
  :class:`FeatureClassifier`, a trained one: images ``(N, H, W, C)`` in ``[0, 1]`` -> features
  ``(N, feature_dim)`` and class probabilities ``(N, num_classes)``;
* :mod:`~jaxdiff.evaluation.training` -- :func:`classifier_data` and :func:`train_classifier`;
* :mod:`~jaxdiff.evaluation.cache` -- :func:`load_classifier` (train on first use, then restore),
  :func:`reference_features` and :func:`cached_json`, all under ``$JAXDIFF_CACHE_DIR``;
* :mod:`~jaxdiff.evaluation.evaluate` -- :func:`evaluate_samples`: validates a ``samples.npy``
  array and returns a dict with every metric next to its reference values (real data against
  real data, the floor; noise against real data, the ceiling). ``python -m
  experiments.evaluate`` prints that dict as JSON.
"""

from jaxdiff.evaluation.cache import (
    ClassifierCacheWarning,
    ReferenceFeatures,
    cached_json,
    classifier_dir,
    load_classifier,
    reference_features,
)
from jaxdiff.evaluation.evaluate import (
    EVALUATION_KINDS,
    MIN_RECOMMENDED_SAMPLES,
    evaluate_samples,
)
from jaxdiff.evaluation.features import (
    CLASSIFIER_SPECS,
    ClassifierSpec,
    DigitsFeatureNet,
    FeatureClassifier,
    MnistFeatureNet,
)
from jaxdiff.evaluation.training import classifier_data, train_classifier

__all__ = [
    "CLASSIFIER_SPECS",
    "EVALUATION_KINDS",
    "MIN_RECOMMENDED_SAMPLES",
    "ClassifierCacheWarning",
    "ClassifierSpec",
    "DigitsFeatureNet",
    "FeatureClassifier",
    "MnistFeatureNet",
    "ReferenceFeatures",
    "cached_json",
    "classifier_data",
    "classifier_dir",
    "evaluate_samples",
    "load_classifier",
    "reference_features",
    "train_classifier",
]
