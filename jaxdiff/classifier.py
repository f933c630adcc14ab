"""Feature classifiers for the image metrics: small CNNs the project trains itself, and their cache.

Inception weights cannot be downloaded here, so (like TF-GAN's MNIST Frechet distance) the image
metrics of :mod:`jaxdiff.metrics` use the penultimate layer of a small classifier trained by this
module:

* ``"mnist"``: :class:`MnistFeatureNet` on the 60,000 MNIST training images (28x28, values in
  ``[0, 1]``), 128 features, >= 99.0% test accuracy; trained on first use (a couple of minutes on
  a CPU, with a tqdm bar on stderr). The target statistics are those of the 10,000 test images.
* ``"digits"``: :class:`DigitsFeatureNet` on a fixed 1,297-image split of sklearn's 8x8 digits, 64
  features; the other 500 images are the held-out reference. Trains in seconds.

Both are deterministic functions of their :class:`ClassifierSpec` (seed included). They are cached
under ``<cache_dir>/classifiers/<kind>-<version>/`` (``cache_dir`` defaults to
``$JAXDIFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxdiff`` or ``~/.cache/jaxdiff``) as an orbax
checkpoint written by :class:`jaxdiff.checkpoint.Checkpointer` (``params/``) plus a readable
``meta.json``. Bumping
``version`` moves to a new directory; a cache whose stored spec differs from the code, or that
fails to restore (corrupt or truncated files), is retrained with a :class:`ClassifierCacheWarning`.
The reference features (real training images and noise images through the classifier, and the
target statistics) are cached next to it as ``reference-<size>.npz``; no pickle anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxdiff._paths import default_cache_dir, resolve_cache_dir
from jaxdiff.data.images import bilinear_resize_matrix

__all__ = [
    "CLASSIFIER_SPECS",
    "ClassifierCacheWarning",
    "ClassifierSpec",
    "DigitsFeatureNet",
    "FeatureClassifier",
    "MnistFeatureNet",
    "ReferenceFeatures",
    "cached_json",
    "classifier_data",
    "classifier_dir",
    "default_cache_dir",
    "load_classifier",
    "reference_features",
    "train_classifier",
]


class ClassifierCacheWarning(UserWarning):
    """A cached classifier or reference file was stale or corrupt and is being rebuilt."""


# --------------------------------------------------------------------------------------------------
# Specs and networks
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
    """Everything that determines a trained feature classifier (stored in its cache metadata).

    Attributes:
      kind: ``"mnist"`` or ``"digits"``.
      version: cache tag; bump it whenever the network, data or training changes.
      image_shape: ``(H, W, C)`` input shape; inputs are images in ``[0, 1]``.
      num_classes: number of classes (10).
      feature_dim: width of the penultimate layer, the feature space of the Frechet distance.
      seed: seed of the initialisation and the data order.
      epochs, batch_size, learning_rate, warmup_steps: Adam with linear warm-up and cosine
        decay to 0.
      augment_shift: random translations by up to this many pixels during training (0: none).
      min_test_accuracy: a trained classifier below this test accuracy triggers a warning.
      train_limit: train on only the first ``train_limit`` training images (``None``: all);
        for quick tests, with a distinct ``version`` so it never shares a cache entry.
    """

    kind: str
    version: str
    image_shape: tuple[int, int, int]
    num_classes: int
    feature_dim: int
    seed: int
    epochs: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    augment_shift: int = 0
    min_test_accuracy: float = 0.0
    train_limit: int | None = None

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_shape"] = list(self.image_shape)
        return d

    @classmethod
    def from_json(cls, d: Any) -> ClassifierSpec:
        """Inverse of :meth:`to_json` (fields added since with a default take that default)."""
        if not isinstance(d, dict):
            raise ValueError(f"a classifier spec must be a JSON object; got {type(d).__name__}")
        d = dict(d)
        if "image_shape" in d:
            d["image_shape"] = tuple(d["image_shape"])
        try:
            return cls(**d)
        except TypeError as err:
            raise ValueError(f"unreadable classifier spec {d}: {err}") from None


CLASSIFIER_SPECS: dict[str, ClassifierSpec] = {
    "mnist": ClassifierSpec(
        kind="mnist", version="v2", image_shape=(28, 28, 1), num_classes=10, feature_dim=128,
        seed=0, epochs=3, batch_size=128, learning_rate=3e-3, warmup_steps=100,
        min_test_accuracy=0.99,
    ),
    "digits": ClassifierSpec(
        kind="digits", version="v2", image_shape=(8, 8, 1), num_classes=10, feature_dim=64,
        seed=0, epochs=40, batch_size=64, learning_rate=3e-3, warmup_steps=50,
        min_test_accuracy=0.95,
    ),
}  # fmt: skip


class MnistFeatureNet(nnx.Module):
    """MNIST classifier: ``(B, 28, 28, 1)`` in ``[0, 1]`` -> logits ``(B, 10)``.

    conv 5x5/2 (32) -> ReLU -> conv 3x3/2 (64) -> ReLU -> flatten (7*7*64) -> dense
    ``feature_dim`` -> ReLU (the features) -> dense 10. Strided convolutions instead of pooling
    keep training to about a minute per epoch on a 2-core CPU.
    """

    def __init__(self, *, feature_dim: int = 128, num_classes: int = 10, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 32, (5, 5), strides=2, rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), strides=2, rngs=rngs)
        self.dense = nnx.Linear(7 * 7 * 64, feature_dim, rngs=rngs)
        self.head = nnx.Linear(feature_dim, num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Penultimate-layer features ``(B, feature_dim)`` of images ``(B, 28, 28, 1)``."""
        x = nnx.relu(self.conv1(x * 2.0 - 1.0))
        x = nnx.relu(self.conv2(x))
        return nnx.relu(self.dense(x.reshape(x.shape[0], -1)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))


