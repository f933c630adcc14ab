"""The feature networks of the image metrics: their specs, architectures and forward pass.

Inception weights cannot be downloaded here, so (like TF-GAN's MNIST Frechet distance) the image
metrics use the penultimate layer of a small classifier the project trains itself
(:mod:`jaxdiff.evaluation.training`, cached by :mod:`jaxdiff.evaluation.cache`):

* ``"mnist"``: :class:`MnistFeatureNet` on the 60,000 MNIST training images (28x28, values in
  ``[0, 1]``), 128 features, >= 99.0% test accuracy.
* ``"digits"``: :class:`DigitsFeatureNet` on a fixed 1,297-image split of sklearn's 8x8 digits,
  64 features.

Both are deterministic functions of their :class:`ClassifierSpec` (seed included).
:class:`FeatureClassifier` is a trained network: ``features_and_probs`` maps images
``(N, H, W, C)`` in ``[0, 1]`` to features ``(N, feature_dim)`` and class probabilities
``(N, num_classes)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdiff.data.images import bilinear_resize_matrix

__all__ = [
    "CLASSIFIER_SPECS",
    "ClassifierSpec",
    "DigitsFeatureNet",
    "FeatureClassifier",
    "MnistFeatureNet",
    "build_network",
    "get_spec",
    "init_params",
]


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


class _FeatureNet(nnx.Module):
    """Two ReLU convolutions, a dense feature layer and a linear head, sized by the subclass:
    ``conv1`` ``(kernel, stride, channels)``, ``conv2`` 3x3/2 with ``channels2`` and ``side``,
    the spatial side after it. Inputs in ``[0, 1]`` are mapped to ``[-1, 1]`` first."""

    conv1_shape: ClassVar[tuple[int, int, int]]
    channels2: ClassVar[int]
    side: ClassVar[int]

    def __init__(self, *, feature_dim: int, num_classes: int = 10, rngs: nnx.Rngs):
        kernel, stride, channels1 = self.conv1_shape
        self.conv1 = nnx.Conv(1, channels1, (kernel, kernel), strides=stride, rngs=rngs)
        self.conv2 = nnx.Conv(channels1, self.channels2, (3, 3), strides=2, rngs=rngs)
        self.dense = nnx.Linear(self.side * self.side * self.channels2, feature_dim, rngs=rngs)
        self.head = nnx.Linear(feature_dim, num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Penultimate-layer features ``(B, feature_dim)`` of images ``(B, H, W, 1)``."""
        x = nnx.relu(self.conv1(x * 2.0 - 1.0))
        x = nnx.relu(self.conv2(x))
        return nnx.relu(self.dense(x.reshape(x.shape[0], -1)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))


class MnistFeatureNet(_FeatureNet):
    """MNIST classifier: ``(B, 28, 28, 1)`` in ``[0, 1]`` -> logits ``(B, 10)``.

    conv 5x5/2 (32) -> ReLU -> conv 3x3/2 (64) -> ReLU -> flatten (7*7*64) -> dense
    ``feature_dim`` -> ReLU (the features) -> dense 10. Strided convolutions instead of pooling
    keep training to about a minute per epoch on a 2-core CPU.
    """

    conv1_shape = (5, 2, 32)
    channels2 = 64
    side = 7


class DigitsFeatureNet(_FeatureNet):
    """8x8 digits classifier: ``(B, 8, 8, 1)`` in ``[0, 1]`` -> logits ``(B, 10)``.

    conv 3x3 (16) -> ReLU -> conv 3x3/2 (32) -> ReLU -> flatten (4*4*32) -> dense
    ``feature_dim`` -> ReLU (the features) -> dense 10.
    """

    conv1_shape = (3, 1, 16)
    channels2 = 32
    side = 4


_NETWORKS: dict[str, Callable[..., nnx.Module]] = {
    "mnist": MnistFeatureNet,
    "digits": DigitsFeatureNet,
}


def get_spec(kind: str) -> ClassifierSpec:
    """The :class:`ClassifierSpec` of ``kind`` in :data:`CLASSIFIER_SPECS` (looked up now)."""
    if kind not in CLASSIFIER_SPECS:
        raise ValueError(
            f"unknown classifier kind {kind!r}; known: {', '.join(sorted(CLASSIFIER_SPECS))}."
        )
    return CLASSIFIER_SPECS[kind]


def build_network(spec: ClassifierSpec) -> nnx.Module:
    """The untrained network of ``spec`` (call under ``nnx.eval_shape`` for shapes only)."""
    return _NETWORKS[spec.kind](
        feature_dim=spec.feature_dim, num_classes=spec.num_classes, rngs=nnx.Rngs(spec.seed)
    )


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal truncated to ``[-2, 2]``, rescaled to unit variance (like Flax's default)."""
    z = rng.standard_normal(shape)
    while (bad := np.abs(z) > 2.0).any():
        z[bad] = rng.standard_normal(int(bad.sum()))
    return z / 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


def init_params(spec: ClassifierSpec) -> tuple[Any, Any]:
    """``(graphdef, params)`` of a freshly initialised network, deterministic in ``spec.seed``.

    LeCun-normal kernels (truncated normal, variance ``1 / fan_in``; Flax's default) and zero
    biases, drawn with NumPy in tree order: initialising through JAX compiles every initializer
    of every layer separately, which costs several seconds on a small CPU.
    """
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build_network(spec)), nnx.Param)
    rng = np.random.default_rng(spec.seed)

    def init_leaf(path, leaf: jax.ShapeDtypeStruct) -> jax.Array:
        names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        if "kernel" not in names:
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = math.prod(leaf.shape[:-1])
        return jnp.asarray(_truncated_normal(rng, leaf.shape) / math.sqrt(fan_in), leaf.dtype)

    return graphdef, jax.tree_util.tree_map_with_path(init_leaf, abstract)


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
