"""Training the feature classifiers of :mod:`jaxdiff.evaluation.features`, and their data.

:func:`classifier_data` gives the training and reference images of a classifier kind in
``[0, 1]``; :func:`train_classifier` trains one from scratch (Adam with warm-up and cosine decay,
deterministic in ``spec.seed``). Nothing here is cached:
:func:`jaxdiff.evaluation.cache.load_classifier` trains through this module on first use and
caches the result.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import uuid
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxdiff.data import load_digits, load_mnist, to_unit_interval
from jaxdiff.evaluation.features import FeatureClassifier, get_spec, init_params

__all__ = ["DIGITS_HELD_OUT", "DIGITS_SPLIT_SEED", "classifier_data", "train_classifier"]

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
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    if kind == "mnist":
        x, y = load_mnist(split, data_dir=data_dir, limit=limit, image_size=image_size or 28)
        return np.clip(to_unit_interval(x), 0.0, 1.0).astype(np.float32), y
    get_spec(kind)
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

    spec = dataclasses.replace(get_spec(kind), **overrides)
    if train_limit is None:
        train_limit = spec.train_limit
    x_train, y_train = classifier_data(kind, "train", data_dir=data_dir, limit=train_limit)
    n = x_train.shape[0]
    bs = min(spec.batch_size, n)
    steps_per_epoch = n // bs
    num_steps = spec.epochs * steps_per_epoch
    if num_steps < 1:
        raise ValueError(f"nothing to train: epochs={spec.epochs}, {n} examples.")

    graphdef, params = init_params(spec)
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
