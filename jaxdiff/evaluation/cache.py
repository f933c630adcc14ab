"""The on-disk cache of the evaluation: feature classifiers, their reference features, JSON.

Layout under ``<cache_dir>`` (default :func:`jaxdiff._paths.default_cache_dir`:
``$JAXDIFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxdiff`` or ``~/.cache/jaxdiff``):

* ``classifiers/<kind>-<version>/params/`` -- the trained parameters, an orbax checkpoint
  written by :class:`jaxdiff.checkpoint.Checkpointer`, which commits it atomically (a reader
  sees the whole checkpoint or none); its metadata holds the spec, test accuracy and a fresh
  ``cache_id``. ``meta.json`` next to it is a readable copy of that metadata, written after the
  commit (and rewritten from the checkpoint if it is found damaged). Bumping a spec's
  ``version`` moves to a new folder; a cache whose stored spec differs from the code, or that
  fails to restore (corrupt or truncated files, NaN parameters), is retrained with a
  :class:`ClassifierCacheWarning`.
* ``classifiers/<kind>-<version>/reference-<size>.npz`` -- :class:`ReferenceFeatures`: the
  target statistics and the features of real and noise images at the sample size ``<size>``.
* ``<name>.json`` -- small tables of :func:`cached_json` (e.g. the point-cloud references),
  with the SHA-256 of their content, so that a damaged table is recomputed, never trusted.

Files are written to a temporary sibling and moved into place with ``os.replace``, so a crash or
a concurrent reader never sees half a file; no pickle anywhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdiff._paths import resolve_cache_dir
from jaxdiff.checkpoint import (
    CheckpointCorruptionWarning,
    Checkpointer,
    CheckpointSaveError,
    UnverifiedCheckpointWarning,
)
from jaxdiff.evaluation import training
from jaxdiff.evaluation.features import (
    ClassifierSpec,
    FeatureClassifier,
    build_network,
    get_spec,
)
from jaxdiff.metrics import FeatureStats

__all__ = [
    "ClassifierCacheWarning",
    "ReferenceFeatures",
    "cached_json",
    "classifier_dir",
    "load_classifier",
    "reference_features",
]


class ClassifierCacheWarning(UserWarning):
    """A cached classifier or reference file was stale or corrupt and is being rebuilt."""


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a unique temporary sibling of ``path``, then ``os.replace`` it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# Classifiers
# --------------------------------------------------------------------------------------------------


def classifier_dir(kind: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/classifiers/<kind>-<version>``: where the classifier of ``kind`` lives."""
    spec = get_spec(kind)
    return resolve_cache_dir(cache_dir) / "classifiers" / f"{spec.kind}-{spec.version}"


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """Silence orbax's INFO/WARNING logs ("Given directory is read only", ...) for a moment."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def _committed_step(path: Path) -> int | None:
    """The committed checkpoint step in ``path/params``, or ``None`` if there is none yet."""
    if not (path / "params").is_dir():
        return None
    with _quiet_absl(), Checkpointer(path / "params", read_only=True) as ckpt:
        return ckpt.latest_step()


def _save_classifier(clf: FeatureClassifier, path: Path) -> None:
    """Cache ``clf`` in ``path``: ``params/`` (orbax, committed atomically), then ``meta.json``.

    Readers restore only a committed checkpoint, so an interrupted save leaves no half cache.
    If another process committed the same classifier first, its checkpoint is kept.
    """
    try:
        with Checkpointer(path / "params", max_to_keep=1, async_save=False) as ckpt:
            saved = ckpt.save(clf.meta["train_steps"], clf.params, metadata=clf.meta, force=True)
    except CheckpointSaveError:
        if _committed_step(path) is None:
            raise
        saved = False  # another process committed between our check and our save
    if saved:  # else the step was there already: the process that committed it writes meta.json
        text = json.dumps(clf.meta, indent=2) + "\n"
        _atomic_write(path / "meta.json", lambda p: p.write_text(text))


def _restore_classifier(spec: ClassifierSpec, path: Path) -> FeatureClassifier | None:
    """The classifier cached in ``path``; ``None`` if no checkpoint is committed there yet.

    Raises (``ValueError`` and whatever orbax raises) with the reason if the committed
    checkpoint is corrupt, truncated or stale (another spec), or holds NaN.
    """
    if _committed_step(path) is None:
        return None
    graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: build_network(spec)), nnx.Param)
    with _quiet_absl(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Checkpointer(path / "params", read_only=True) as ckpt:
            params, meta = ckpt.restore(abstract_params)
    corrupt = [w for w in caught if issubclass(w.category, CheckpointCorruptionWarning)]
    for w in caught:  # unrelated warnings (deprecations, ...) pass through unchanged
        # A step saved without fingerprints: not a thing a user can act on at every
        # evaluation, and the checks below (spec, version, finite parameters) still run.
        if w not in corrupt and not issubclass(w.category, UnverifiedCheckpointWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if corrupt:  # a damaged step was skipped: the cache is not what was written
        raise ValueError("; ".join(str(w.message) for w in corrupt))
    if meta.get("version") != spec.version or ClassifierSpec.from_json(meta.get("spec")) != spec:
        raise ValueError(
            f"it was trained with a different spec ({meta.get('spec')}; the code now uses "
            f"{spec.to_json()})"
        )
    leaves = jax.tree.leaves(params)
    if not all(bool(jnp.isfinite(leaf).all()) for leaf in leaves):
        raise ValueError("its parameters contain NaN or inf")
    meta = {**meta, "path": str(path)}
    return FeatureClassifier(spec, graphdef, params, meta)


def load_classifier(
    kind: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> FeatureClassifier:
    """The cached feature classifier of ``kind``, training (and caching) it on first use.

    A cache that cannot be restored (corrupt or truncated files, a stored spec that differs from
    :data:`jaxdiff.evaluation.features.CLASSIFIER_SPECS`, NaN parameters) is deleted and
    retrained, with a :class:`ClassifierCacheWarning` saying why.

    Args:
      kind: ``"mnist"`` or ``"digits"``.
      cache_dir: cache root (default :func:`jaxdiff._paths.default_cache_dir`).
      data_dir: prepared tensorflow-datasets folder for training MNIST.
      progress: tqdm bar while training.
    """
    spec = get_spec(kind)
    path = classifier_dir(kind, cache_dir)
    memo = _LOADED.get((str(path), spec))
    if memo is not None and _cache_id_on_disk(path) == memo.meta["cache_id"]:
        return memo
    if path.exists():
        try:
            clf = _restore_classifier(spec, path)
        except Exception as err:  # any failure means: rebuild
            warnings.warn(
                f"the cached {kind} feature classifier at {path} is corrupt or stale "
                f"({type(err).__name__}: {err}); deleting it and training a new one.",
                ClassifierCacheWarning,
                stacklevel=2,
            )
            shutil.rmtree(path, ignore_errors=True)
        else:
            if clf is not None:
                _heal_meta_json(clf, path)
                _LOADED[(str(path), spec)] = clf
                return clf
    if progress:
        print(
            f"jaxdiff: no cached {kind} feature classifier in {path}; training one"
            + (" (a couple of minutes on a CPU)" if kind == "mnist" else ""),
            file=sys.stderr,
        )
    clf = training.train_classifier(kind, data_dir=data_dir, progress=progress)
    if clf.meta["test_accuracy"] < spec.min_test_accuracy:
        warnings.warn(
            f"the {kind} feature classifier reached only {clf.meta['test_accuracy']:.4f} test "
            f"accuracy (expected >= {spec.min_test_accuracy}); metrics still work but the "
            "feature space is weaker than intended.",
            stacklevel=2,
        )
    _save_classifier(clf, path)
    clf.meta["path"] = str(path)
    _LOADED[(str(path), spec)] = clf
    return clf


#: Classifiers loaded in this process, by (cache path, spec): repeated evaluations neither
#: restore the checkpoint nor recompile the forward pass again. An entry is used only while the
#: ``cache_id`` in the directory's ``meta.json`` still matches.
_LOADED: dict[tuple[str, ClassifierSpec], FeatureClassifier] = {}


def _heal_meta_json(clf: FeatureClassifier, path: Path) -> None:
    """Rewrite ``path/meta.json`` from the restored checkpoint's metadata if it is damaged (with a
    :class:`ClassifierCacheWarning`) or missing (quietly: its writer may not have got to it)."""
    meta = {k: v for k, v in clf.meta.items() if k != "path"}  # "path" is where it is now
    try:
        on_disk = json.loads((path / "meta.json").read_text())
        if isinstance(on_disk, dict) and {**on_disk, "path": None} == {**meta, "path": None}:
            return
        reason = "it differs from the checkpoint's metadata"
    except FileNotFoundError:
        reason = None
    except (OSError, ValueError) as err:
        reason = f"{type(err).__name__}: {err}"
    if reason is not None:
        warnings.warn(
            f"the cached {clf.spec.kind} feature classifier's {path / 'meta.json'} is damaged "
            f"({reason}); rewriting it from the checkpoint.",
            ClassifierCacheWarning,
            stacklevel=3,
        )
    text = json.dumps(meta, indent=2) + "\n"
    with contextlib.suppress(OSError):  # a read-only cache: the checkpoint alone still works
        _atomic_write(path / "meta.json", lambda p: p.write_text(text))


def _cache_id_on_disk(path: Path) -> str | None:
    try:
        return json.loads((path / "meta.json").read_text()).get("cache_id")
    except (OSError, ValueError, AttributeError):
        return None


# --------------------------------------------------------------------------------------------------
# Reference features and JSON tables
# --------------------------------------------------------------------------------------------------


def _table_digest(table: dict) -> str:
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()


def _read_table(path: Path) -> dict:
    """The JSON table at ``path``, checked against the SHA-256 stored with it; OSError or
    ValueError if it is unreadable or unverified (a table written before checksums has none)."""
    table = json.loads(path.read_text())
    if not isinstance(table, dict):
        raise ValueError("not a JSON object")
    digest = table.pop("_sha256", None)
    if digest is None:
        raise ValueError("it has no SHA-256 to verify it; an earlier jaxdiff wrote it")
    if digest != _table_digest(table):
        raise ValueError("its content does not match its SHA-256")
    return table


def cached_json(
    filename: str,
    key: str,
    compute: Callable[[], dict],
    *,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """``compute()`` cached under ``key`` in the JSON file ``<cache_dir>/<filename>``.

    An unreadable, damaged or unverified file (its SHA-256 does not match, or it has none) is
    rebuilt with a :class:`ClassifierCacheWarning`.
    """
    path = resolve_cache_dir(cache_dir) / filename
    table: dict = {}
    if path.exists():
        try:
            table = _read_table(path)
        except (OSError, ValueError) as err:
            warnings.warn(
                f"the reference cache {path} is unusable ({err}); recomputing it.",
                ClassifierCacheWarning,
                stacklevel=2,
            )
            table = {}
    if isinstance(table.get(key), dict):
        return table[key]
    value = compute()
    table[key] = value
    text = json.dumps({**table, "_sha256": _table_digest(table)}, indent=1) + "\n"
    _atomic_write(path, lambda p: p.write_text(text))
    return value


@dataclasses.dataclass(frozen=True)
class ReferenceFeatures:
    """Reference sets of a classifier, as features (cached as ``reference-<size>.npz``).

    Attributes:
      target_mean, target_cov: float64 ``(F,)``, ``(F, F)`` statistics of the target set (MNIST:
        the 10,000 test images; digits: the 500 held-out images). Samples are compared to these.
      real_features, real_probs, real_labels: ``(R, F)``, ``(R, K)``, ``(R,)`` of real training
        images at the sample resolution (MNIST: the first 10,000), for the real-vs-real floor.
      noise_features, noise_probs: ``(R, F)``, ``(R, K)`` of uniform ``[0, 1]`` noise images at
        the sample resolution, for the ceiling.
      target_description, real_description, noise_description: what each set is, in words.
    """

    target_mean: np.ndarray
    target_cov: np.ndarray
    real_features: np.ndarray
    real_probs: np.ndarray
    real_labels: np.ndarray
    noise_features: np.ndarray
    noise_probs: np.ndarray
    target_description: str
    real_description: str
    noise_description: str


_REFERENCE_VERSION = "ref-v2"
_REFERENCE_POOL = 10_000
_NOISE_SEED = 1234


def _compute_references(
    clf: FeatureClassifier, data_dir: str | os.PathLike | None, image_size: int
) -> dict[str, np.ndarray]:
    kind = clf.spec.kind
    size_arg = image_size if kind == "mnist" else None
    x_test, _ = training.classifier_data(kind, "test", data_dir=data_dir)
    x_real, y_real = training.classifier_data(
        kind, "train", data_dir=data_dir, limit=_REFERENCE_POOL, image_size=size_arg
    )
    h, w, c = x_real.shape[1:]
    noise = np.random.default_rng(_NOISE_SEED).random((x_real.shape[0], h, w, c), np.float32)
    test_feats, _ = clf.features_and_probs(x_test)
    stats = FeatureStats.from_features(test_feats)
    real_feats, real_probs = clf.features_and_probs(x_real)
    noise_feats, noise_probs = clf.features_and_probs(noise)
    return {
        "version": np.array(_REFERENCE_VERSION),
        "pool": np.array(_REFERENCE_POOL),
        "cache_id": np.array(clf.meta.get("cache_id", "")),
        "image_size": np.array(image_size),
        "target_mean": stats.mean,
        "target_cov": stats.cov,
        "target_n": np.array(stats.n),
        "real_features": real_feats,
        "real_probs": real_probs.astype(np.float32),
        "real_labels": y_real,
        "noise_features": noise_feats,
        "noise_probs": noise_probs.astype(np.float32),
    }


def reference_features(
    clf: FeatureClassifier,
    *,
    cache_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> ReferenceFeatures:
    """The reference features of ``clf``, computed once and cached next to the classifier.

    Args:
      clf: a classifier from :func:`load_classifier` (or from
        :func:`jaxdiff.evaluation.training.train_classifier`; then nothing is cached, since the
        classifier itself is not).
      image_size: resolution of the samples being evaluated (MNIST: 28 or 32). The real and noise
        images are built at this size (and resized by the classifier like the samples are), so
        the floor includes any resizing loss.
    """
    kind = clf.spec.kind
    image_size = image_size or clf.spec.image_shape[0]
    cached = "cache_id" in clf.meta and "path" in clf.meta
    path = classifier_dir(kind, cache_dir) / f"reference-{image_size}.npz"
    arrays = None
    if cached and path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            if (
                str(arrays["version"]) != _REFERENCE_VERSION
                or str(arrays["cache_id"]) != str(clf.meta["cache_id"])
                or int(arrays["pool"]) != _REFERENCE_POOL
            ):
                raise ValueError("it belongs to another classifier or an older format")
        except Exception as err:
            warnings.warn(
                f"the reference cache {path} is corrupt or stale ({type(err).__name__}: {err}); "
                "recomputing it.",
                ClassifierCacheWarning,
                stacklevel=2,
            )
            arrays = None
    if arrays is None:
        arrays = _compute_references(clf, data_dir, image_size)
        if cached:

            def write(p: Path) -> None:
                with p.open("wb") as fh:
                    np.savez(fh, **arrays)

            _atomic_write(path, write)
    if kind == "mnist":
        target = f"the {int(arrays['target_n'])} MNIST test images"
        real = "MNIST training images" + (
            f" resized to {image_size}x{image_size} and mapped back" if image_size != 28 else ""
        )
    else:
        target = f"the {int(arrays['target_n'])} held-out sklearn digits"
        real = "sklearn digits of the classifier's training split"
    return ReferenceFeatures(
        target_mean=arrays["target_mean"],
        target_cov=arrays["target_cov"],
        real_features=arrays["real_features"],
        real_probs=arrays["real_probs"].astype(np.float64),
        real_labels=arrays["real_labels"],
        noise_features=arrays["noise_features"],
        noise_probs=arrays["noise_probs"].astype(np.float64),
        target_description=target,
        real_description=real,
        noise_description=f"uniform [0, 1] noise images ({image_size}x{image_size})",
    )
