"""Shared argument checks: one home for each, imported by the modules that validate input.

* Math modules (:mod:`jaxdiff.forward`, :mod:`jaxdiff.losses`, ...): :func:`check_timesteps`,
  :func:`check_same_shape`, :func:`as_float` and the per-timestep lookup :func:`gather`.
* Model inputs (:mod:`jaxdiff.models`): :func:`check_model_images` ``(B, H, W, C)`` and
  :func:`check_labels` (class labels with the null label of classifier-free guidance). They run
  at call (trace) time on static information: shapes, dtypes, and values that are concrete
  Python/NumPy numbers. Values of traced arrays cannot be checked inside ``jit``.
* Host-side arrays (:mod:`jaxdiff.data`, :mod:`jaxdiff.metrics`, :mod:`jaxdiff.evaluation`):
  :func:`check_images` (rank, dtype, finite values, value range of an image batch) and
  :func:`check_sample_labels` (the requested class of each sample to evaluate).

The two image checks and the two label checks are different contracts, not copies: a model
input may be traced and holds noisy values far outside the data range, and a model label may be
a scalar or the null label; an array checked on the host is concrete and its values are checked.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def concrete_value(x) -> np.ndarray | None:
    """``x`` as a NumPy array when its value is known at trace time, else None."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def check_same_shape(a, b, name_a: str, name_b: str) -> None:
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {jnp.shape(a)} and {jnp.shape(b)}"
        )


def check_timesteps(t, x, num_steps: int, name: str = "t", *, allow_minus_one: bool = False):
    """Validate integer timesteps ``t`` against a batch ``x``; return ``t`` as an int32 array.

    ``t`` is a scalar (one timestep for all of ``x``) or has shape ``x.shape[:t.ndim]``
    (usually ``(B,)``: one timestep per example of a batch).
    """
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(
            f"{name} must hold integer timestep indices in [0, {num_steps}), got dtype "
            f"{t.dtype}; use jnp.int32"
        )
    x_shape = jnp.shape(x)
    if t.ndim > len(x_shape) or x_shape[: t.ndim] != t.shape:
        raise ValueError(
            f"{name} must be a scalar or have shape x.shape[:{name}.ndim] (one timestep per "
            f"example, e.g. ({x_shape[0] if x_shape else 'B'},)), got {name}.shape={t.shape} for "
            f"x.shape={x_shape}"
        )
    value = concrete_value(t)
    lo = -1 if allow_minus_one else 0
    if value is not None and value.size and (value.min() < lo or value.max() >= num_steps):
        raise ValueError(
            f"{name} must lie in [{lo}, {num_steps}) for a schedule with {num_steps} steps, "
            f"got values in [{value.min()}, {value.max()}]"
        )
    return t.astype(jnp.int32)


def gather(arr: jax.Array, t: jax.Array, x) -> jax.Array:
    """``arr[t]`` reshaped to broadcast against ``x``: ``t.shape + (1,) * (x.ndim - t.ndim)``."""
    out = jnp.take(arr, t, mode="clip")
    return out.reshape(t.shape + (1,) * (jnp.ndim(x) - t.ndim))


