"""The pure training step and its K-step scans.

- :func:`make_train_step`: ``train_step(state, batch) -> (state, metrics)``; the loss is
  :func:`jaxdiff.losses.denoising_loss` (DDPM eq. 14 with the eps, x0 or v target), labels are
  dropped to the null class with probability ``label_dropout`` (:func:`drop_labels`,
  classifier-free guidance), and the EMA tree is updated inside the step.
- :func:`make_multi_step` / :func:`make_data_multi_step`: K steps per compiled call with
  ``lax.scan``, from a stack of K host batches or from a dataset that lives on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdiff.data import batch_index_table, permutation_cache, take_batch_cached
from jaxdiff.losses import denoising_loss
from jaxdiff.schedules import Schedule
from jaxdiff.train.config import BATCH_DRAWS, TrainConfig
from jaxdiff.train.state import (
    TrainState,
    ema_decay_at,
    ema_update,
    make_lr_schedule,
    make_optimizer,
)

__all__ = [
    "Batch",
    "LossFn",
    "Metrics",
    "StepFn",
    "check_k",
    "drop_labels",
    "make_data_multi_step",
    "make_multi_step",
    "make_train_step",
]

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch], tuple[TrainState, Metrics]]
LossFn = Callable[..., jax.Array]
"""``loss(params, x0, labels, key, dropout_key) -> scalar``: ``x0 (B, ...)``, ``labels (B,)``
or None (after label dropout), ``key`` for the noise levels and noise, ``dropout_key`` for the
network's dropout."""

BATCH_KEYS = ("x", "labels")


def drop_labels(key: jax.Array, labels: jax.Array, p: float, null_label: int) -> jax.Array:
    """Replace each label by ``null_label`` with probability ``p`` (classifier-free guidance).

    Args:
      key: PRNG key; labels: int ``(B,)``; p: drop probability; null_label: ``num_classes``.

    Returns:
      int32 ``(B,)``.
    """
    labels = jnp.asarray(labels, jnp.int32)
    drop = jax.random.bernoulli(key, p, labels.shape)
    return jnp.where(drop, jnp.int32(null_label), labels)


def _stream_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(training key, data key) derived from the state's base key."""
    return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def _unpack(batch: Batch, config: TrainConfig) -> tuple[jax.Array, jax.Array | None]:
    if not isinstance(batch, Mapping) or "x" not in batch:
        got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise TypeError(
            f"batch must be a dict with 'x' (B, ...) and optionally 'labels' (B,); got {got}."
        )
    extra = sorted(set(batch) - set(BATCH_KEYS))
    if extra:
        raise ValueError(f"batch has unknown keys {extra}; expected {list(BATCH_KEYS)}.")
    x, labels = batch["x"], batch.get("labels")
    if labels is not None and jnp.shape(labels) != jnp.shape(x)[:1]:
        raise ValueError(
            f"batch['labels'] must have shape (B,) = ({jnp.shape(x)[0]},) matching batch['x'] "
            f"of shape {jnp.shape(x)}; got {jnp.shape(labels)}."
        )
    if config.label_dropout > 0 and labels is None:
        raise ValueError(
            f"label_dropout={config.label_dropout} but the batch has no 'labels'; pass "
            "batch={'x': x, 'labels': labels} or set label_dropout=0."
        )
    return x, labels


def make_train_step(
    apply: Callable[..., jax.Array],
    schedule: Schedule,
    config: TrainConfig = TrainConfig(),
    tx: optax.GradientTransformation | None = None,
    *,
    loss: LossFn | None = None,
) -> StepFn:
    """Build the pure ``train_step(state, batch) -> (state, metrics)``.

    Args:
      apply: ``apply(params, x, t, labels=None, *, dropout_key=None) -> prediction`` with
        ``x (B, ...)``, ``t (B,)`` int32, ``labels (B,)`` or ``None`` (see ``split_model``).
      schedule: the noise schedule.
      config: see :class:`TrainConfig`.
      tx: the optimiser; default ``make_optimizer(config)`` (must be the one that built
        ``state.opt_state``).
      loss: another objective, ``loss(params, x0, labels, key, dropout_key) -> scalar`` (see
        :data:`LossFn`); None: DDPM eq. 14 with ``apply``, ``schedule`` and the config's
        ``prediction``, ``antithetic``, ``loss_weighting`` and ``snr_gamma``.

    The returned step takes ``batch = {"x": (B, ...) float, "labels": (B,) int (optional)}``
    and returns the next state and ``metrics`` of float32 scalars: ``loss`` (the batch mean of
    DDPM eq. 14), ``grad_norm`` (global norm before clipping), ``learning_rate`` and
    ``ema_decay`` used by this step. Not jitted; wrap it (or use :class:`Trainer`).
    """
    tx = make_optimizer(config) if tx is None else tx
    lr_fn = make_lr_schedule(config)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        x0, labels = _unpack(batch, config)
        train_key, _ = _stream_keys(state.key)
        loss_key, dropout_key, label_key = jax.random.split(
            jax.random.fold_in(train_key, state.step), 3
        )
        if labels is not None and config.label_dropout > 0:
            labels = drop_labels(label_key, labels, config.label_dropout, config.num_classes)

        def loss_fn(params):
            if loss is not None:
                return loss(params, x0, labels, loss_key, dropout_key)

            def denoise(x_t, t):
                return apply(params, x_t, t, labels, dropout_key=dropout_key)

            value, _ = denoising_loss(
                denoise,
                schedule,
                x0,
                loss_key,
                prediction=config.prediction,
                antithetic=config.antithetic,
                weighting=config.loss_weighting,
                snr_gamma=config.snr_gamma,
            )
            return value

        value, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        decay = ema_decay_at(state.step, config.ema_decay, warmup=config.ema_warmup)
        ema = ema_update(state.ema_params, params, decay)
        metrics = {
            "loss": value,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": lr_fn(state.step),
            "ema_decay": decay,
        }
        new_state = TrainState(state.step + 1, params, opt_state, ema, state.key)
        return new_state, metrics

    return train_step


