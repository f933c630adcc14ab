"""Flax NNX denoisers and the pure ``apply`` boundary.

Every model is an ``nnx.Module`` built as ``Model(..., rngs=nnx.Rngs(seed))`` and called
as ``model(x, t, labels=None, *, dropout_key=None)``, returning a prediction of ``x``'s
shape. :func:`split_model` turns a model into ``(graphdef, params, apply)`` for
training and sampling code.
"""

from jaxdiff.models.apply import (
    ApplyFn,
    check_labels,
    check_timesteps,
    count_params,
    dropout,
    embed_lookup,
    split_model,
    timestep_embedding,
)
from jaxdiff.models.cnn import SmallCNN
from jaxdiff.models.denoiser import Denoiser
from jaxdiff.models.mlp import ConditionalLinear, ConditionalMLP, SinusoidalMLP, torch_linear
from jaxdiff.models.presets import (
    PRESETS,
    UNetPreset,
    improved_denoiser_8x8,
    make_model,
    unet_compact,
    unet_mnist,
    unet_mnist_small,
    unet_small_8x8,
    unet_tiny,
    unet_tiny_8x8,
)
from jaxdiff.models.unet import UNet, unet_level_sizes
from jaxdiff.models.unet_blocks import AttentionBlock, Downsample, ResBlock, Upsample

__all__ = [
    "PRESETS",
    "ApplyFn",
    "AttentionBlock",
    "ConditionalLinear",
    "ConditionalMLP",
    "Denoiser",
    "Downsample",
    "ResBlock",
    "SinusoidalMLP",
    "SmallCNN",
    "UNet",
    "UNetPreset",
    "Upsample",
    "check_labels",
    "check_timesteps",
    "count_params",
    "dropout",
    "embed_lookup",
    "improved_denoiser_8x8",
    "make_model",
    "split_model",
    "timestep_embedding",
    "torch_linear",
    "unet_compact",
    "unet_level_sizes",
    "unet_mnist",
    "unet_mnist_small",
    "unet_small_8x8",
    "unet_tiny",
    "unet_tiny_8x8",
]
