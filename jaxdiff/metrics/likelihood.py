"""Bits per dimension of an image set through the DDPM variational bound.

:func:`images_bits_per_dim` / :func:`mnist_bits_per_dim` wrap :func:`jaxdiff.losses.bits_per_dim`
for a whole image set, batch by batch, after snapping the images onto the 8-bit grid
(:func:`quantize_8bit`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import losses
from jaxdiff._validate import check_images
from jaxdiff.data import load_mnist

__all__ = ["images_bits_per_dim", "mnist_bits_per_dim", "quantize_8bit"]


def quantize_8bit(images: Any) -> np.ndarray:
    """Snap images in ``[-1, 1]`` onto the 256-level grid ``k / 127.5 - 1`` (float32, same shape).

    The discretised decoder of DDPM (sec. 3.3) assumes 8-bit data; resized images are not on
    that grid until snapped.
    """
    x = np.asarray(images, dtype=np.float32)
    return (np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("apply", "prediction", "variance"))
def _batch_bits_per_dim(
    params: Any,
    schedule: Any,
    x0: jax.Array,
    labels: jax.Array | None,
    key: jax.Array,
    *,
    apply: Callable[..., jax.Array],
    prediction: str,
    variance: str,
) -> jax.Array:
    """``(B,)`` bits/dim of one batch ``x0`` ``(B, H, W, C)`` (``labels`` ``(B,)`` or ``None``)."""

    def denoise_fn(x_t, t):
        return apply(params, x_t, t, labels)

    total, _ = losses.bits_per_dim(
        denoise_fn, schedule, x0, key, prediction=prediction, variance=variance
    )
    return total


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

    ``apply``, ``prediction`` and ``variance`` are static arguments of one module-level compiled
    function: later calls with the same ``apply`` object (and batch shape) reuse its compilation,
    whatever the ``params``, ``schedule`` (of the same length T) and ``images``.

    Returns:
      float64 ``(N,)`` bits/dim (``L_T + sum_t L_t``); T model calls per batch.
    """
    x = quantize_8bit(check_images(images, name="images", value_range=(-1.0, 1.0)))
    n = x.shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}.")
    y = None if labels is None else np.asarray(labels, dtype=np.int32)
    if y is not None and y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the images; got {y.shape}.")
    batch_size = min(batch_size, n)

    key = jax.random.key(seed)
    out = []
    for b, i in enumerate(range(0, n, batch_size)):
        xb = x[i : i + batch_size]
        yb = None if y is None else y[i : i + batch_size]
        pad = batch_size - xb.shape[0]
        if pad:
            xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
            yb = None if yb is None else np.concatenate([yb, np.repeat(yb[-1:], pad)])
        res = _batch_bits_per_dim(
            params, schedule, jnp.asarray(xb), None if yb is None else jnp.asarray(yb),
            jax.random.fold_in(key, b), apply=apply, prediction=prediction, variance=variance,
        )  # fmt: skip
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
    images, labels = load_mnist("test", data_dir=data_dir, image_size=image_size, limit=limit)
    bpd = images_bits_per_dim(
        apply, params, schedule, images,
        labels=labels if conditional else None, batch_size=batch_size, seed=seed,
        prediction=prediction, variance=variance,
    )  # fmt: skip
    return float(bpd.mean())
