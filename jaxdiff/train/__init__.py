"""Training state and the pure, compiled, data-parallel training step.

Pieces, each a pure function of arrays (the :class:`Trainer` only wires them together):

- :mod:`jaxdiff.train.config`: :class:`TrainConfig` (optimiser, learning-rate schedule, EMA,
  loss and scan options) and :func:`default_scan_options`.
- :mod:`jaxdiff.train.state`: :class:`TrainState`, one pytree
  ``(step, params, opt_state, ema_params, key)``; :func:`make_optimizer`
  (``clip_by_global_norm -> adam | adamw``) with :func:`make_lr_schedule` (linear warm-up, then
  constant or cosine decay); the EMA (:func:`ema_decay_at`, :func:`ema_update`).
- :mod:`jaxdiff.train.step`: :func:`make_train_step`, ``train_step(state, batch) -> (state,
  metrics)``; the loss is :func:`jaxdiff.losses.denoising_loss` (DDPM eq. 14 with the eps, x0
  or v target), labels are dropped to the null class with probability ``label_dropout``
  (classifier-free guidance), and the EMA tree is updated inside the step.
  :func:`make_multi_step` / :func:`make_data_multi_step`: K steps per compiled call with
  ``lax.scan``, from a stack of K host batches or from a dataset that lives on the device.
- :mod:`jaxdiff.train.trainer`: :class:`Trainer`, ``jax.jit`` of those with ``NamedSharding``
  in/out shardings over the ``"data"`` mesh (:mod:`jaxdiff.sharding`), donating the state,
  compiled with the XLA options of :mod:`jaxdiff.xla_options` (on CPU: XLA's own kernels
  instead of YNNPACK's).

Randomness: ``state.key`` never changes. Step ``n`` uses ``fold_in(fold_in(key, 0), n)`` for its
timesteps, noise, dropout and label dropout; the on-device batch of step ``n`` comes from
:func:`jaxdiff.data.batch_indices` with ``fold_in(key, 1)``. So results depend only on the step
number: K steps in one call equal K calls of one step, and a resumed run repeats exactly.
"""

from jaxdiff.train.config import (
    LR_SCHEDULES,
    OPTIMIZERS,
    TrainConfig,
    default_scan_options,
)
from jaxdiff.train.state import (
    TrainState,
    ema_decay_at,
    ema_update,
    eval_params,
    init_train_state,
    make_lr_schedule,
    make_optimizer,
)
from jaxdiff.train.step import (
    drop_labels,
    make_data_multi_step,
    make_multi_step,
    make_train_step,
)
from jaxdiff.train.trainer import Trainer

__all__ = [
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "default_scan_options",
    "drop_labels",
    "ema_decay_at",
    "ema_update",
    "eval_params",
    "init_train_state",
    "make_data_multi_step",
    "make_lr_schedule",
    "make_multi_step",
    "make_optimizer",
    "make_train_step",
]
