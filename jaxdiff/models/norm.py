"""Group normalisation (Wu & He 2018) with a hand-written backward pass.

``y = (x - mean_g) / sqrt(var_g + eps) * scale + bias``, the statistics taken per example and per
group of ``C / G`` channels over all positions: the same function and parameters as
:class:`flax.nnx.GroupNorm` (``scale`` and ``bias`` of shape ``(C,)``; fast variance
``E[x^2] - E[x]^2``; statistics in float32), so parameter trees and checkpoints are
interchangeable.

Why not flax's: differentiating its mean and variance gives a backward pass of many small
reductions, each fused by XLA:CPU with a recomputation of the normalisation into a loop over the
``C`` channels; in the CPU preset's U-Net those were the largest cost of a training step
(``benchmarks/profile_step.py``). Here the gradient is written out once (the standard result,
e.g. Wu & He 2018 eq. 1 differentiated):

    xhat = (x - mean) * rstd
    dbias = sum_{b,h,w} dy          dscale = sum_{b,h,w} dy * xhat
    g = dy * scale
    dx = rstd * (g - mean_grp(g) - xhat * mean_grp(g * xhat))

where ``mean_grp`` averages over the positions and channels of each example's group. The
backward pass needs two sums over the positions, ``sum dy`` and ``sum dy * xhat`` per example
and channel; everything else follows from them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdiff.models.sums import sum_positions

__all__ = ["GroupNorm", "group_norm"]


def _group_mean(per_channel: jax.Array, groups: int, positions: int) -> jax.Array:
    """Per-channel sums ``(B, C)`` over ``positions`` -> the mean per group ``(B, groups)``."""
    b, c = per_channel.shape
    return per_channel.reshape(b, groups, c // groups).sum(axis=-1) / (positions * (c // groups))


def _broadcast(v: jax.Array, like: jax.Array) -> jax.Array:
    """``(B, groups)`` -> broadcastable to ``like`` ``(B, ..., C)``, each group on its channels."""
    b, groups = v.shape
    c = like.shape[-1]
    return jnp.repeat(v, c // groups, axis=1).reshape(b, *([1] * (like.ndim - 2)), c)


def _positions(x: jax.Array) -> int:
    return x.size // (x.shape[0] * x.shape[-1])


def _forward(x, scale, bias, groups, eps):
    x32 = x.astype(jnp.float32)
    n = _positions(x32)
    mean = _group_mean(sum_positions(x32), groups, n)
    var = jnp.maximum(_group_mean(sum_positions(x32 * x32), groups, n) - mean * mean, 0.0)
    rstd = jax.lax.rsqrt(var + eps)
    xhat = (x32 - _broadcast(mean, x32)) * _broadcast(rstd, x32)
    y = xhat * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y, xhat, rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def group_norm(
    x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int, eps: float = 1e-6
) -> jax.Array:
    """Group-normalise ``x (B, ..., C)`` in ``groups`` groups; ``scale, bias (C,)``.

    Statistics and the normalisation run in float32; the result has ``x``'s dtype.
    ``C`` must be divisible by ``groups`` (checked by the callers that build models).
    """
    return _forward(x, scale, bias, groups, eps)[0].astype(x.dtype)


def _fwd(x, scale, bias, groups, eps):
    y, xhat, rstd = _forward(x, scale, bias, groups, eps)
    return y.astype(x.dtype), (xhat, rstd, scale)


def _bwd(groups, eps, residuals, dy):
    del eps
    xhat, rstd, scale = residuals
    x_dtype = dy.dtype  # the output's dtype, which is x's
    dy = dy.astype(jnp.float32)
    scale32 = scale.astype(jnp.float32)
    n = _positions(dy)
    s_dy = sum_positions(dy)  # (B, C)
    s_dy_xhat = sum_positions(dy * xhat)  # (B, C)
    # g = dy * scale: mean_grp(g) and mean_grp(g * xhat) from the per-channel sums above
    mean_g = _broadcast(_group_mean(s_dy * scale32, groups, n), dy)
    mean_gx = _broadcast(_group_mean(s_dy_xhat * scale32, groups, n), dy)
    dx = (dy * scale32 - mean_g - xhat * mean_gx) * _broadcast(rstd, dy)
    dscale, dbias = s_dy_xhat.sum(axis=0), s_dy.sum(axis=0)  # (B, C) -> (C,): small
    return dx.astype(x_dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


group_norm.defvjp(_fwd, _bwd)


class GroupNorm(nnx.Module):
    """Group normalisation over the last axis of ``(B, ..., C)`` inputs.

    Same parameters (``scale`` ones, ``bias`` zeros, shape ``(C,)``) and the same function as
    ``nnx.GroupNorm(num_features, num_groups=..., epsilon=1e-6)``, with the backward pass of
    :func:`group_norm` if ``fast_grad``; ``fast_grad=False`` differentiates the same forward
    computation by autodiff, so forward mode (``jax.jvp``) works too. ``dtype`` is the
    output dtype (None: the input's); parameters stay ``param_dtype``.
    """

    def __init__(
        self,
        num_features: int,
        *,
        num_groups: int = 32,
        epsilon: float = 1e-6,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        fast_grad: bool = True,
        rngs: nnx.Rngs | None = None,
    ):
        del rngs  # deterministic initialisation; accepted like every nnx layer
        if num_features % num_groups:
            raise ValueError(
                f"GroupNorm: num_groups={num_groups} must divide num_features={num_features}"
            )
        self.num_groups = num_groups
        self.epsilon = epsilon
        self.dtype = dtype
        self.fast_grad = fast_grad
        self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.dtype is not None:
            x = x.astype(self.dtype)
        scale, bias = self.scale[...], self.bias[...]
        if self.fast_grad:
            return group_norm(x, scale, bias, self.num_groups, self.epsilon)
        return _forward(x, scale, bias, self.num_groups, self.epsilon)[0].astype(x.dtype)
