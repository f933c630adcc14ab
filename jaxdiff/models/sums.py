"""Sums over the leading axes of channels-last arrays, written as matrix products.

``sum_positions(v)`` sums ``(B, ..., C)`` over the positions and ``channel_sums(v)`` over every
axis but the channels. They are ``v.sum(axes)``, computed as products with a vector of ones:
XLA:CPU fuses the elementwise work that produces ``v`` into a reduction over non-minor axes and
runs it there one channel at a time, unvectorised, and again in every other such reduction of
the same values (in the U-Net's backward pass: the GroupNorm and bias gradients, the largest
cost of a CPU training step, ``benchmarks/profile_step.py``). A dot takes its operand
materialised, computed once. ``Precision.HIGHEST`` keeps float32 sums on GPUs and TPUs, whose
default matmul precision is lower.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["channel_sums", "sum_positions"]

_HIGHEST = jax.lax.Precision.HIGHEST


def sum_positions(v: jax.Array) -> jax.Array:
    """``(B, ..., C)`` -> ``(B, C)``: the sum over all axes between the first and the last."""
    b, c = v.shape[0], v.shape[-1]
    v = v.reshape(b, -1, c)
    ones = jnp.ones((b, 1, v.shape[1]), v.dtype)
    return jnp.einsum("bkn,bnc->bkc", ones, v, precision=_HIGHEST)[:, 0]


def channel_sums(v: jax.Array) -> jax.Array:
    """``(..., C)`` -> ``(C,)``: the sum over all axes but the last."""
    v = v.reshape(-1, v.shape[-1])
    return jnp.dot(jnp.ones((v.shape[0],), v.dtype), v, precision=_HIGHEST)
