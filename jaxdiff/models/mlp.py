"""Time-conditioned MLP denoisers for low-dimensional points (1-, 2- and 3-D data).

Two variants:

* :class:`ConditionalMLP` -- the classic 2-D "diffusion models from scratch" tutorial
  model: linear layers whose outputs are scaled by a learned per-timestep embedding.
* :class:`SinusoidalMLP` -- a sinusoidal timestep embedding (DDPM / Transformer style)
  fed through an MLP and added to every hidden layer.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdiff.models.apply import (
    check_labels,
    check_points,
    check_timesteps,
    dropout,
    embed_lookup,
    timestep_embedding,
)
from jaxdiff.models.denoiser import Denoiser

__all__ = ["ConditionalLinear", "ConditionalMLP", "SinusoidalMLP", "torch_linear"]


def torch_linear(num_in: int, num_out: int, *, rngs: nnx.Rngs) -> nnx.Linear:
    """``nnx.Linear(num_in, num_out)`` initialised like PyTorch's ``nn.Linear`` default.

    PyTorch uses kaiming-uniform with ``a = sqrt(5)`` for the weight and a matching
    uniform for the bias, i.e. both ``~ U(-1/sqrt(num_in), 1/sqrt(num_in))``.
    """
    bound = 1.0 / math.sqrt(num_in)

    def bias_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nnx.Linear(
        num_in,
        num_out,
        # variance_scaling(1/3, fan_in, uniform) = U(-sqrt(3 * (1/3) / fan_in), +...) .
        kernel_init=nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
        bias_init=bias_init,
        rngs=rngs,
    )


class ConditionalLinear(nnx.Module):
    """Linear layer scaled by a learned per-timestep embedding (the tutorial's layer).

    ``y = (x @ W + b) * embed[t]`` with ``embed`` of shape ``(num_steps, num_out)``
    initialised ``U[0, 1)`` (PyTorch ``embedding.weight.data.uniform_()``), and the
    linear part initialised like PyTorch's ``nn.Linear`` (see :func:`torch_linear`).
    Parameters: ``num_in * num_out + num_out + num_steps * num_out``.

    Call: ``x (B, num_in)``, ``t (B,)`` int in ``[0, num_steps)`` -> ``(B, num_out)``
    (an index outside that range gives NaN rows; see :func:`embed_lookup`).
    """

    def __init__(self, num_in: int, num_out: int, num_steps: int, *, rngs: nnx.Rngs):
        self.num_out = num_out
        self.lin = torch_linear(num_in, num_out, rngs=rngs)
        self.embed = nnx.Embed(
            num_steps, num_out, embedding_init=nnx.initializers.uniform(1.0), rngs=rngs
        )

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        return self.lin(x) * embed_lookup(self.embed, t)


class ConditionalMLP(Denoiser):
    """The 2-D tutorial's denoiser with per-timestep conditional linear layers.

    ``ConditionalLinear(dim, hidden) -> softplus -> ConditionalLinear(hidden, hidden) ->
    softplus -> ConditionalLinear(hidden, hidden) -> softplus -> Linear(hidden, dim)``.
    All linear layers use PyTorch's ``nn.Linear`` default initialisation
    (kaiming-uniform, a = sqrt(5): weight and bias ``~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``)
    and the step embeddings ``U[0, 1)``, so the tutorial's recipe (learning rate, number
    of steps) carries over unchanged.

    Parameters: ``(dim + 1) * hidden + 2 * (hidden + 1) * hidden + 3 * num_steps * hidden
    + (hidden + 1) * dim``; ``ConditionalMLP(dim=2, num_steps=100)``: 72,066
    (``dim=3``: 72,323; ``dim=1``: 71,809).

    Args:
      dim: data dimension D (1, 2 or 3 for the tutorials; any D works).
      num_steps: number of diffusion steps T; ``t`` indexes ``[0, T)``.
      hidden: hidden width (128 in the tutorial).
      rngs: ``nnx.Rngs`` used for initialisation.

    Call: ``model(x, t, labels=None, *, dropout_key=None)`` with ``x (B, dim)`` float,
    ``t`` integer ``(B,)`` or scalar -> ``(B, dim)``. The model is unconditional
    (``labels`` must be ``None``) and has no dropout (``dropout_key`` is accepted and
    ignored).
    """

    def __init__(self, dim: int, num_steps: int, hidden: int = 128, *, rngs: nnx.Rngs):
        if dim < 1 or num_steps < 1 or hidden < 1:
            raise ValueError(
                f"dim, num_steps and hidden must be positive integers; got dim={dim}, "
                f"num_steps={num_steps}, hidden={hidden}."
            )
        self.dim = dim
        self.num_steps = num_steps
        self.lin1 = ConditionalLinear(dim, hidden, num_steps, rngs=rngs)
        self.lin2 = ConditionalLinear(hidden, hidden, num_steps, rngs=rngs)
        self.lin3 = ConditionalLinear(hidden, hidden, num_steps, rngs=rngs)
        self.lin4 = torch_linear(hidden, dim, rngs=rngs)

    def check_inputs(self, x, t, labels):
        check_points(x, self.dim, "ConditionalMLP")
        t = check_timesteps(t, x.shape[0], num_steps=self.num_steps, integer=True)
        return t, check_labels(labels, x.shape[0], None)

    def predict(
        self, x: jax.Array, t: jax.Array, labels: jax.Array | None, dropout_key: jax.Array | None
    ) -> jax.Array:
        del labels, dropout_key  # unconditional, no dropout layers
        h = jax.nn.softplus(self.lin1(x, t))
        h = jax.nn.softplus(self.lin2(h, t))
        h = jax.nn.softplus(self.lin3(h, t))
        return self.lin4(h)


class SinusoidalMLP(Denoiser):
    """MLP denoiser for points with a sinusoidal time embedding injected into every layer.

    ``temb = Linear(hidden) o SiLU o Linear(hidden) (sinusoid(t, time_dim))`` (plus a
    learned label embedding when ``num_classes`` is set); then, for each of ``depth``
    hidden layers, ``h = SiLU(Linear(h) + Linear_i(SiLU(temb)))`` (with dropout when a
    ``dropout_key`` is given), and finally ``Linear(hidden, dim)``. Flax default
    (LeCun-normal) initialisation.

    Parameters (default ``hidden=128, depth=3, time_dim=64``):
    ``(dim + 1) * hidden + (depth - 1) * (hidden + 1) * hidden + depth * (hidden + 1) *
    hidden + (time_dim + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * dim``;
    ``SinusoidalMLP(dim=2)``: 108,034 (``dim=1``: 107,777; ``dim=3``: 108,291).
    With ``num_classes=K`` add ``(K + 1) * hidden``.

    Args:
      dim: data dimension D.
      hidden: hidden width.
      depth: number of hidden layers (>= 1), each receiving the time embedding.
      time_dim: width of the sinusoidal embedding.
      num_classes: optional number of classes; label ``num_classes`` is the null label
        (classifier-free guidance) and ``labels=None`` means the null label.
      dropout: dropout rate on hidden activations, active only with ``dropout_key``.
      rngs: ``nnx.Rngs`` used for initialisation.

    Call: ``model(x, t, labels=None, *, dropout_key=None)`` with ``x (B, dim)`` float,
    ``t (B,)`` or scalar (integer index or float) -> ``(B, dim)``.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        depth: int = 3,
        time_dim: int = 64,
        num_classes: int | None = None,
        dropout: float = 0.0,
        *,
        rngs: nnx.Rngs,
    ):
        if min(dim, hidden, depth, time_dim) < 1:
            raise ValueError(
                f"dim, hidden, depth and time_dim must be positive integers; got dim={dim}, "
                f"hidden={hidden}, depth={depth}, time_dim={time_dim}."
            )
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be None or >= 1; got {num_classes}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1); got {dropout}.")
        self.dim = dim
        self.time_dim = time_dim
        self.num_classes = num_classes
        self.dropout = dropout
        self.time_in = nnx.Linear(time_dim, hidden, rngs=rngs)
        self.time_out = nnx.Linear(hidden, hidden, rngs=rngs)
        self.label_embed = (
            nnx.Embed(num_classes + 1, hidden, rngs=rngs) if num_classes is not None else None
        )
        widths = [dim] + [hidden] * depth
        self.layers = nnx.List(
            [nnx.Linear(widths[i], widths[i + 1], rngs=rngs) for i in range(depth)]
        )
        self.time_proj = nnx.List([nnx.Linear(hidden, hidden, rngs=rngs) for _ in range(depth)])
        self.out = nnx.Linear(hidden, dim, rngs=rngs)

    def check_inputs(self, x, t, labels):
        check_points(x, self.dim, "SinusoidalMLP")
        t = check_timesteps(t, x.shape[0])
        return t, check_labels(labels, x.shape[0], self.num_classes)

    def predict(
        self, x: jax.Array, t: jax.Array, labels: jax.Array | None, dropout_key: jax.Array | None
    ) -> jax.Array:
        temb = self.time_out(nnx.silu(self.time_in(timestep_embedding(t, self.time_dim))))
        if self.label_embed is not None:
            temb = temb + embed_lookup(self.label_embed, labels)
        temb = nnx.silu(temb)
        h = x
        for i, (layer, proj) in enumerate(zip(self.layers, self.time_proj, strict=True)):
            h = nnx.silu(layer(h) + proj(temb))
            key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
            h = dropout(h, self.dropout, key)
        return self.out(h)
