"""Group normalisation (Wu & He 2018) with hand-written derivatives.

``y = (x - mean_g) / sqrt(var_g + eps) * scale + bias``, the statistics taken per example and per
group of ``C / G`` channels over all positions: the same function and parameters as
:class:`flax.nnx.GroupNorm` (``scale`` and ``bias`` of shape ``(C,)``; fast variance
``E[x^2] - E[x]^2``; statistics in float32), so parameter trees and checkpoints are
interchangeable.

Why not flax's: differentiating its mean and variance gives a backward pass of many small
reductions, each fused by XLA:CPU with a recomputation of the normalisation into a loop over the
``C`` channels; in the CPU preset's U-Net those were the largest cost of a training step
(``benchmarks/profile_step.py``). Here the derivative is written out once (Wu & He 2018 eq. 1
differentiated; ``xhat = (x - mean) * rstd``, ``mean_grp`` the average over the positions and
channels of each example's group). Forward mode, the tangent::

    t_xhat = rstd * (t_x - mean_grp(t_x) - xhat * mean_grp(t_x * xhat))
    t_y = t_xhat * scale + xhat * t_scale + t_bias

and reverse mode, its transpose (the map ``t_x -> t_xhat`` is symmetric)::

    dbias = sum_{b,h,w} dy          dscale = sum_{b,h,w} dy * xhat
    g = dy * scale
    dx = rstd * (g - mean_grp(g) - xhat * mean_grp(g * xhat))

:func:`group_norm` is a ``jax.custom_jvp`` with the first, written so that JAX's automatic
transpose of it is the second: every broadcast of a per-channel value over the positions is
:func:`~jaxdiff.models.sums.spread_positions`, which transposes to a sum computed as a matrix
product, and the per-channel terms are gathered so that the transpose needs only two sums over
the positions, ``sum dy`` and ``sum dy * xhat`` per example and channel, as a hand-written
backward pass would. ``jax.jvp``, ``jax.jacfwd``, ``jax.grad`` and ``jax.hessian`` all work.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
from flax import nnx
from jax.custom_derivatives import SymbolicZero

from jaxdiff.models.sums import spread_positions, sum_positions

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


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def group_norm(
    x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int, eps: float = 1e-6
) -> jax.Array:
    """Group-normalise ``x (B, ..., C)`` in ``groups`` groups; ``scale, bias (C,)``.

    Statistics and the normalisation run in float32; the result has ``x``'s dtype.
    ``C`` must be divisible by ``groups`` (checked by the callers that build models).
    """
    return _forward(x, scale, bias, groups, eps)[0].astype(x.dtype)


@functools.partial(group_norm.defjvp, symbolic_zeros=True)
def _jvp(groups, eps, primals, tangents):
    """The module docstring's tangent, gathered as ``t_y = a t_x + xhat P(u) + P(v)``.

    ``a = rstd * scale``; per example and channel ``(B, C)``:
    ``u = t_scale - rstd * scale * mean_grp(t_x * xhat)`` and
    ``v = t_bias - rstd * scale * mean_grp(t_x)``; ``P = spread_positions``. JAX's transpose
    (reverse mode) turns ``P`` into the two sums ``sum dy * xhat`` and ``sum dy``, as dots, and
    the rest into the module docstring's backward pass. A tangent that is a symbolic zero (an
    argument not being differentiated) skips its terms.
    """
    x, scale, bias = primals
    tx, tscale, tbias = (None if isinstance(t, SymbolicZero) else t for t in tangents)
    y, xhat, rstd = _forward(x, scale, bias, groups, eps)
    b, c = x.shape[0], x.shape[-1]
    n = _positions(xhat)
    scale32 = scale.astype(jnp.float32)
    terms, u, v = [], [], []  # terms of t_y; of u and v (B, C)
    if tx is not None:
        tx = tx.astype(jnp.float32)
        terms.append(tx * _broadcast(rstd, xhat) * scale32)
        k = -_per_channel(rstd, c) * scale32  # (B, C)
        u.append(k * _per_channel(_group_mean(sum_positions(tx * xhat), groups, n), c))
        v.append(k * _per_channel(_group_mean(sum_positions(tx), groups, n), c))
    if tscale is not None:
        u.append(jnp.broadcast_to(tscale.astype(jnp.float32), (b, c)))
    if tbias is not None:
        v.append(jnp.broadcast_to(tbias.astype(jnp.float32), (b, c)))
    if u:
        terms.append(xhat * spread_positions(_total(u), xhat.shape))
    if v:
        terms.append(spread_positions(_total(v), xhat.shape))
    return y.astype(x.dtype), _total(terms).astype(x.dtype)


def _total(terms: list[jax.Array]) -> jax.Array:
    """``terms[0] + terms[1] + ...``: no ``0 +`` (``sum``'s start), which JAX transposes into
    a dead reduction."""
    return functools.reduce(operator.add, terms)


def _per_channel(v: jax.Array, c: int) -> jax.Array:
    """``(B, groups)`` -> ``(B, C)``: each group's value on its channels."""
    return jnp.repeat(v, c // v.shape[1], axis=1)


class GroupNorm(nnx.Module):
    """Group normalisation over the last axis of ``(B, ..., C)`` inputs.

    Same parameters (``scale`` ones, ``bias`` zeros, shape ``(C,)``) and the same function as
    ``nnx.GroupNorm(num_features, num_groups=..., epsilon=1e-6)``, with the derivatives of
    :func:`group_norm` if ``fast_grad``; ``fast_grad=False`` differentiates the same forward
    computation by plain autodiff (slower gradients on XLA:CPU). Both work in forward and
    reverse mode. ``dtype`` is the output dtype (None: the input's); parameters stay
    ``param_dtype``.
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
