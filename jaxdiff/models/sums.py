"""Sums over the leading axes of channels-last arrays, and their transposes, as matrix products.

``sum_positions(v)`` sums ``(B, ..., C)`` over the positions and ``channel_sums(v)`` over every
axis but the channels. They are ``v.sum(axes)``, computed as products with a vector of ones:
XLA:CPU fuses the elementwise work that produces ``v`` into a reduction over non-minor axes and
runs it there one channel at a time, unvectorised, and again in every other such reduction of
the same values (in the U-Net's backward pass: the GroupNorm and bias gradients, the largest
cost of a CPU training step, ``benchmarks/profile_step.py``). A dot takes its operand
materialised, computed once. ``Precision.HIGHEST`` keeps float32 sums on GPUs and TPUs, whose
default matmul precision is lower.

``spread_positions`` and ``spread_channels`` are their transposes, the broadcasts back, written
as products with ones too. That is what a forward-mode (``jax.custom_jvp``) rule needs: where
its tangent broadcasts a per-channel value over the positions, JAX's automatic transpose of the
tangent (reverse mode) is the transpose of the op used. A ``jnp.broadcast_to`` transposes to a
reduction, the slow kind above; these transpose to the dots of ``sum_positions`` and
``channel_sums``. Forward, a product with a ones vector over a contraction of size 1 is a
broadcast, which XLA rewrites as one.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["channel_sums", "spread_channels", "spread_positions", "sum_positions"]

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


def spread_positions(s: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``(B, C)`` -> ``shape = (B, ..., C)``: ``s[b, c]`` at every position; the transpose of
    :func:`sum_positions` (``ones (B, N, 1) @ s (B, 1, C)``, ``N`` positions)."""
    ones = jnp.ones((s.shape[0], math.prod(shape[1:-1]), 1), s.dtype)
    return jnp.einsum("bnk,bkc->bnc", ones, s[:, None], precision=_HIGHEST).reshape(shape)


def spread_channels(s: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``(C,)`` -> ``shape = (..., C)``: ``s`` at every leading index; the transpose of
    :func:`channel_sums` (``ones (M, 1) @ s (1, C)``)."""
    ones = jnp.ones((math.prod(shape[:-1]), 1), s.dtype)
    return jnp.dot(ones, s[None], precision=_HIGHEST).reshape(shape)
