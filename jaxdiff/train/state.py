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
    """``lr(step)``: linear warm-up ``learning_rate * (step + 1) / warmup_steps`` for
    ``step < warmup_steps``, then constant, or a cosine from ``learning_rate`` down to
    ``final_lr_fraction * learning_rate`` at ``total_steps`` (SGDR, Loshchilov & Hutter 2017,
    eq. 5, one cycle; held at the final value afterwards). Returns float32 scalars.

    ``optax.join_schedules`` of ``optax.linear_schedule`` (which reaches the peak at step
    ``warmup_steps - 1``) and ``optax.cosine_decay_schedule`` / ``optax.constant_schedule``
    (which start from the peak at step ``warmup_steps``).
    """
    peak = jnp.float32(config.learning_rate)  # so the cosine returns float32, not weakly typed
    warmup = int(config.warmup_steps)
    if config.lr_schedule == "cosine":
        after = optax.cosine_decay_schedule(
            peak, int(config.total_steps) - warmup, alpha=config.final_lr_fraction
        )
    else:
        after = optax.constant_schedule(peak)
    if warmup == 0:
        return after
    lr = float(config.learning_rate)
    ramp = optax.linear_schedule(lr / warmup, lr, warmup - 1)
    return optax.join_schedules([ramp, after], [warmup])


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
    """``decay * ema + (1 - decay) * params``, leaf by leaf (shapes of ``params``).

    ``optax.incremental_update`` (Polyak averaging), whose step size is the weight of the new
    ``params``: ``1 - decay``.
    """
    return optax.incremental_update(params, ema, 1.0 - decay)


def eval_params(state: TrainState, *, ema: bool = True) -> PyTree:
    """The parameters to sample with: the EMA tree (default) or the raw parameters."""
    return state.ema_params if ema else state.params
