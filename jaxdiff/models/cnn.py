"""The tutorials' small CNN denoiser for images."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdiff.models.apply import check_images, check_labels, check_timesteps, timestep_embedding
from jaxdiff.models.denoiser import Denoiser

__all__ = ["SmallCNN"]

_ACTIVATIONS = {"relu": jax.nn.relu, "silu": jax.nn.silu}


class SmallCNN(Denoiser):
    """Three 3x3 convolutions with a time embedding added as a per-channel bias.

    ``h = act(conv1(x) + temb)``; ``h = act(conv2(h) + temb)``; ``y = conv3(h)``, with
    ``conv1: C -> hidden``, ``conv2: hidden -> hidden``, ``conv3: hidden -> C`` (SAME
    padding, so any H x W works) and ``act`` SiLU (default) or ReLU
    (``activation="relu"``).

    The time embedding ``temb (B, hidden)`` is a 2-layer MLP
    ``Linear(hidden) o act o Linear(hidden)`` applied to a time feature:

    * ``num_steps=None`` (default): the sinusoidal embedding of ``t`` of width
      ``hidden`` (:func:`jaxdiff.models.apply.timestep_embedding`);
    * ``num_steps=T``: the tutorial's scalar feature ``t / T`` (one input feature), and
      concrete ``t`` outside ``[0, T)`` raises.

    The same ``temb`` is broadcast over H x W and added after ``conv1`` and ``conv2``.
    Flax default initialisation (LeCun-normal weights, zero biases).

    Parameters: ``9*C*hidden + hidden + 9*hidden**2 + hidden + 9*hidden*C + C`` for the
    convs plus ``(f + 1) * hidden + (hidden + 1) * hidden`` for the time MLP, with
    ``f = hidden`` (sinusoidal) or ``f = 1`` (scalar). Default ``SmallCNN()`` (C=1,
    hidden=64, sinusoidal): 46,465; ``SmallCNN(num_steps=1000)``: 42,433;
    ``SmallCNN(channels=3)``: 48,771. The activation does not change the count.

    Args:
      channels: image channels C.
      hidden: hidden channels (and time-embedding width).
      num_steps: ``None`` for the sinusoidal time feature, or T for the scalar ``t / T``.
      activation: ``"silu"`` or ``"relu"``, used after conv1, conv2 and in the time MLP.
      rngs: ``nnx.Rngs`` used for initialisation.

    Call: ``model(x, t, labels=None, *, dropout_key=None)`` with ``x (B, H, W, C)``
    float, ``t (B,)`` or scalar -> ``(B, H, W, C)``. Unconditional (``labels`` must be
    ``None``); no dropout layers (``dropout_key`` is accepted and ignored).
    """

    def __init__(
        self,
        channels: int = 1,
        hidden: int = 64,
        num_steps: int | None = None,
        activation: str = "silu",
        *,
        rngs: nnx.Rngs,
    ):
        if channels < 1 or hidden < 1:
            raise ValueError(
                f"channels and hidden must be positive integers; got channels={channels}, "
                f"hidden={hidden}."
            )
        if num_steps is not None and num_steps < 1:
            raise ValueError(f"num_steps must be None or a positive integer; got {num_steps}.")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}; got {activation!r}."
            )
        self.activation = activation
        self.channels = channels
        self.hidden = hidden
        self.num_steps = num_steps
        feature_dim = hidden if num_steps is None else 1
        self.time_in = nnx.Linear(feature_dim, hidden, rngs=rngs)
        self.time_out = nnx.Linear(hidden, hidden, rngs=rngs)
        self.conv1 = nnx.Conv(channels, hidden, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(hidden, hidden, (3, 3), padding="SAME", rngs=rngs)
        self.conv3 = nnx.Conv(hidden, channels, (3, 3), padding="SAME", rngs=rngs)

    def check_inputs(self, x, t, labels):
        check_images(x, self.channels, "SmallCNN")
        t = check_timesteps(t, x.shape[0], num_steps=self.num_steps)
        return t, check_labels(labels, x.shape[0], None)

    def predict(
        self, x: jax.Array, t: jax.Array, labels: jax.Array | None, dropout_key: jax.Array | None
    ) -> jax.Array:
        del labels, dropout_key  # unconditional, no dropout layers
        if self.num_steps is None:
            feature = timestep_embedding(t, self.hidden)
        else:
            feature = (t.astype(jnp.float32) / self.num_steps)[:, None]
        act = _ACTIVATIONS[self.activation]
        temb = self.time_out(act(self.time_in(feature)))[:, None, None, :]
        h = act(self.conv1(x) + temb)
        h = act(self.conv2(h) + temb)
        return self.conv3(h)
