"""Named models: the denoisers the experiments train, built by name.

Each preset is a frozen description of one architecture that builds the model when called: a
:class:`UNetPreset` (a :class:`~jaxdiff.models.unet.UNet`) or the tutorials' small CNN
(:class:`CNNPreset`)::

    model = unet_mnist(rngs=nnx.Rngs(0))                      # 28x28, 1 channel, unconditional
    model = unet_mnist(1, 32, num_classes=10, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    model = make_model("unet_compact", image_size=28, rngs=nnx.Rngs(0))

:data:`PRESETS` maps every name to its preset; a run folder names its model by this name, so a
trained run can be rebuilt from its config alone (:func:`jaxdiff.runs.load_run`). Every preset's
pure apply (:func:`jaxdiff.models.split_model`) composes with ``jax.jvp``, ``jax.jacfwd`` and
``jax.grad``, with the default ``fast_conv_grad=True`` layers as without them
(``tests/test_models.py``; their second derivatives: ``tests/test_conv.py``, ``test_norm.py``).

Parameter counts below are for 1 channel and no labels; ``num_classes=10`` adds
``11 * 4 * base_channels`` (the label embedding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from jaxdiff.models.cnn import SmallCNN
from jaxdiff.models.unet import UNet, unet_level_sizes

__all__ = [
    "PRESETS",
    "CNNPreset",
    "UNetPreset",
    "improved_denoiser_8x8",
    "make_model",
    "small_cnn",
    "unet_compact",
    "unet_mnist",
    "unet_mnist_small",
    "unet_small_8x8",
    "unet_tiny",
    "unet_tiny_8x8",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class UNetPreset:
    """One named U-Net architecture; calling it builds the model.

    Attributes:
      name: the preset's name in :data:`PRESETS`.
      description: one line for listings and ``--help``.
      image_size: the default input side (28 for MNIST, 8 for the 8x8 digits).
      base_channels, channel_mults, num_res_blocks, norm_groups, mid_attention, downsample:
        passed to :class:`UNet`.
      lowest_attention: self-attention after every block of the lowest level (7x7 for 28x28
        inputs, 8x8 for 32x32); the level depends on the image size, so it is chosen at build.
      dropout: default dropout rate (active only when the model is called with a
        ``dropout_key``).
    """

    name: str
    description: str
    image_size: int
    base_channels: int
    channel_mults: tuple[int, ...]
    num_res_blocks: int
    norm_groups: int
    lowest_attention: bool
    mid_attention: bool = True
    downsample: bool = True
    dropout: float = 0.0

    def __call__(
        self,
        channels: int = 1,
        image_size: int | Sequence[int] | None = None,
        num_classes: int | None = None,
        *,
        dropout: float | None = None,
        dtype: jnp.dtype | None = None,
        fast_conv_grad: bool = True,
        num_steps: int | None = None,
        rngs: nnx.Rngs,
    ) -> UNet:
        """The U-Net for images ``(B, H, W, channels)``; ``image_size`` defaults to the preset's.

        ``dropout`` overrides the preset's rate; ``dtype`` is the compute dtype (parameters stay
        float32); ``fast_conv_grad`` as in :class:`UNet`. ``num_steps`` (the schedule's T) is
        unused: the U-Net embeds any timestep sinusoidally.
        """
        del num_steps
        size = self.image_size if image_size is None else image_size
        num_levels = len(self.channel_mults)
        attention: tuple[int, ...] = ()
        if self.lowest_attention:
            attention = (min(unet_level_sizes(size, num_levels, self.downsample)[-1]),)
        return UNet(
            channels,
            size,
            base_channels=self.base_channels,
            channel_mults=self.channel_mults,
            num_res_blocks=self.num_res_blocks,
            attention_resolutions=attention,
            mid_attention=self.mid_attention,
            dropout=self.dropout if dropout is None else dropout,
            num_classes=num_classes,
            norm_groups=self.norm_groups,
            downsample=self.downsample,
            dtype=dtype,
            fast_conv_grad=fast_conv_grad,
            rngs=rngs,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class CNNPreset:
    """The tutorials' small CNN (:class:`~jaxdiff.models.cnn.SmallCNN`) under a preset's name.

    It is unconditional, computes in float32 and works at any image size; calling it with
    ``num_classes`` or a ``dtype`` raises instead of ignoring them.
    """

    name: str
    description: str
    image_size: int
    hidden: int
    activation: str = "silu"
    scalar_time: bool = True  # the tutorial's time feature t / T (else sinusoidal)

    def __call__(
        self,
        channels: int = 1,
        image_size: int | Sequence[int] | None = None,
        num_classes: int | None = None,
        *,
        dtype: jnp.dtype | None = None,
        fast_conv_grad: bool = True,
        num_steps: int | None = None,
        rngs: nnx.Rngs,
    ) -> SmallCNN:
        """The CNN for images ``(B, H, W, channels)`` of any size (``fast_conv_grad`` unused);
        ``num_steps`` is the schedule's T, which the scalar time feature ``t / T`` needs."""
        del image_size, fast_conv_grad
        if self.scalar_time and num_steps is None:
            raise ValueError(
                f"{self.name} feeds the network t / T: pass num_steps=T (the schedule's steps)"
            )
        if num_classes is not None:
            raise ValueError(
                f"{self.name} is unconditional: it takes no num_classes (got {num_classes}); "
                "use a U-Net preset for a class-conditional model"
            )
        if dtype is not None and jnp.dtype(dtype) != jnp.float32:
            raise ValueError(f"{self.name} computes in float32 only, got dtype={dtype}")
        steps = num_steps if self.scalar_time else None
        return SmallCNN(channels, self.hidden, steps, activation=self.activation, rngs=rngs)


# fmt: off
unet_tiny = UNetPreset(
    name="unet_tiny", image_size=28, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
    norm_groups=4, lowest_attention=False, mid_attention=False,
    description="two levels of 8 and 16 channels, no attention (40,489 parameters): for tests",
)
# On XLA:CPU the base-32 unet_mnist_small trains at ~6 s per batch-64 step on 2 cores
# (benchmarks/RESULTS.md), too slow for a short CPU run; base 16 is ~4x cheaper.
unet_compact = UNetPreset(
    name="unet_compact", image_size=28, base_channels=16, channel_mults=(1, 2, 2),
    num_res_blocks=1, norm_groups=8, lowest_attention=True,
    description="unet_mnist_small at base 16 (280,177 parameters): the CPU preset's U-Net",
)
unet_mnist_small = UNetPreset(
    name="unet_mnist_small", image_size=28, base_channels=32, channel_mults=(1, 2, 2),
    num_res_blocks=1, norm_groups=8, lowest_attention=True,
    description="base 32, mults (1, 2, 2), 1 residual block per level (1,112,801 parameters)",
)
unet_mnist = UNetPreset(
    name="unet_mnist", image_size=28, base_channels=64, channel_mults=(1, 2, 2),
    num_res_blocks=2, norm_groups=32, lowest_attention=True, dropout=0.1,
    description="base 64, mults (1, 2, 2), 2 residual blocks, 32 groups, dropout 0.1 "
    "(6,469,889 parameters): the GPU preset's U-Net",
)
# The 8x8-digits tutorial's "improved denoiser": residual blocks at 64 -> 128 -> 256 channels,
# all at full 8x8 resolution, residual block + self-attention + residual block in the middle.
improved_denoiser_8x8 = UNetPreset(
    name="improved_denoiser_8x8", image_size=8, base_channels=64, channel_mults=(1, 2, 4),
    num_res_blocks=1, norm_groups=8, lowest_attention=False, downsample=False,
    description="the 8x8-digits tutorial's improved denoiser: 64/128/256 channels at 8x8 "
    "(9,202,305 parameters)",
)
unet_small_8x8 = UNetPreset(
    name="unet_small_8x8", image_size=8, base_channels=32, channel_mults=(1, 2),
    num_res_blocks=1, norm_groups=8, lowest_attention=False, downsample=False,
    description="two levels (32, 64 channels) at full 8x8 resolution (604,865 parameters)",
)
unet_tiny_8x8 = UNetPreset(
    name="unet_tiny_8x8", image_size=8, base_channels=8, channel_mults=(1,), num_res_blocks=1,
    norm_groups=4, lowest_attention=False, mid_attention=False, downsample=False,
    description="one level of 8 channels at 8x8 (10,289 parameters): for tests",
)
small_cnn = CNNPreset(
    name="small_cnn", image_size=28, hidden=64,
    description="the tutorials' three-conv CNN, 64 channels, time feature t / T "
    "(42,433 parameters)",
)
# fmt: on

#: Every preset by name.
PRESETS: dict[str, UNetPreset | CNNPreset] = {
    p.name: p
    for p in (
        unet_tiny,
        unet_compact,
        unet_mnist_small,
        unet_mnist,
        improved_denoiser_8x8,
        unet_small_8x8,
        unet_tiny_8x8,
        small_cnn,
    )
}


def make_model(
    name: str,
    channels: int = 1,
    image_size: int | Sequence[int] | None = None,
    num_classes: int | None = None,
    **kwargs,
) -> nnx.Module:
    """Build the preset ``name`` (a key of :data:`PRESETS`); ``kwargs`` as in
    :meth:`UNetPreset.__call__` (``rngs`` is required).

    Raises:
      ValueError: ``name`` is not a preset; the message lists them.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name](channels, image_size, num_classes, **kwargs)
