"""DDPM-style U-Net denoiser with residual blocks, GroupNorm, self-attention and labels.

Architecture (Ho et al. 2020, appendix B; Nichol & Dhariwal 2021):

* time: sinusoidal embedding of width ``base_channels`` -> Linear -> SiLU -> Linear to
  ``time_dim = 4 * base_channels``; with ``num_classes`` a learned label embedding
  (``num_classes + 1`` rows, the last one the null label for classifier-free guidance)
  is added to it;
* ``conv_in`` (3x3) to ``base_channels``;
* down path: per level ``num_res_blocks`` residual blocks at
  ``base_channels * channel_mults[level]`` channels (self-attention after each block at
  the resolutions in ``attention_resolutions``), then a stride-2 3x3 conv (padding 1,
  so a side ``n`` becomes ``ceil(n / 2)``: 28 -> 14 -> 7 -> 4);
* middle: residual block, self-attention, residual block;
* up path: per level ``num_res_blocks + 1`` residual blocks on the channel-concatenation
  with the matching down-path activation, then nearest-neighbour resize to the *exact*
  spatial shape of the next skip connection followed by a 3x3 conv (odd sizes such as
  4 -> 7 are handled explicitly; nothing is cropped);
* output: GroupNorm -> SiLU -> zero-initialised 3x3 conv, so a fresh model predicts 0.

The blocks are in :mod:`jaxdiff.models.unet_blocks`, the named architectures (``unet_mnist``
and friends) in :mod:`jaxdiff.models.presets`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdiff.models.apply import (
    check_images,
    check_labels,
    check_timesteps,
    embed_lookup,
    timestep_embedding,
)
from jaxdiff.models.denoiser import Denoiser
from jaxdiff.models.norm import GroupNorm
from jaxdiff.models.unet_blocks import AttentionBlock, Downsample, ResBlock, Upsample, make_conv

__all__ = ["UNet", "unet_level_sizes"]


class _Level(nnx.Module):
    """One resolution level: residual blocks, optional attention, optional resampling."""

    def __init__(
        self,
        blocks: list[ResBlock],
        attns: list[AttentionBlock],
        resample: Downsample | Upsample | None,
        transition: bool,
    ):
        self.blocks = nnx.List(blocks)
        self.attns = nnx.List(attns)  # empty, or one per block
        self.resample = resample
        self.transition = transition  # whether a level change (and a skip) follows


def _as_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return (image_size, image_size)
    size = tuple(int(s) for s in image_size)
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (H, W); got {image_size!r}.")
    return size  # type: ignore[return-value]


def unet_level_sizes(
    image_size: int | Sequence[int], num_levels: int, downsample: bool = True
) -> list[tuple[int, int]]:
    """Spatial size ``(h, w)`` of each U-Net level for an input of ``image_size``.

    Each stride-2 down-sampling maps a side ``n`` to ``ceil(n / 2)``; e.g.
    ``unet_level_sizes(28, 4) == [(28, 28), (14, 14), (7, 7), (4, 4)]``. With
    ``downsample=False`` every level keeps ``image_size``.
    """
    h, w = _as_size(image_size)
    sizes = [(h, w)]
    for _ in range(num_levels - 1):
        if downsample:
            h, w = -(-h // 2), -(-w // 2)
        sizes.append((h, w))
    return sizes


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _check_divides(
    name: str, value: int, channels: list[tuple[int, str]], layer: str, hint: str = ""
) -> None:
    """ValueError naming the first ``(count, where)`` of ``channels`` that ``value`` does not
    divide, and the values that divide them all."""
    for n, where in channels:
        if value < 1 or n % value:
            valid = _divisors(math.gcd(*(c for c, _ in channels)))
            raise ValueError(
                f"{name}={value} must divide channels={n} ({layer} in {where}); choose {name} "
                f"from {valid}{hint}."
            )


class UNet(Denoiser):
    """U-Net denoiser for NHWC images (see the module docstring for the architecture).

    Args:
      channels: image channels C (any count).
      image_size: input spatial size, ``int`` or ``(H, W)``. Fixed at construction
        because attention placement depends on the level sizes; calls with other sizes
        raise. Every level must be at least 2x2 (``unet_level_sizes`` lists them).
      base_channels: channels of the first level; level ``i`` has
        ``base_channels * channel_mults[i]``.
      channel_mults: channel multiplier per level; there are ``len(channel_mults) - 1``
        down-sampling steps.
      num_res_blocks: residual blocks per level on the way down (``+1`` on the way up).
      attention_resolutions: spatial sizes (side of a level, ``min(h, w)``) at which
        self-attention follows every residual block, e.g. ``(7,)`` for 28x28 inputs with
        three levels. Each must match a level; ``()`` for none.
      mid_attention: self-attention between the two middle residual blocks.
      dropout: dropout rate inside residual blocks, active only with ``dropout_key``.
      num_classes: ``None`` (unconditional) or K: labels ``0..K-1`` plus the null label
        ``K``; ``labels=None`` means the null label for the whole batch.
      norm_groups: GroupNorm groups; must divide every normalised channel count.
      num_heads: attention heads; must divide the channels at attention levels.
      downsample: ``False`` builds a U-Net with no down/up-sampling (all levels at
        ``image_size``; skips and channel changes are kept).
      dtype: computation dtype, e.g. ``jnp.bfloat16`` for mixed precision on GPUs/TPUs:
        inputs and activations are cast to it, parameters stay float32 (so gradients,
        optimiser state and EMA are float32), GroupNorm statistics and the attention
        softmax are computed in float32, and the output is cast back to ``x``'s dtype.
        ``None`` (default): compute in the dtype of the inputs (float32).
      fast_conv_grad: hand-written derivatives for XLA:CPU: the convolutions' kernel
        gradients as matrix products on CPU (:mod:`jaxdiff.models.conv`; other backends keep
        XLA's), the GroupNorm and bias gradients with their sums as matrix products
        (:mod:`jaxdiff.models.norm`, :mod:`jaxdiff.models.sums`). The same forward pass and
        parameters, derivatives equal up to float32 summation order, training steps faster
        on XLA:CPU (``benchmarks/RESULTS.md``). The layers are ``jax.custom_jvp`` functions
        whose reverse mode is JAX's transpose of their forward-mode rule, so ``jax.jvp``,
        ``jax.jacfwd``, ``jax.grad`` and ``jax.hessian`` work either way; ``False`` builds
        ``nnx.Conv`` and plain-autodiff GroupNorm layers.
      rngs: ``nnx.Rngs`` used for initialisation.

    Named architectures are in :mod:`jaxdiff.models.presets`; the default ``UNet(rngs=...)`` is
    ``unet_mnist`` without dropout.

    Call: ``model(x, t, labels=None, *, dropout_key=None)`` with ``x (B, H, W, C)``
    float, ``t (B,)`` or scalar timesteps (integer index or float), ``labels (B,)`` int
    or ``None`` -> ``(B, H, W, C)``. Label values are checked when concrete; under
    ``jit`` they cannot be, and an out-of-range label gives a NaN prediction for that
    example (see :func:`jaxdiff.models.apply.embed_lookup`).
    """

    def __init__(
        self,
        channels: int = 1,
        image_size: int | Sequence[int] = 28,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (7,),
        *,
        mid_attention: bool = True,
        dropout: float = 0.0,
        num_classes: int | None = None,
        norm_groups: int = 32,
        num_heads: int = 1,
        downsample: bool = True,
        dtype: jnp.dtype | None = None,
        fast_conv_grad: bool = True,
        rngs: nnx.Rngs,
    ):
        channel_mults = tuple(int(m) for m in channel_mults)
        attention_resolutions = tuple(int(r) for r in attention_resolutions)
        size = _as_size(image_size)
        # ---- validate everything before building anything ----
        if channels < 1 or base_channels < 1 or num_res_blocks < 1:
            raise ValueError(
                f"channels, base_channels and num_res_blocks must be >= 1; got "
                f"channels={channels}, base_channels={base_channels}, "
                f"num_res_blocks={num_res_blocks}."
            )
        if not channel_mults or min(channel_mults) < 1:
            raise ValueError(
                f"channel_mults must be a non-empty sequence of positive ints, e.g. (1, 2, 2); "
                f"got {channel_mults}."
            )
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be None or >= 1; got {num_classes}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1); got {dropout}.")
        if min(size) < 1:
            raise ValueError(f"image_size must be positive; got {size}.")
        if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"dtype must be a floating dtype such as jnp.float32 or jnp.bfloat16 (or None); "
                f"got {dtype!r}."
            )
        num_levels = len(channel_mults)
        sizes = unet_level_sizes(size, num_levels, downsample)
        if min(sizes[-1]) < 2:
            num_down = num_levels - 1
            path = " -> ".join(f"{h}x{w}" for h, w in sizes)
            minimum = 2**num_down + 1
            raise ValueError(
                f"image_size={size[0]}x{size[1]} is too small for {num_down} down-sampling "
                f"steps (channel_mults={channel_mults}): the levels would be {path}, below "
                f"the 2x2 minimum. This config works for H, W >= {minimum}; use fewer "
                f"channel_mults (fewer levels) or downsample=False for small images."
            )
        level_sides = [min(s) for s in sizes]
        for r in attention_resolutions:
            if r not in level_sides:
                raise ValueError(
                    f"attention_resolutions={attention_resolutions} contains {r}, which is not "
                    f"the size of any level for image_size={size[0]}x{size[1]} (level sizes: "
                    f"{sorted(set(level_sides), reverse=True)}). Choose from those sizes, or "
                    f"() for no attention outside the middle block."
                )
        attn_at = [side in attention_resolutions for side in level_sides]

        # Channel plan (DDPM bookkeeping of skip connections).
        chs = [base_channels * m for m in channel_mults]
        down_plan: list[list[tuple[int, int]]] = []
        skip_chs = [base_channels]
        ch = base_channels
        for i in range(num_levels):
            down_plan.append([])
            for _ in range(num_res_blocks):
                down_plan[i].append((ch, chs[i]))
                ch = chs[i]
                skip_chs.append(ch)
            if i != num_levels - 1:
                skip_chs.append(ch)
        mid_ch = ch
        up_plan: list[list[tuple[int, int]]] = []
        for i in reversed(range(num_levels)):
            up_plan.append([])
            for _ in range(num_res_blocks + 1):
                up_plan[-1].append((ch + skip_chs.pop(), chs[i]))
                ch = chs[i]

        normed: list[tuple[int, str]] = [(mid_ch, "the middle block")]
        attn_chs: list[tuple[int, str]] = [(mid_ch, "the middle block")] if mid_attention else []
        for i, blocks in enumerate(down_plan):
            for j, (cin, cout) in enumerate(blocks):
                where = f"down level {i} block {j}"
                normed += [(cin, where), (cout, where)]
                if attn_at[i]:
                    attn_chs.append((cout, where))
        for k, blocks in enumerate(up_plan):
            i = num_levels - 1 - k
            for j, (cin, cout) in enumerate(blocks):
                where = f"up level {i} block {j} (input concatenated with its skip)"
                normed += [(cin, where), (cout, where)]
                if attn_at[i]:
                    attn_chs.append((cout, where))
        normed.append((ch, "the output norm"))
        hint = (
            ", which divide every normalised channel count of this config, or change base_channels"
        )
        _check_divides("norm_groups", norm_groups, normed, "GroupNorm", hint)
        _check_divides("num_heads", num_heads, attn_chs, "attention")

        # ---- build ----
        self.channels = channels
        self.image_size = size
        self.base_channels = base_channels
        self.channel_mults = channel_mults
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = attention_resolutions
        self.num_classes = num_classes
        self.downsample = downsample
        self.dtype = dtype
        time_dim = 4 * base_channels
        kw = dict(dtype=dtype, rngs=rngs)
        ckw = dict(kw, fast_conv_grad=fast_conv_grad)
        self.time_in = nnx.Linear(base_channels, time_dim, **kw)
        self.time_out = nnx.Linear(time_dim, time_dim, **kw)
        self.label_embed = (
            nnx.Embed(num_classes + 1, time_dim, **kw) if num_classes is not None else None
        )
        self.conv_in = make_conv(channels, base_channels, (3, 3), padding="SAME", **ckw)

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, time_dim, norm_groups=norm_groups, dropout=dropout, **ckw)

        def attn(c: int) -> AttentionBlock:
            return AttentionBlock(c, num_heads=num_heads, norm_groups=norm_groups, **ckw)

        down_levels = []
        for i, blocks in enumerate(down_plan):
            last = i == num_levels - 1
            resample = Downsample(chs[i], **ckw) if downsample and not last else None
            down_levels.append(
                _Level(
                    [res(cin, cout) for cin, cout in blocks],
                    [attn(cout) for _, cout in blocks] if attn_at[i] else [],
                    resample,
                    transition=not last,
                )
            )
        self.down = nnx.List(down_levels)
        self.mid_block1 = res(mid_ch, mid_ch)
        self.mid_attn = attn(mid_ch) if mid_attention else None
        self.mid_block2 = res(mid_ch, mid_ch)
        up_levels = []
        for k, blocks in enumerate(up_plan):
            i = num_levels - 1 - k
            resample = Upsample(chs[i], **ckw) if downsample and i != 0 else None
            up_levels.append(
                _Level(
                    [res(cin, cout) for cin, cout in blocks],
                    [attn(cout) for _, cout in blocks] if attn_at[i] else [],
                    resample,
                    transition=i != 0,
                )
            )
        self.up = nnx.List(up_levels)  # lowest resolution first
        self.out_norm = GroupNorm(ch, num_groups=norm_groups, fast_grad=fast_conv_grad, **kw)
        self.out_conv = make_conv(
            ch, channels, (3, 3), padding="SAME", kernel_init=nnx.initializers.zeros_init(), **ckw
        )

    def check_inputs(self, x, t, labels):
        check_images(x, self.channels, "UNet")
        if tuple(x.shape[1:3]) != self.image_size:
            h, w = self.image_size
            raise ValueError(
                f"this UNet was built for image_size={h}x{w} (its attention levels depend "
                f"on it) but x is {x.shape[1]}x{x.shape[2]} (shape {x.shape}). Build it with "
                f"image_size=({x.shape[1]}, {x.shape[2]}) or resize the images."
            )
        t = check_timesteps(t, x.shape[0])
        return t, check_labels(labels, x.shape[0], self.num_classes)

    def predict(
        self, x: jax.Array, t: jax.Array, labels: jax.Array | None, dropout_key: jax.Array | None
    ) -> jax.Array:

        temb = self.time_out(nnx.silu(self.time_in(timestep_embedding(t, self.base_channels))))
        if self.label_embed is not None:
            temb = temb + embed_lookup(self.label_embed, labels)

        counter = iter(range(1 << 30))

        def key() -> jax.Array | None:
            index = next(counter)
            return None if dropout_key is None else jax.random.fold_in(dropout_key, index)

        h = self.conv_in(x)
        hs = [h]
        for level in self.down:
            for j, block in enumerate(level.blocks):
                h = block(h, temb, key())
                if level.attns:
                    h = level.attns[j](h)
                hs.append(h)
            if level.transition:
                if level.resample is not None:
                    h = level.resample(h)
                hs.append(h)
        h = self.mid_block1(h, temb, key())
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid_block2(h, temb, key())
        for level in self.up:
            for j, block in enumerate(level.blocks):
                h = block(jnp.concatenate([h, hs.pop()], axis=-1), temb, key())
                if level.attns:
                    h = level.attns[j](h)
            if level.transition and level.resample is not None:
                h = level.resample(h, hs[-1].shape[1:3])
        return self.out_conv(nnx.silu(self.out_norm(h))).astype(x.dtype)
