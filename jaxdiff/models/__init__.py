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
from jaxdiff.models.mlp import ConditionalLinear, ConditionalMLP, SinusoidalMLP, torch_linear
from jaxdiff.models.unet import (
    AttentionBlock,
    Downsample,
    ResBlock,
    UNet,
    Upsample,
    improved_denoiser_8x8,
    unet_level_sizes,
    unet_mnist,
    unet_mnist_small,
)

__all__ = [
    "ApplyFn",
    "AttentionBlock",
    "ConditionalLinear",
    "ConditionalMLP",
    "Downsample",
    "ResBlock",
    "SinusoidalMLP",
    "SmallCNN",
    "UNet",
    "Upsample",
    "check_labels",
    "check_timesteps",
    "count_params",
    "dropout",
    "embed_lookup",
    "improved_denoiser_8x8",
    "split_model",
    "timestep_embedding",
    "torch_linear",
    "unet_level_sizes",
    "unet_mnist",
    "unet_mnist_small",
]
