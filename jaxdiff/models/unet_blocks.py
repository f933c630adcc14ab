"""The U-Net's building blocks: residual block, self-attention, down- and up-sampling.

Residual block (Ho et al. 2020, appendix B): ``GroupNorm -> SiLU -> conv3x3 -> +
Linear(SiLU(temb)) -> GroupNorm -> SiLU -> dropout -> conv3x3``, plus the input (through a 1x1
conv when channels change). Up-sampling resizes to the exact size of the next skip connection
(odd sizes such as 4 -> 7 included) with a scatter-free nearest-neighbour resize.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdiff.models import conv as _conv_lib
from jaxdiff.models.apply import dropout
from jaxdiff.models.norm import GroupNorm

__all__ = ["AttentionBlock", "Downsample", "ResBlock", "Upsample", "make_conv", "nearest_resize"]


def make_conv(cin: int, cout: int, kernel: tuple[int, int], *, fast_conv_grad: bool, **kw):
    """A conv layer: :class:`jaxdiff.models.conv.Conv` (gradients fast on XLA:CPU) if
    ``fast_conv_grad``, else ``nnx.Conv``; the same parameters, and both differentiable in
    forward and reverse mode."""
    if fast_conv_grad:
        return _conv_lib.Conv(cin, cout, kernel, **kw)
    return nnx.Conv(cin, cout, kernel, **kw)


class ResBlock(nnx.Module):
    """Residual block with GroupNorm, SiLU, time injection and optional dropout.

    ``h = conv1(SiLU(GN(x))) + Linear(SiLU(temb))[:, None, None, :]``;
    ``h = conv2(dropout(SiLU(GN(h))))``; returns ``skip(x) + h`` where ``skip`` is a
    1x1 conv if ``in_channels != out_channels`` and the identity otherwise.
    ``fast_conv_grad``: the hand-written derivatives of :mod:`.conv` and :mod:`.norm` (the same
    function and parameters; forward and reverse mode either way).

    Call: ``x (B, H, W, in_channels)``, ``temb (B, time_dim)``, ``dropout_key`` (or
    ``None``: no dropout) -> ``(B, H, W, out_channels)``. ``dtype`` is the computation
    dtype of every layer (``None``: that of the inputs); parameters stay float32.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_dim: int,
        *,
        norm_groups: int,
        dropout: float = 0.0,
        dtype: jnp.dtype | None = None,
        fast_conv_grad: bool = True,
        rngs: nnx.Rngs,
    ):
        self.dropout = dropout
        kw = dict(dtype=dtype, rngs=rngs)
        ckw = dict(kw, fast_conv_grad=fast_conv_grad)
        nkw = dict(kw, num_groups=norm_groups, fast_grad=fast_conv_grad)
        self.norm1 = GroupNorm(in_channels, **nkw)
        self.conv1 = make_conv(in_channels, out_channels, (3, 3), padding="SAME", **ckw)
        self.time_proj = nnx.Linear(time_dim, out_channels, **kw)
        self.norm2 = GroupNorm(out_channels, **nkw)
        self.conv2 = make_conv(out_channels, out_channels, (3, 3), padding="SAME", **ckw)
        self.skip = (
            make_conv(in_channels, out_channels, (1, 1), **ckw)
            if in_channels != out_channels
            else None
        )

    def __call__(
        self, x: jax.Array, temb: jax.Array, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        h = self.conv1(nnx.silu(self.norm1(x)))
        h = h + self.time_proj(nnx.silu(temb))[:, None, None, :]
        h = nnx.silu(self.norm2(h))
        h = self.conv2(dropout(h, self.dropout, dropout_key))
        return h + (x if self.skip is None else self.skip(x))


class AttentionBlock(nnx.Module):
    """Multi-head self-attention over the H*W positions, with a residual connection.

    ``x + proj(softmax(q k^T / sqrt(d)) v)`` with ``q, k, v`` linear maps of ``GN(x)``
    and ``d = channels / num_heads``.

    Call: ``x (B, H, W, channels)`` -> ``(B, H, W, channels)``. The softmax runs in float32
    whatever the computation ``dtype`` (``jax.nn.dot_product_attention``'s XLA path).
    ``fast_conv_grad``: the GroupNorm's hand-written derivatives (:mod:`.norm`).
    """

    def __init__(
        self,
        channels: int,
        *,
        num_heads: int = 1,
        norm_groups: int,
        dtype: jnp.dtype | None = None,
        fast_conv_grad: bool = True,
        rngs: nnx.Rngs,
    ):
        self.num_heads = num_heads
        self.norm = GroupNorm(
            channels, num_groups=norm_groups, dtype=dtype, fast_grad=fast_conv_grad, rngs=rngs
        )
        self.qkv = nnx.Linear(channels, 3 * channels, dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(channels, channels, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, h * w, c))
        q, k, v = (
            a.reshape(b, h * w, self.num_heads, c // self.num_heads)
            for a in jnp.split(qkv, 3, axis=-1)
        )
        out = jax.nn.dot_product_attention(q, k, v)  # (B, HW, heads, d); scale 1/sqrt(d)
        return x + self.proj(out.reshape(b, h * w, c)).reshape(b, h, w, c)


class _Resample(nnx.Module):
    """A 3x3 conv ``channels -> channels`` with the subclass's ``conv_kwargs``."""

    conv_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        channels: int,
        *,
        dtype: jnp.dtype | None = None,
        fast_conv_grad: bool = True,
        rngs: nnx.Rngs,
    ):
        self.conv = make_conv(
            channels, channels, (3, 3), dtype=dtype, fast_conv_grad=fast_conv_grad, rngs=rngs,
            **self.conv_kwargs,
        )  # fmt: skip


class Downsample(_Resample):
    """Stride-2 3x3 conv with padding 1: ``(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), C)``."""

    conv_kwargs: ClassVar[dict[str, Any]] = {"strides": (2, 2), "padding": ((1, 1), (1, 1))}

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class Upsample(_Resample):
    """Nearest-neighbour resize to an exact target size, then a 3x3 conv.

    Call: ``x (B, h, w, C)``, ``size = (H, W)`` -> ``(B, H, W, C)``. For ``H = 2h`` the
    resize repeats every pixel twice; for odd targets (4 -> 7) it picks the nearest
    source pixel, so the output always matches the skip connection's shape exactly.
    """

    conv_kwargs: ClassVar[dict[str, Any]] = {"padding": "SAME"}

    def __call__(self, x: jax.Array, size: tuple[int, int]) -> jax.Array:
        return self.conv(nearest_resize(x, size))


def nearest_resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Nearest-neighbour resize ``(B, h, w, C) -> (B, H, W, C)`` with a deterministic gradient.

    The values equal ``jax.image.resize(x, (B, H, W, C), "nearest")``, whose backward pass is a
    scatter-add: atomics on a GPU, so gradients (and a resumed run) could differ from one run to
    the next. Here an integer factor repeats each pixel (backward: a reshape and a sum) and any
    other size (4 -> 7) selects the source pixels with a 0/1 matrix product at full precision
    (backward: the transposed product). Neither has a scatter, on any backend.
    """
    for axis, n_out in ((1, int(size[0])), (2, int(size[1]))):
        n_in = x.shape[axis]
        if n_out == n_in:
            continue
        if n_out % n_in == 0:
            x = jnp.repeat(x, n_out // n_in, axis=axis)
            continue
        # jax.image.resize's own choice of source pixel for every output position
        src = jax.image.resize(jnp.arange(n_in, dtype=jnp.float32), (n_out,), "nearest")
        select = jax.nn.one_hot(src.astype(jnp.int32), n_in, dtype=x.dtype)  # (n_out, n_in)
        x = jnp.moveaxis(
            jnp.tensordot(select, x, axes=((1,), (axis,)), precision=jax.lax.Precision.HIGHEST),
            0,
            axis,
        )
    return x
