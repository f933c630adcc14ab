"""Shared argument checks and per-timestep coefficient lookup for the math modules.

Checks run at call (trace) time on static information: shapes, dtypes, and values that are
concrete Python/NumPy numbers. Values of traced arrays cannot be checked inside ``jit``.
"""

from __future__ import annotations

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
