"""Datasets for the diffusion experiments: MNIST, sklearn digits, toy point clouds, 1-D mixtures.

Everything here returns plain arrays; nothing holds state and every random draw takes an explicit
seed or PRNG key. One module per concern:

* :mod:`~jaxdiff.data.mnist` -- :func:`load_mnist`: MNIST and Fashion-MNIST from a prepared
  tensorflow-datasets copy or the official IDX files (downloaded once, verified, cached), float32
  images ``(N, H, W, 1)`` in ``[-1, 1]`` and int32 labels ``(N,)``;
* :mod:`~jaxdiff.data.download` and :mod:`~jaxdiff.data.idx` -- verified downloads and the IDX
  file format;
* :mod:`~jaxdiff.data.toy` -- :func:`load_digits` (sklearn's 8x8 digits), :func:`make_points`
  (2-D moons / swiss roll / s-curve, 3-D swiss roll) and the 1-D Gaussian mixture;
* :mod:`~jaxdiff.data.batching` -- jittable, on-device batching for datasets that fit in device
  memory, so the training loop needs no host work per step;
* :mod:`~jaxdiff.data.images` -- :func:`check_images` and the ``[-1, 1] <-> [0, 1]`` conversions.

Only :mod:`~jaxdiff.data.mnist` imports ``tensorflow_datasets`` (lazily, and only to read a
prepared copy); scikit-learn is imported lazily too, so ``import jaxdiff`` stays fast.
"""

from jaxdiff.data.batching import (
    PermutationCache,
    batch_index_table,
    batch_indices,
    epoch_permutation,
    permutation_cache,
    steps_per_epoch,
    take_batch,
    take_batch_cached,
)
from jaxdiff.data.download import DataNotFoundError, DownloadError
from jaxdiff.data.images import check_images, from_unit_interval, to_unit_interval, unit_images
from jaxdiff.data.mnist import IDX_DATASETS, load_mnist
from jaxdiff.data.toy import (
    DEFAULT_MIXTURE,
    POINT_DATASETS,
    gaussian_mixture_1d,
    gaussian_mixture_moments,
    gaussian_mixture_pdf,
    load_digits,
    make_points,
)

__all__ = [
    "DEFAULT_MIXTURE",
    "IDX_DATASETS",
    "POINT_DATASETS",
    "DataNotFoundError",
    "DownloadError",
    "PermutationCache",
    "batch_index_table",
    "batch_indices",
    "check_images",
    "epoch_permutation",
    "from_unit_interval",
    "gaussian_mixture_1d",
    "gaussian_mixture_moments",
    "gaussian_mixture_pdf",
    "load_digits",
    "load_mnist",
    "make_points",
    "permutation_cache",
    "steps_per_epoch",
    "take_batch",
    "take_batch_cached",
    "to_unit_interval",
    "unit_images",
]
