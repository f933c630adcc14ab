"""The pure-function boundary between Flax NNX denoisers and training/sampling code.

Every denoiser in :mod:`jaxdiff.models` is an ``nnx.Module`` called as::

    y = model(x, t, labels=None, *, dropout_key=None)   # y.shape == x.shape

Training and sampling code never sees the module. :func:`split_model` turns it into a
graph definition, a parameter pytree and a pure ``apply`` function::

    graphdef, params, apply = split_model(model)
    y = apply(params, x, t, labels=None, *, dropout_key=None)

This module also holds the pieces of that calling convention shared by all models:
input validation (:func:`check_timesteps`, :func:`check_points`; :func:`check_labels` and
:func:`check_images`, i.e. :func:`jaxdiff._validate.check_model_images`, live in
:mod:`jaxdiff._validate` and are re-exported here), the sinusoidal timestep embedding and
functional dropout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdiff._validate import check_float_input, check_labels, concrete_value
from jaxdiff._validate import check_model_images as check_images

__all__ = [
    "ApplyFn",
    "check_images",
    "check_labels",
    "check_timesteps",
    "count_params",
    "dropout",
    "embed_lookup",
    "split_model",
    "timestep_embedding",
]

ApplyFn = Callable[..., jax.Array]
"""``apply(params, x, t, labels=None, *, dropout_key=None) -> y`` with ``y.shape == x.shape``."""


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, ApplyFn]:
    """Split an NNX denoiser into ``(graphdef, params, apply)``.

    Args:
      model: any denoiser of :mod:`jaxdiff.models` (or any ``nnx.Module`` with the
        signature ``model(x, t, labels=None, *, dropout_key=None)``).

    Returns:
      graphdef: the static structure of ``model`` (``nnx.GraphDef``).
      params: an ``nnx.State`` pytree holding every ``nnx.Param`` of ``model``; this is
        what optimisers update and what ``jax.grad`` differentiates.
      apply: the pure function ``apply(params, x, t, labels=None, *, dropout_key=None)``
        returning the prediction with ``x``'s shape. It rebuilds the module from
        ``graphdef`` and ``params`` with ``nnx.merge`` on every call, so it can be
        wrapped in ``jax.jit``, ``jax.grad`` and ``jax.vmap`` with ``params`` as an
        ordinary argument. Dropout is active only when ``dropout_key`` is given.

    Any non-``Param`` state of ``model`` (none of the jaxdiff models has any; e.g. batch
    statistics or RNG counters of user modules) is captured in ``apply``'s closure as a
    constant: it is neither an argument nor updated by ``apply``.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def apply(
        params: nnx.State,
        x: jax.Array,
        t: jax.Array | int,
        labels: jax.Array | None = None,
        *,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        module = nnx.merge(graphdef, params, rest)
        return module(x, t, labels, dropout_key=dropout_key)

    return graphdef, params, apply


def count_params(tree: Any) -> int:
    """Total number of scalar parameters in ``tree`` (an ``nnx.State``, a module or arrays).

    Works on abstract models too, so a large config can be counted without initialising it:
    ``count_params(nnx.eval_shape(lambda: unet_mnist(rngs=nnx.Rngs(0))))``.
    """
    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree, nnx.Param)
    # ``leaf.shape`` also covers abstract leaves (``jax.ShapeDtypeStruct`` from ``nnx.eval_shape``).
    return int(
        sum(math.prod(getattr(leaf, "shape", np.shape(leaf))) for leaf in jax.tree.leaves(tree))
    )


def check_timesteps(
    t: jax.Array | int,
    batch: int,
    *,
    num_steps: int | None = None,
    integer: bool = False,
) -> jax.Array:
    """Validate timesteps and broadcast them to shape ``(batch,)``.

    Args:
      t: a scalar or a ``(batch,)`` array of timestep indices in ``[0, num_steps)``.
      batch: the batch size B of the model input.
      num_steps: if given and ``t`` is concrete (not traced under ``jit``), values
        outside ``[0, num_steps)`` raise. Under ``jit`` values cannot be checked.
      integer: require an integer dtype (models that index a per-step table).

    Returns:
      ``t`` broadcast to shape ``(batch,)`` (dtype unchanged).
    """
    t = jnp.asarray(t)
    if t.shape not in ((), (batch,)):
        raise ValueError(
            f"t must be a scalar or have shape (B,) = ({batch},) matching the batch of x; "
            f"got shape {t.shape}. Pass one timestep index per example, e.g. t.reshape(-1)."
        )
    if integer and not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(
            f"t must hold integer timestep indices for this model (it indexes a per-step "
            f"table); got dtype {t.dtype}. Pass t.astype(jnp.int32)."
        )
    if num_steps is not None:
        values = concrete_value(t)
        if values is not None and values.size and (values.min() < 0 or values.max() >= num_steps):
            raise ValueError(
                f"t must lie in [0, num_steps) = [0, {num_steps}); got values in "
                f"[{values.min()}, {values.max()}]. Use 0-based timestep indices, or build "
                f"the model with a larger num_steps."
            )
    return jnp.broadcast_to(t, (batch,))


def check_points(x: jax.Array, dim: int, model: str) -> None:
    """Raise unless ``x`` is a floating batch of points ``(B, dim)``."""
    if x.ndim != 2 or x.shape[-1] != dim:
        raise ValueError(
            f"{model} was built for dim={dim} and expects points of shape (B, {dim}); got "
            f"shape {x.shape}. Add a batch axis for one point (x[None]) or build the model "
            f"with dim={x.shape[-1] if x.ndim else 1}."
        )
    check_float_input(x)


def embed_lookup(embed: nnx.Embed, index: jax.Array) -> jax.Array:
    """Rows of an embedding table, NaN for indices outside ``[0, num_embeddings)``.

    Models validate concrete indices (labels, timestep indices) with a clear error before
    the lookup; under ``jit`` values cannot be checked, so an invalid index yields a row of
    NaN (and hence a NaN prediction and loss) instead of silently wrapping (negative
    indices) or reusing another row.

    Args:
      embed: an ``nnx.Embed`` with ``num_embeddings`` rows of width ``features``.
      index: integer array of any shape ``S``.

    Returns:
      ``S + (features,)`` rows.
    """
    n = embed.num_embeddings
    rows = embed(jnp.clip(index, 0, n - 1))
    valid = (index >= 0) & (index < n)
    return jnp.where(valid[..., None], rows, jnp.nan)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal timestep embedding (Transformer / DDPM style).

    ``emb[b] = [cos(t_b w_0), ..., cos(t_b w_{h-1}), sin(t_b w_0), ..., sin(t_b w_{h-1})]``
    with ``h = dim // 2`` and ``w_i = max_period ** (-i / h)`` (the improved-diffusion
    convention); an odd ``dim`` gets a trailing zero column.

    Args:
      t: ``(B,)`` timesteps (integer or float; converted to float32).
      dim: embedding width.
      max_period: the longest period ``2 pi max_period`` of the slowest frequency.

    Returns:
      ``(B, dim)`` float32 embedding.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout: zero each entry with probability ``rate`` and rescale by ``1/(1-rate)``.

    Identity when ``key`` is ``None`` (evaluation mode) or ``rate == 0``.
    """
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))