def as_float(x, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    return x


# --------------------------------------------------------------------------------------------------
# Model inputs (static checks, valid under jit)
# --------------------------------------------------------------------------------------------------


def check_float_input(x: jax.Array) -> None:
    """Raise ``TypeError`` unless the model input ``x`` has a floating dtype."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"x must be a floating-point array; got dtype {x.dtype}. Convert it, e.g. "
            f"x.astype(jnp.float32) (and scale images to the model's data range)."
        )


def check_model_images(x: jax.Array, channels: int, model: str) -> None:
    """Raise unless the input of ``model`` is a floating NHWC batch ``(B, H, W, channels)``."""
    if x.ndim != 4:
        raise ValueError(
            f"{model} expects a batch of NHWC images (B, H, W, C={channels}); got shape "
            f"{x.shape}. Add a batch axis for one image (x[None]) and put channels last "
            f"(x.transpose(0, 2, 3, 1) for NCHW)."
        )
    if x.shape[-1] != channels:
        raise ValueError(
            f"{model} was built with channels={channels} but x has {x.shape[-1]} channels "
            f"(shape {x.shape}, NHWC). Build the model with channels={x.shape[-1]} or pass "
            f"channels-last images."
        )
    check_float_input(x)


def check_labels(labels: jax.Array | None, batch: int, num_classes: int | None) -> jax.Array | None:
    """Validate the class labels of a model call and resolve the null label.

    Args:
      labels: ``None``, a scalar or a ``(batch,)`` integer array.
      batch: the batch size B of the model input.
      num_classes: ``None`` for an unconditional model; otherwise labels lie in
        ``[0, num_classes]``, where ``num_classes`` itself is the null ("no class")
        label used for classifier-free guidance. Values are checked when concrete;
        under ``jit`` they cannot be checked, and the models' ``embed_lookup``
        turns an out-of-range label into NaN outputs instead.

    Returns:
      ``None`` for an unconditional model; otherwise int32 labels of shape
      ``(batch,)``, with ``labels=None`` mapped to the null label for the whole batch.
    """
    if num_classes is None:
        if labels is not None:
            raise ValueError(
                "labels were passed to an unconditional model (num_classes=None). Build the "
                "model with num_classes=K to condition on K classes, or call it with labels=None."
            )
        return None
    if labels is None:
        return jnp.full((batch,), num_classes, dtype=jnp.int32)
    labels = jnp.asarray(labels)
    if labels.shape not in ((), (batch,)):
        raise ValueError(
            f"labels must be a scalar or have shape (B,) = ({batch},) matching the batch of x; "
            f"got shape {labels.shape}. Pass one integer class per example."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"labels must be integer class indices; got dtype {labels.dtype}. "
            f"Pass labels.astype(jnp.int32)."
        )
    values = concrete_value(labels)
    if values is not None and values.size and (values.min() < 0 or values.max() > num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}] (classes 0..{num_classes - 1}, and "
            f"{num_classes} = the null label for classifier-free guidance); got values in "
            f"[{values.min()}, {values.max()}]. Check the label encoding or num_classes."
        )
    return jnp.broadcast_to(labels.astype(jnp.int32), (batch,))


# --------------------------------------------------------------------------------------------------
# Host-side arrays (concrete values)
# --------------------------------------------------------------------------------------------------


def check_images(
    x: Any,
    *,
    name: str = "images",
    value_range: tuple[float, float] | None = (-1.0, 1.0),
    atol: float = 1e-5,
) -> np.ndarray:
    """Check that ``x`` is a batch of finite images in ``value_range``; return it as a NumPy array.

    Args:
      x: array-like of shape ``(N, H, W, C)`` (channels last), a real floating or integer dtype.
      name: what to call ``x`` in error messages (e.g. ``"samples"``).
      value_range: inclusive ``(low, high)`` that every value must lie in (up to ``atol``), or
        ``None`` to skip the range check. ``(-1, 1)`` is the model range, ``(0, 1)`` the plot range.
      atol: tolerance for the range check (float32 rescaling can overshoot by an ulp or two).

    Returns:
      ``np.asarray(x)`` (no copy when ``x`` already is a NumPy array).

    Raises:
      ValueError: wrong rank, empty batch, non-numeric dtype, NaN/inf, or values outside
        ``value_range``; the message says which, how many, and how to fix it.

    Host-side check: it needs concrete values, so call it outside ``jax.jit``.
    """
    arr = np.asarray(x)
    if arr.ndim != 4:
        raise ValueError(
            f"{name} must have shape (N, H, W, C) (channels last, rank 4); got shape {arr.shape} "
            f"(rank {arr.ndim}). Add a channel axis with x[..., None] for grayscale, or a batch "
            "axis with x[None] for a single image."
        )
    if arr.shape[0] == 0 or 0 in arr.shape[1:]:
        raise ValueError(f"{name} is empty: shape {arr.shape}; every axis must have length >= 1.")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(
            f"{name} must have a real numeric dtype (float or int); got {arr.dtype}. "
            "Convert with x.astype(np.float32)."
        )
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            n_nan = int(np.isnan(arr).sum())
            raise ValueError(
                f"{name} contains non-finite values: {n_nan} NaN and {int(bad.sum()) - n_nan} "
                f"inf out of {arr.size} (first in image {int(np.argwhere(bad)[0][0])}). This "
                "usually means training diverged; lower the learning rate or enable gradient "
                "clipping."
            )
    if value_range is not None:
        low, high = value_range
        if not low < high:
            raise ValueError(f"value_range must be (low, high) with low < high; got {value_range}.")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < low - atol or hi > high + atol:
            n_out = int(((arr < low - atol) | (arr > high + atol)).sum())
            hint = (
                " The values look like [0, 1]-scaled images; use from_unit_interval(x) to get "
                "[-1, 1]."
                if (low, high) == (-1.0, 1.0) and lo >= 0.0 and hi <= 1.0 + atol
                else " The values look like [-1, 1]-scaled images; use to_unit_interval(x) to "
                "get [0, 1]."
                if (low, high) == (0.0, 1.0) and lo >= -1.0 - atol and hi <= 1.0 + atol
                else " Rescale the data (e.g. uint8 pixels: x / 127.5 - 1 for [-1, 1], x / 255 "
                "for [0, 1]) or clip sampler output with np.clip."
            )
            raise ValueError(
                f"{name} must lie in [{low:g}, {high:g}]; got values in [{lo:g}, {hi:g}] "
                f"({n_out} of {arr.size} outside).{hint}"
            )
    return arr


def check_sample_labels(labels: Any, n: int, num_classes: int = 10) -> np.ndarray:
    """Validate the requested classes of ``n`` samples: integer ``(n,)`` in ``0..num_classes-1``.

    Also accepts ``(n, 1)`` and whole-number floats (labels saved with the wrong dtype).

    Returns:
      int32 ``(n,)`` labels.
    """
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if not np.issubdtype(y.dtype, np.integer):
        if (
            np.issubdtype(y.dtype, np.floating)
            and np.isfinite(y).all()
            and (y == np.round(y)).all()
        ):
            y = y.astype(np.int64)
        else:
            raise ValueError(
                f"labels must be integer class indices; got dtype {y.dtype}. Save them with "
                "np.save(path, labels.astype(np.int32))."
            )
    if y.shape != (n,):
        raise ValueError(
            f"labels must have shape ({n},), one requested class per sample; got {y.shape}."
        )
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"labels must lie in 0..{num_classes - 1}; got values in [{y.min()}, {y.max()}]."
        )
    return y.astype(np.int32)