class DigitsFeatureNet(nnx.Module):
    """8x8 digits classifier: ``(B, 8, 8, 1)`` in ``[0, 1]`` -> logits ``(B, 10)``.

    conv 3x3 (16) -> ReLU -> conv 3x3/2 (32) -> ReLU -> flatten (4*4*32) -> dense
    ``feature_dim`` -> ReLU (the features) -> dense 10.
    """

    def __init__(self, *, feature_dim: int = 64, num_classes: int = 10, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 16, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, (3, 3), strides=2, rngs=rngs)
        self.dense = nnx.Linear(4 * 4 * 32, feature_dim, rngs=rngs)
        self.head = nnx.Linear(feature_dim, num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Penultimate-layer features ``(B, feature_dim)`` of images ``(B, 8, 8, 1)``."""
        x = nnx.relu(self.conv1(x * 2.0 - 1.0))
        x = nnx.relu(self.conv2(x))
        return nnx.relu(self.dense(x.reshape(x.shape[0], -1)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))


_NETWORKS: dict[str, Callable[..., nnx.Module]] = {
    "mnist": MnistFeatureNet,
    "digits": DigitsFeatureNet,
}


def _get_spec(kind: str) -> ClassifierSpec:
    if kind not in CLASSIFIER_SPECS:
        raise ValueError(
            f"unknown classifier kind {kind!r}; known: {', '.join(sorted(CLASSIFIER_SPECS))}."
        )
    return CLASSIFIER_SPECS[kind]


def _build(spec: ClassifierSpec) -> nnx.Module:
    return _NETWORKS[spec.kind](
        feature_dim=spec.feature_dim, num_classes=spec.num_classes, rngs=nnx.Rngs(spec.seed)
    )


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal truncated to ``[-2, 2]``, rescaled to unit variance (like Flax's default)."""
    z = rng.standard_normal(shape)
    while (bad := np.abs(z) > 2.0).any():
        z[bad] = rng.standard_normal(int(bad.sum()))
    return z / 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


def _init(spec: ClassifierSpec) -> tuple[Any, Any]:
    """``(graphdef, params)`` of a freshly initialised network, deterministic in ``spec.seed``.

    LeCun-normal kernels (truncated normal, variance ``1 / fan_in``; Flax's default) and zero
    biases, drawn with NumPy in tree order: initialising through JAX compiles every initializer
    of every layer separately, which costs several seconds on a small CPU.
    """
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: _build(spec)), nnx.Param)
    rng = np.random.default_rng(spec.seed)

    def init_leaf(path, leaf: jax.ShapeDtypeStruct) -> jax.Array:
        names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        if "kernel" not in names:
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = math.prod(leaf.shape[:-1])
        return jnp.asarray(_truncated_normal(rng, leaf.shape) / math.sqrt(fan_in), leaf.dtype)

    return graphdef, jax.tree_util.tree_map_with_path(init_leaf, abstract)