def check_k(k: int) -> int:
    """``k``, the steps per compiled call, as an int; ``ValueError`` unless an int >= 1."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"steps per call K must be an int >= 1; got {k!r}.")
    return int(k)


def make_multi_step(
    train_step: StepFn, *, unroll: bool | int = 1
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """K steps in one ``lax.scan`` over a stack of K batches.

    Returns ``multi_step(state, batches) -> (state, metrics)`` where every leaf of ``batches``
    has a leading K axis (``{"x": (K, B, ...), "labels": (K, B)}``) and each metric is ``(K,)``.
    ``unroll`` is passed to ``lax.scan`` (``True`` unrolls fully; see
    :func:`default_scan_options`).
    """

    def multi_step(state, batches):
        return jax.lax.scan(train_step, state, batches, unroll=unroll)

    return multi_step


def make_data_multi_step(
    train_step: StepFn,
    batch_size: int,
    k: int,
    *,
    unroll: bool | int = 1,
    sharding: jax.sharding.Sharding | None = None,
    batch_draw: str = "cond",
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """K steps in one ``lax.scan``, each drawing its batch from a dataset held on the device.

    Returns ``data_multi_step(state, data) -> (state, metrics)`` with
    ``data = {"x": (N, ...), "labels": (N,)}`` (pass it as an argument, never close over it).
    Step n takes ``jaxdiff.data.take_batch(data, fold_in(state.key, 1), n, batch_size)``: an
    epoch-wise permutation drawn inside the compiled function, remainder dropped. ``sharding``
    (e.g. ``batch_sharding(mesh)``) constrains the drawn batch so the step runs data-parallel.
    ``batch_draw`` picks how the indices are drawn (``TrainConfig.batch_draw``: ``"cond"`` or
    ``"table"``, bitwise the same batches). Metrics are ``(K,)``.
    """
    k = check_k(k)
    if batch_draw not in BATCH_DRAWS:
        raise ValueError(f"batch_draw must be one of {BATCH_DRAWS}; got {batch_draw!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ValueError(f"batch_size must be a Python int; got {batch_size!r}.")

    def data_multi_step(state, data):
        data = dict(data)
        _, data_key = _stream_keys(state.key)
        n = int(jax.tree_util.tree_leaves(data)[0].shape[0])

        def run(state, batch):
            if sharding is not None:
                batch = jax.lax.with_sharding_constraint(batch, sharding)
            return train_step(state, batch)

        if batch_draw == "table":  # every index up front; a scan with no control flow
            table = batch_index_table(data_key, state.step, n, int(batch_size), k)

            def table_body(state, idx):
                return run(state, jax.tree_util.tree_map(lambda a: jnp.take(a, idx, 0), data))

            return jax.lax.scan(table_body, state, table, unroll=unroll)

        # The epoch's permutation is sorted once per call and again only when a step crosses
        # into a new epoch: the same batches as take_batch, without a sort per step.
        cache = permutation_cache(data_key, state.step, n, int(batch_size))

        def body(carry, _):
            state, cache = carry
            batch, cache = take_batch_cached(data, data_key, state.step, int(batch_size), cache)
            state, metrics = run(state, batch)
            return (state, cache), metrics

        (state, _), metrics = jax.lax.scan(body, (state, cache), None, length=k, unroll=unroll)
        return state, metrics

    return data_multi_step
