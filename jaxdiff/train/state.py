"""Training state, optimiser, learning-rate schedule and EMA: pure functions of the config.

:class:`TrainState` is the whole state as one pytree ``(step, params, opt_state, ema_params,
key)``; :func:`make_optimizer` is ``clip_by_global_norm -> adam | adamw`` driven by
:func:`make_lr_schedule`; the EMA of the parameters is updated with the decay of
:func:`ema_decay_at`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdiff.train.config import TrainConfig

__all__ = [
    "TrainState",
    "ema_decay_at",
    "ema_update",
    "eval_params",
    "init_train_state",
    "make_lr_schedule",
    "make_optimizer",
]

PyTree = Any


class TrainState(NamedTuple):
    """The whole training state, one pytree.

    Attributes:
      step: int32 scalar, the number of steps taken.
      params: the parameter pytree (e.g. the ``nnx.State`` from ``split_model``).
      opt_state: the optax state.
      ema_params: exponential moving average of ``params``, same structure; what sampling uses
        by default (:func:`eval_params`).
      key: the run's base PRNG key (raw ``uint32`` key data, constant; see the module docstring).
    """

    step: jax.Array
    params: PyTree
    opt_state: optax.OptState
    ema_params: PyTree
    key: jax.Array


def make_lr_schedule(config: TrainConfig) -> optax.Schedule:
    """``lr(step)``: linear warm-up ``min(1, (step + 1) / warmup_steps)``, then constant or a
    cosine from 1 to ``final_lr_fraction`` between ``warmup_steps`` and ``total_steps``
    (held at the final value afterwards), times ``learning_rate``. Returns float32 scalars."""
    peak = float(config.learning_rate)
    warmup = int(config.warmup_steps)
    cosine = config.lr_schedule == "cosine"
    total = int(config.total_steps) if cosine else 0
    end = float(config.final_lr_fraction)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        factor = jnp.minimum(1.0, (step + 1.0) / warmup) if warmup > 0 else jnp.float32(1.0)
        if cosine:
            progress = jnp.clip((step - warmup) / (total - warmup), 0.0, 1.0)
            factor = factor * (end + (1.0 - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))
        return peak * factor

    return schedule


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """``optax.chain(clip_by_global_norm, adam | adamw)`` with :func:`make_lr_schedule`."""
    lr = make_lr_schedule(config)
    if config.optimizer == "adamw":
        opt = optax.adamw(
            lr, b1=config.b1, b2=config.b2, eps=config.adam_eps, weight_decay=config.weight_decay
        )
    else:
        opt = optax.adam(lr, b1=config.b1, b2=config.b2, eps=config.adam_eps)
    if config.grad_clip_norm is None:
        return opt
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), opt)


def _raw_key(key: jax.Array | int) -> jax.Array:
    if isinstance(key, int | np.integer):
        return jax.random.PRNGKey(int(key))
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def init_train_state(
    params: PyTree, tx: optax.GradientTransformation, key: jax.Array | int
) -> TrainState:
    """A fresh :class:`TrainState` at step 0 with ``ema_params`` equal to ``params``.

    ``params`` and the EMA tree are copied, so the caller's arrays stay valid when the training
    step donates the state. ``key`` is a PRNG key (typed or raw) or an int seed.
    """
    params = jax.tree_util.tree_map(jnp.array, params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        ema_params=jax.tree_util.tree_map(jnp.array, params),
        key=_raw_key(key),
    )


def ema_decay_at(step, decay: float, *, warmup: bool = True) -> jax.Array:
    """The EMA decay used by the update at step ``step`` (0-based), float32 scalar.

    ``min(decay, (1 + step) / (10 + step))`` with warm-up, else ``decay``. After n updates of a
    constant p the EMA is ``prod_t d_t * ema_0 + (1 - prod_t d_t) * p`` (``d**n`` without
    warm-up).
    """
    decay = jnp.float32(decay)
    if not warmup:
        return decay
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: PyTree, params: PyTree, decay) -> PyTree:
    """``decay * ema + (1 - decay) * params``, leaf by leaf."""
    return jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def eval_params(state: TrainState, *, ema: bool = True) -> PyTree:
    """The parameters to sample with: the EMA tree (default) or the raw parameters."""
    return state.ema_params if ema else state.params