# --------------------------------------------------------------------------------------------------
# A trained classifier
# --------------------------------------------------------------------------------------------------


def _unresize_matrix(n_small: int, n_large: int) -> np.ndarray:
    """``(n_small, n_large)`` least-squares inverse of the bilinear ``n_small -> n_large`` resize.

    ``pinv(R)`` (in float64, returned as float32) of ``R = bilinear_resize_matrix(n_small,
    n_large)``, the matrix with which :func:`jaxdiff.data.load_mnist` makes 32x32 MNIST. ``R`` has
    full column rank (condition number 2.1 for 28 -> 32), so ``pinv(R) R = I``: an image that was
    upsampled this way comes back exactly.
    """
    r = bilinear_resize_matrix(n_small, n_large).astype(np.float64)
    return np.linalg.pinv(r).astype(np.float32)


def _resize_to(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """Bring images ``(B, H, W, C)`` to the classifier's ``hw``.

    Larger images (32x32 MNIST samples from a U-Net trained on ``load_mnist(image_size=32)``)
    are mapped back with the least-squares inverse of that bilinear upsampling and clipped to
    ``[0, 1]``: real images then reach the classifier unchanged, so the real-vs-real floor at
    32x32 equals the one at 28x28 (an antialiased bilinear downsampling instead blurs them, and
    raised the MNIST Frechet floor from 1.5 to 25). Smaller images are resized bilinearly.
    """
    h, w = x.shape[1:3]
    if (h, w) == hw:
        return x
    if h >= hw[0] and w >= hw[1]:
        ph, pw = _unresize_matrix(hw[0], h), _unresize_matrix(hw[1], w)
        x = jnp.einsum("ih,bhwc->biwc", ph, x)
        return jnp.clip(jnp.einsum("jw,biwc->bijc", pw, x), 0.0, 1.0)
    return jax.image.resize(x, (x.shape[0], *hw, x.shape[3]), method="linear")


@dataclasses.dataclass
class FeatureClassifier:
    """A trained feature classifier: its spec, the NNX graph definition and parameters.

    Attributes:
      spec: the :class:`ClassifierSpec` it was trained from.
      graphdef, params: ``nnx.split(model, nnx.Param)`` of the network.
      meta: JSON metadata (test accuracy, training time, cache id, ...).
    """

    spec: ClassifierSpec
    graphdef: Any
    params: Any
    meta: dict[str, Any]

    def __post_init__(self):
        graphdef = self.graphdef
        hw = self.spec.image_shape[:2]

        def forward(params, x):
            model = nnx.merge(graphdef, params)
            feats = model.features(_resize_to(x, hw))
            logits = model.head(feats)
            return feats, jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

        self._forward = jax.jit(forward)

    def features_and_probs(
        self, images: Any, *, batch_size: int = 500
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features and class probabilities of images in ``[0, 1]``.

        Args:
          images: ``(N, H, W, C)`` float images in ``[0, 1]`` with ``(H, W, C)`` the spec's
            image shape (MNIST also takes ``(N, 32, 32, 1)``, mapped back to 28x28 by the
            least-squares inverse of the bilinear 28 -> 32 resize of ``load_mnist``).
          batch_size: images per compiled call (the last batch is padded).

        Returns:
          ``(features, probs)``: float32 ``(N, feature_dim)`` and float64 ``(N, num_classes)``.
        """
        x = np.asarray(images, dtype=np.float32)
        n = x.shape[0]
        feats, probs = [], []
        for i in range(0, n, batch_size):
            xb = x[i : i + batch_size]
            pad = batch_size - xb.shape[0]  # every call has one shape: compiled once
            if pad:
                xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), np.float32)])
            f, p = self._forward(self.params, jnp.asarray(xb))
            feats.append(np.asarray(f)[: xb.shape[0] - pad])
            probs.append(np.asarray(p, dtype=np.float64)[: xb.shape[0] - pad])
        probs_arr = np.concatenate(probs)
        return np.concatenate(feats), probs_arr / probs_arr.sum(axis=1, keepdims=True)

    def accuracy(self, images: Any, labels: Any) -> float:
        """Fraction of ``images`` ``(N, H, W, C)`` in ``[0, 1]`` classified as ``labels`` (N,)."""
        _, probs = self.features_and_probs(images)
        return float(np.mean(probs.argmax(axis=1) == np.asarray(labels)))

    def describe(self) -> dict[str, Any]:
        """JSON summary for reports: name, feature_dim, test accuracy, cache path."""
        keys = ("test_accuracy", "test_examples", "train_examples", "train_seconds", "path")
        return {
            "name": f"{self.spec.kind}-classifier-{self.spec.version}",
            "feature_dim": self.spec.feature_dim,
            **{k: self.meta[k] for k in keys if k in self.meta},
        }


# --------------------------------------------------------------------------------------------------
# Data and training
# --------------------------------------------------------------------------------------------------

#: sklearn digits split: a fixed permutation from this seed; the last 500 images are held out.
DIGITS_SPLIT_SEED = 0
DIGITS_HELD_OUT = 500


def classifier_data(
    kind: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    image_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Training or reference images of a classifier, in ``[0, 1]``.

    Args:
      kind: ``"mnist"`` (train: the 60,000 training images, test: the 10,000 test images) or
        ``"digits"`` (train: 1,297 images, test: the 500 held out, a fixed split).
      split: ``"train"`` or ``"test"``.
      limit: only the first ``limit`` images.
      image_size: MNIST only: load at this size (e.g. 32) instead of 28.

    Returns:
      ``(images, labels)``: float32 ``(N, H, W, 1)`` in ``[0, 1]`` and int32 ``(N,)``.
    """
    from jaxdiff.data import load_digits, load_mnist, to_unit_interval

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    if kind == "mnist":
        x, y = load_mnist(split, data_dir=data_dir, limit=limit, image_size=image_size or 28)
        return np.clip(to_unit_interval(x), 0.0, 1.0).astype(np.float32), y
    _get_spec(kind)
    x, y = load_digits()
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(x.shape[0])
    idx = perm[:-DIGITS_HELD_OUT] if split == "train" else perm[-DIGITS_HELD_OUT:]
    idx = idx[:limit] if limit is not None else idx
    return x[idx], y[idx]


def _shift_augment(key: jax.Array, x: jax.Array, max_shift: int) -> jax.Array:
    """Translate each image by a random integer offset in ``[-max_shift, max_shift]^2``."""
    b, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * max_shift + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def train_classifier(
    kind: str,
    *,
    data_dir: str | os.PathLike | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    progress: bool = True,
    **overrides: Any,
) -> FeatureClassifier:
    """Train a feature classifier from scratch (no cache involved).

    Deterministic in ``spec.seed``: the initialisation uses ``default_rng(seed)`` and epoch ``e``
    visits the examples in the order ``permutation(fold_in(fold_in(key(seed), 1), e))``.

    Args:
      kind: ``"mnist"`` or ``"digits"``.
      data_dir: prepared tensorflow-datasets folder (MNIST; default ``$TFDS_DATA_DIR``).
      train_limit, test_limit: use only the first examples of each split (quick tests);
        ``train_limit`` defaults to ``spec.train_limit``.
      progress: show a tqdm bar (stderr) with the loss.
      **overrides: replace fields of the :class:`ClassifierSpec` (e.g. ``epochs=1``).

    Returns:
      The :class:`FeatureClassifier`, with ``meta["test_accuracy"]`` measured on the test split.
    """
    from tqdm.auto import tqdm

    spec = dataclasses.replace(_get_spec(kind), **overrides)
    if train_limit is None:
        train_limit = spec.train_limit
    x_train, y_train = classifier_data(kind, "train", data_dir=data_dir, limit=train_limit)
    n = x_train.shape[0]
    bs = min(spec.batch_size, n)
    steps_per_epoch = n // bs
    num_steps = spec.epochs * steps_per_epoch
    if num_steps < 1:
        raise ValueError(f"nothing to train: epochs={spec.epochs}, {n} examples.")

    graphdef, params = _init(spec)
    lr = optax.warmup_cosine_decay_schedule(
        0.0, spec.learning_rate, min(spec.warmup_steps, num_steps // 2), num_steps
    )
    tx = optax.adam(lr)
    opt_state = tx.init(params)
    x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train)
    key = jax.random.key(spec.seed)

    def loss_fn(p, xb, yb):
        logits = nnx.merge(graphdef, p)(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def train_step(p, o, x_all, y_all, idx, step):
        xb, yb = x_all[idx], y_all[idx]
        if spec.augment_shift:
            xb = _shift_augment(jax.random.fold_in(key, step), xb, spec.augment_shift)
        loss, grads = jax.value_and_grad(loss_fn)(p, xb, yb)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    bar = tqdm(
        total=num_steps, desc=f"training {kind} feature classifier", unit="step",
        disable=not progress, file=sys.stderr, dynamic_ncols=True,
    )  # fmt: skip
    start = time.perf_counter()
    step = 0
    perm_key = jax.random.fold_in(key, 1)
    epoch_order = jax.jit(lambda e: jax.random.permutation(jax.random.fold_in(perm_key, e), n))
    with bar:
        for epoch in range(spec.epochs):
            perm = np.asarray(epoch_order(epoch))
            for i in range(steps_per_epoch):
                idx = jnp.asarray(perm[i * bs : (i + 1) * bs])
                params, opt_state, loss = train_step(params, opt_state, x_dev, y_dev, idx, step)
                step += 1
                bar.update(1)
                if step % 25 == 0 or step == num_steps:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss):.4f}")
    jax.block_until_ready(params)
    seconds = time.perf_counter() - start

    clf = FeatureClassifier(spec, graphdef, params, {})
    x_test, y_test = classifier_data(kind, "test", data_dir=data_dir, limit=test_limit)
    clf.meta = {
        "version": spec.version,
        "spec": spec.to_json(),
        "test_accuracy": round(clf.accuracy(x_test, y_test), 6),
        "test_examples": int(x_test.shape[0]),
        "train_examples": int(n),
        "train_steps": int(num_steps),
        "train_seconds": round(seconds, 1),
        "final_loss": float(loss),
        "cache_id": uuid.uuid4().hex,
        "jax_version": jax.__version__,
    }
    return clf


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------


def classifier_dir(kind: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/classifiers/<kind>-<version>``: where the classifier of ``kind`` lives."""
    spec = _get_spec(kind)
    return resolve_cache_dir(cache_dir) / "classifiers" / f"{spec.kind}-{spec.version}"


def _save_classifier(clf: FeatureClassifier, path: Path) -> None:
    """Write ``params/`` (orbax, via jaxdiff.checkpoint) and ``meta.json``, then rename into place.

    Written into a temporary sibling directory and renamed at the end, so a concurrent reader or
    an interrupted run never sees a half-written cache.
    """
    from jaxdiff.checkpoint import Checkpointer

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with Checkpointer(tmp / "params", max_to_keep=1, async_save=False) as ckpt:
            ckpt.save(clf.meta["train_steps"], clf.params, metadata=clf.meta, force=True)
        (tmp / "meta.json").write_text(json.dumps(clf.meta, indent=2) + "\n")
        try:
            tmp.rename(path)
        except OSError:  # another process finished first: keep theirs
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _restore_classifier(spec: ClassifierSpec, path: Path) -> FeatureClassifier:
    """Restore a cached classifier; raise with the reason if it is corrupt or stale."""
    from jaxdiff.checkpoint import CheckpointCorruptionWarning, Checkpointer

    abstract = nnx.eval_shape(lambda: _build(spec))
    graphdef, abstract_params = nnx.split(abstract, nnx.Param)
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # orbax logs "Given directory is read only" otherwise
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Checkpointer(path / "params", read_only=True) as ckpt:
                params, meta = ckpt.restore(abstract_params)
    finally:
        absl_logger.setLevel(level)
    corrupt = [w for w in caught if issubclass(w.category, CheckpointCorruptionWarning)]
    for w in caught:  # unrelated warnings (deprecations, ...) pass through unchanged
        if w not in corrupt:
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
    :data:`CLASSIFIER_SPECS`, NaN parameters) is deleted and retrained, with a
    :class:`ClassifierCacheWarning` saying why.

    Args:
      kind: ``"mnist"`` or ``"digits"``.
      cache_dir: cache root (default :func:`default_cache_dir`).
      data_dir: prepared tensorflow-datasets folder for training MNIST.
      progress: tqdm bar while training.
    """
    spec = _get_spec(kind)
    path = classifier_dir(kind, cache_dir)
    memo = _LOADED.get((str(path), spec))
    if memo is not None and _cache_id_on_disk(path) == memo.meta["cache_id"]:
        return memo
    if path.exists():
        try:
            clf = _restore_classifier(spec, path)
            _LOADED[(str(path), spec)] = clf
            return clf
        except Exception as err:  # any failure means: rebuild
            warnings.warn(
                f"the cached {kind} feature classifier at {path} is corrupt or stale "
                f"({type(err).__name__}: {err}); deleting it and training a new one.",
                ClassifierCacheWarning,
                stacklevel=2,
            )
            shutil.rmtree(path, ignore_errors=True)
    if progress:
        print(
            f"jaxdiff: no cached {kind} feature classifier in {path}; training one"
            + (" (a couple of minutes on a CPU)" if kind == "mnist" else ""),
            file=sys.stderr,
        )
    clf = train_classifier(kind, data_dir=data_dir, progress=progress)
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


def _cache_id_on_disk(path: Path) -> str | None:
    try:
        return json.loads((path / "meta.json").read_text()).get("cache_id")
    except (OSError, ValueError, AttributeError):
        return None


def _atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cached_json(
    filename: str,
    key: str,
    compute: Callable[[], dict],
    *,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """``compute()`` cached under ``key`` in the JSON file ``<cache_dir>/<filename>``.

    An unreadable file is rebuilt with a :class:`ClassifierCacheWarning`.
    """
    path = resolve_cache_dir(cache_dir) / filename
    table: dict = {}
    if path.exists():
        try:
            table = json.loads(path.read_text())
            if not isinstance(table, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            warnings.warn(
                f"the reference cache {path} is corrupt ({err}); recomputing it.",
                ClassifierCacheWarning,
                stacklevel=2,
            )
            table = {}
    if isinstance(table.get(key), dict):
        return table[key]
    value = compute()
    table[key] = value
    _atomic_write_bytes(path, lambda p: p.write_text(json.dumps(table, indent=1) + "\n"))
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
    from jaxdiff.metrics import FeatureStats

    kind = clf.spec.kind
    size_arg = image_size if kind == "mnist" else None
    x_test, _ = classifier_data(kind, "test", data_dir=data_dir)
    x_real, y_real = classifier_data(
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
      clf: a classifier from :func:`load_classifier` (or :func:`train_classifier`; then nothing
        is cached, since the classifier itself is not).
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

            _atomic_write_bytes(path, write)
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
