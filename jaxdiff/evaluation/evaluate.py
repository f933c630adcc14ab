"""Every metric of a ``samples.npy`` array, next to its real-data floor and noise ceiling.

:func:`load_sample_file` reads a ``samples.npy`` (or ``labels.npy``) and says what a wrong file
is instead; :func:`evaluate_samples` validates the samples (shape, dtype, range, NaN, count,
labels) before any work, then computes the metrics of :mod:`jaxdiff.metrics`:

* images (``kind="mnist"`` or ``"digits"``): Frechet distance, classifier score, class
  histogram KL, confidence and label accuracy in the feature space of the cached classifier of
  :mod:`jaxdiff.evaluation.cache`;
* points (``kind="points"``): MMD and sliced Wasserstein against fresh points of the data set.

Each value comes with two references computed the same way on the same number of samples: real
data against the target (the floor) and noise against the target (the ceiling).
``python -m experiments.evaluate`` prints the result as JSON.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from typing import Any

import numpy as np

from jaxdiff._validate import check_images, check_sample_labels
from jaxdiff.data import POINT_DATASETS, make_points
from jaxdiff.evaluation import cache
from jaxdiff.evaluation.features import CLASSIFIER_SPECS
from jaxdiff.metrics import class_histogram, classifier_metrics, median_heuristic, point_metrics

__all__ = [
    "EVALUATION_KINDS",
    "MAX_POINTS",
    "MIN_RECOMMENDED_SAMPLES",
    "POINTS_REFERENCE_SEEDS",
    "evaluate_samples",
    "load_sample_file",
]

#: Values of ``kind`` accepted by :func:`evaluate_samples`.
EVALUATION_KINDS = ("mnist", "digits", "points")
#: Fewer samples than this still work but give a noisy (and, for the Frechet distance, biased
#: upwards) estimate; :func:`evaluate_samples` warns below it.
MIN_RECOMMENDED_SAMPLES = 1000


_EXPECTED_FILE = {
    "samples": "float32 (N, H, W, C) in [0, 1] or (N, D) points",
    "labels": "int (N,) class labels",
}


def _looks_like(path: str, head: bytes) -> str:
    """What a file whose first bytes are ``head`` looks like, when it is not a ``.npy``."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(path) as z:
                names = ", ".join(n.removesuffix(".npy") for n in z.namelist())
        except (OSError, zipfile.BadZipFile):
            return "a damaged .npz (zip) archive"
        return f"a .npz archive (arrays: {names or 'none'}); save one array with np.save"
    if head.startswith(b"\x80"):
        return "a Python pickle, which is never loaded"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:  # tolerate a character cut off by the end of ``head``
        text = head[: err.start].decode() if err.start >= len(head) - 3 else "\x00"
    if all(c.isprintable() or c in "\t\n\r" for c in text):
        return "text"
    return "binary data of another format"


def load_sample_file(path: str | os.PathLike, what: str = "samples") -> np.ndarray:
    """The array of a ``.npy`` file an experiment wrote (``samples.npy`` or ``labels.npy``).

    Args:
      path: the ``.npy`` file.
      what: ``"samples"`` (float32 images ``(N, H, W, C)`` in ``[0, 1]`` or points ``(N, D)``) or
        ``"labels"`` (int ``(N,)``); names the file and what it should hold in messages.

    Returns:
      The array, as saved (:func:`evaluate_samples` checks its shape, dtype and values).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: ``path`` is not a numeric ``.npy`` file; one line that says what it is instead
        (text, a ``.npz`` archive, a pickle, empty, truncated) and what to pass.
    """
    path = os.fspath(path)
    fix = f"pass the {what}.npy that an experiment wrote, {_EXPECTED_FILE[what]}"
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file {path} does not exist; {fix}.") from None
    except OSError as err:
        raise ValueError(
            f"cannot read {what} file {path} ({err.strerror or err}); {fix}."
        ) from None
    if not head:
        raise ValueError(f"{what} file {path} is empty (0 bytes); {fix}.")
    if not head.startswith(b"\x93NUMPY"):
        kind = _looks_like(path, head)
        raise ValueError(f"{path} is not a NumPy .npy file (it looks like {kind}); {fix}.")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        if "Object arrays" in str(err):
            raise ValueError(
                f"{path} holds Python objects (an object array), which are never loaded; {fix}."
            ) from None
        reason = " ".join(str(err).split())
        raise ValueError(f"{path} is a damaged or truncated .npy file ({reason}); {fix}.") from None


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
    spec = CLASSIFIER_SPECS[kind]
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

    classifier = cache.load_classifier(
        kind, cache_dir=cache_dir, data_dir=data_dir, progress=progress
    )
    size = arr.shape[1]
    ref = cache.reference_features(
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

    def compute_refs() -> dict:
        real = make_points(dataset, n, seed=seeds["real"]).astype(np.float64)
        noise = np.random.default_rng(seeds["noise"]).standard_normal((n, dim))
        return {
            "real": point_metrics(real, y_ref, bandwidth=bandwidth),
            "noise": point_metrics(noise, y_ref, bandwidth=bandwidth),
        }

    refs = cache.cached_json(
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
