"""Training state and the pure, compiled, data-parallel training step.

Pieces, each a pure function of arrays (the :class:`Trainer` only wires them together):

- :class:`TrainConfig`: optimiser, learning-rate schedule, EMA, loss and scan options.
- :class:`TrainState`: one pytree ``(step, params, opt_state, ema_params, key)``.
- :func:`make_optimizer`: ``clip_by_global_norm -> adam | adamw`` with :func:`make_lr_schedule`
  (linear warm-up, then constant or cosine decay).
- :func:`make_train_step`: ``train_step(state, batch) -> (state, metrics)``; the loss is
  :func:`jaxdiff.losses.denoising_loss` (DDPM eq. 14 with the eps, x0 or v target), labels are
  dropped to the null class with probability ``label_dropout`` (classifier-free guidance), and the
  EMA tree is updated inside the step.
- :func:`make_multi_step` / :func:`make_data_multi_step`: K steps per compiled call with
  ``lax.scan``, from a stack of K host batches or from a dataset that lives on the device.
- :class:`Trainer`: ``jax.jit`` of those with ``NamedSharding`` in/out shardings over the
  ``"data"`` mesh (:mod:`jaxdiff.sharding`), donating the state, compiled with the XLA options
  of :mod:`jaxdiff.xla_options` (on CPU: XLA's own kernels instead of YNNPACK's).

Randomness: ``state.key`` never changes. Step ``n`` uses ``fold_in(fold_in(key, 0), n)`` for its
timesteps, noise, dropout and label dropout; the on-device batch of step ``n`` comes from
:func:`jaxdiff.data.batch_indices` with ``fold_in(key, 1)``. So results depend only on the step
number: K steps in one call equal K calls of one step, and a resumed run repeats exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxdiff.data import batch_index_table, permutation_cache, take_batch_cached
from jaxdiff.losses import WEIGHTINGS, denoising_loss
from jaxdiff.parameterization import PREDICTIONS
from jaxdiff.schedules import Schedule
from jaxdiff.sharding import (
    batch_sharding,
    check_batch_size,
    make_mesh,
    replicate,
    replicated_sharding,
    shard_batch,
)
from jaxdiff.xla_options import jit as _jit

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

PyTree = Any
Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
StepFn = Callable[["TrainState", Batch], tuple["TrainState", Metrics]]

OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")
BATCH_KEYS = ("x", "labels")

BATCH_DRAWS = ("cond", "table")

# K (steps per compiled call), lax.scan's unroll and how on-device batches are drawn, per
# backend; see default_scan_options.
_SCAN_DEFAULTS: dict[str, tuple[int, bool | int, str]] = {
    "cpu": (4, True, "cond"),
    "gpu": (10, 1, "table"),
    "tpu": (10, 1, "table"),
}


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything the training step needs besides the model and the schedule.

    Optimiser (:func:`make_optimizer`):
      learning_rate: peak learning rate (>= 0).
      optimizer: ``"adam"`` or ``"adamw"`` (decoupled weight decay ``weight_decay``).
      b1, b2, adam_eps: Adam moments and epsilon.
      weight_decay: AdamW decay; must be 0 for ``"adam"``.
      grad_clip_norm: clip gradients to this global L2 norm; ``None`` disables clipping.
      warmup_steps: linear warm-up ``lr * min(1, (step + 1) / warmup_steps)``; 0 for none.
      lr_schedule: after warm-up, ``"constant"`` or ``"cosine"`` decay to
        ``final_lr_fraction * learning_rate`` at ``total_steps`` (required for cosine).

    EMA (:func:`ema_decay_at`):
      ema_decay: d in [0, 1); 0.9999 suits long image runs. Without warm-up the initial
        (random) parameters keep weight ``d**n`` after n steps (0.9999**2000 = 0.82).
      ema_warmup: use ``min(d, (1 + step) / (10 + step))`` (on by default, so short runs work).

    Loss (:func:`jaxdiff.losses.denoising_loss`):
      prediction: network target ``"eps"`` (default), ``"x0"`` or ``"v"``.
      antithetic: pair timesteps t and T-1-t.
      loss_weighting: ``"simple"`` (L_simple) or ``"min_snr"`` (Min-SNR-gamma, Hang et al. 2023;
        :func:`jaxdiff.losses.loss_weight`), with ``snr_gamma`` (5 in the paper).
      num_classes: K for a class-conditional model (null label = K); ``None`` otherwise.
      label_dropout: probability of replacing a label by the null label (classifier-free
        guidance); needs ``num_classes``.

    Compiled loop (:class:`Trainer`):
      steps_per_call: K, steps per compiled call (``lax.scan``); ``None``: per-backend default.
      unroll: ``lax.scan`` unroll (``True`` = fully); ``None``: per-backend default.
      batch_draw: how :meth:`Trainer.steps_on_data` draws its batches (the same batches either
        way): ``"cond"`` re-sorts the epoch's permutation under a ``lax.cond`` only when a step
        starts a new epoch (cheapest on a CPU); ``"table"`` draws all the call's batch indices
        up front with no data-dependent control flow (:func:`jaxdiff.data.batch_index_table`;
        XLA:GPU would read a ``cond``'s predicate on the host at every step); ``None``:
        per-backend default. Set these three to force one backend's configuration on another.
    """

    learning_rate: float = 2e-4
    optimizer: str = "adam"
    b1: float = 0.9
    b2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float | None = 1.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    total_steps: int | None = None
    final_lr_fraction: float = 0.0
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    prediction: str = "eps"
    antithetic: bool = False
    loss_weighting: str = "simple"
    snr_gamma: float = 5.0
    num_classes: int | None = None
    label_dropout: float = 0.0
    steps_per_call: int | None = None
    unroll: bool | int | None = None
    batch_draw: str | None = None

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS} "
                f"(use 'adamw' with weight_decay > 0 for decoupled weight decay)."
            )
        if self.optimizer == "adam" and self.weight_decay != 0:
            raise ValueError(
                f"weight_decay={self.weight_decay} needs optimizer='adamw'; plain 'adam' has no "
                "weight decay. Set optimizer='adamw' or weight_decay=0."
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"unknown lr_schedule {self.lr_schedule!r}; choose one of {LR_SCHEDULES}."
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate >= 0):
            raise ValueError(f"learning_rate must be finite and >= 0; got {self.learning_rate}.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay}.")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError(
                f"grad_clip_norm must be > 0, or None to disable clipping; got "
                f"{self.grad_clip_norm}."
            )
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0; got {self.warmup_steps}.")
        if self.lr_schedule == "cosine" and (
            self.total_steps is None or self.total_steps <= self.warmup_steps
        ):
            raise ValueError(
                f"lr_schedule='cosine' needs total_steps > warmup_steps (the step where the decay "
                f"ends); got total_steps={self.total_steps}, warmup_steps={self.warmup_steps}."
            )
        if not 0 <= self.final_lr_fraction <= 1:
            raise ValueError(f"final_lr_fraction must lie in [0, 1]; got {self.final_lr_fraction}.")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(
                f"ema_decay must lie in [0, 1); got {self.ema_decay}. Typical values: 0.9999 for "
                "long image runs, 0.995-0.999 for runs of a few thousand steps (0 = no averaging)."
            )
        if self.prediction not in PREDICTIONS:
            raise ValueError(
                f"unknown prediction {self.prediction!r}; choose one of {tuple(PREDICTIONS)}."
            )
        if self.loss_weighting not in WEIGHTINGS:
            raise ValueError(
                f"unknown loss_weighting {self.loss_weighting!r}; choose one of {WEIGHTINGS}."
            )
        if not (math.isfinite(self.snr_gamma) and self.snr_gamma > 0):
            raise ValueError(f"snr_gamma must be finite and > 0; got {self.snr_gamma}.")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None; got {self.num_classes}.")
        if not 0 <= self.label_dropout <= 1:
            raise ValueError(f"label_dropout must lie in [0, 1]; got {self.label_dropout}.")
        if self.label_dropout > 0 and self.num_classes is None:
            raise ValueError(
                f"label_dropout={self.label_dropout} needs num_classes (the null label is "
                "num_classes); set num_classes to the number of classes of the conditional model."
            )
        if self.steps_per_call is not None and (
            isinstance(self.steps_per_call, bool) or self.steps_per_call < 1
        ):
            raise ValueError(
                f"steps_per_call (K) must be an int >= 1, or None for the backend default; got "
                f"{self.steps_per_call}."
            )
        if self.unroll is not None and not isinstance(self.unroll, bool) and self.unroll < 1:
            raise ValueError(f"unroll must be True/False or an int >= 1; got {self.unroll}.")
        if self.batch_draw is not None and self.batch_draw not in BATCH_DRAWS:
            raise ValueError(
                f"batch_draw must be one of {BATCH_DRAWS} or None (backend default); got "
                f"{self.batch_draw!r}."
            )


def default_scan_options(backend: str | None = None) -> tuple[int, bool | int, str]:
    """``(steps_per_call, unroll, batch_draw)`` defaults for ``backend`` (default
    ``jax.default_backend()``; ``"cuda"``/``"rocm"`` count as ``"gpu"``).

    Measured on a 2-core CPU (benchmarks/bench_train.py): XLA:CPU runs a *rolled* ``lax.scan``
    of a conv net many times slower than single jitted calls, while a fully unrolled scan is
    faster than single calls; so the CPU default unrolls (K=4 keeps compile time moderate).
    On GPU/TPU a rolled scan is the usual choice (compile time independent of K), with batch
    indices drawn without data-dependent control flow (see ``TrainConfig.batch_draw``).
    """
    backend = jax.default_backend() if backend is None else backend
    return _SCAN_DEFAULTS.get(backend, _SCAN_DEFAULTS["gpu"])


def scan_options(config: TrainConfig, backend: str | None = None) -> tuple[int, bool | int, str]:
    """``(steps_per_call, unroll, batch_draw)``: ``config``'s, with ``None`` fields taken from
    :func:`default_scan_options` for ``backend``."""
    k, unroll, draw = default_scan_options(backend)
    k = k if config.steps_per_call is None else int(config.steps_per_call)
    unroll = unroll if config.unroll is None else config.unroll
    draw = draw if config.batch_draw is None else config.batch_draw
    return k, unroll, draw


# --------------------------------------------------------------------------------------------------
# State, optimiser, EMA
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------------


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
) -> StepFn:
    """Build the pure ``train_step(state, batch) -> (state, metrics)``.

    Args:
      apply: ``apply(params, x, t, labels=None, *, dropout_key=None) -> prediction`` with
        ``x (B, ...)``, ``t (B,)`` int32, ``labels (B,)`` or ``None`` (see ``split_model``).
      schedule: the noise schedule.
      config: see :class:`TrainConfig`.
      tx: the optimiser; default ``make_optimizer(config)`` (must be the one that built
        ``state.opt_state``).

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
            def denoise(x_t, t):
                return apply(params, x_t, t, labels, dropout_key=dropout_key)

            loss, _ = denoising_loss(
                denoise,
                schedule,
                x0,
                loss_key,
                prediction=config.prediction,
                antithetic=config.antithetic,
                weighting=config.loss_weighting,
                snr_gamma=config.snr_gamma,
            )
            return loss

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        decay = ema_decay_at(state.step, config.ema_decay, warmup=config.ema_warmup)
        ema = ema_update(state.ema_params, params, decay)
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": lr_fn(state.step),
            "ema_decay": decay,
        }
        new_state = TrainState(state.step + 1, params, opt_state, ema, state.key)
        return new_state, metrics

    return train_step


def _check_k(k: int) -> int:
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
    k = _check_k(k)
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


# --------------------------------------------------------------------------------------------------
# Compiled, sharded driver
# --------------------------------------------------------------------------------------------------


class Trainer:
    """Compiled, data-parallel training: the pure step under ``jax.jit`` with shardings.

    The state is replicated over the mesh and donated at every call (do not reuse a state
    after passing it in); batches are sharded over ``"data"``. Three entry points share one
    pure step and give identical results for the same steps:

    - :meth:`step`: one step on one batch ``{"x": (B, ...), "labels": (B,)}``;
    - :meth:`steps`: K steps on a stack ``{"x": (K, B, ...), ...}`` (host streaming, see
      :func:`jaxdiff.sharding.prefetch_to_device`);
    - :meth:`steps_on_data`: K steps on a dataset put on the devices once with
      :meth:`put_data` (batch indices drawn on the device; no host work per step).

    Host arrays passed in are this process's slice of the global batch (the whole batch in a
    single-process run); arrays already sharded (from :meth:`put_batch` or the prefetcher)
    pass through.

    Args:
      apply, schedule, config: as for :func:`make_train_step`.
      mesh: a mesh with axis ``"data"`` (default: all devices, :func:`jaxdiff.sharding.make_mesh`).
    """

    def __init__(
        self,
        apply: Callable[..., jax.Array],
        schedule: Schedule,
        config: TrainConfig = TrainConfig(),
        *,
        mesh: Mesh | None = None,
    ):
        self.config = config
        self.mesh = make_mesh() if mesh is None else mesh
        self.tx = make_optimizer(config)
        self.train_step = make_train_step(apply, schedule, config, self.tx)
        self.platform = self.mesh.devices.flat[0].platform
        self.steps_per_call, self.unroll, self.batch_draw = scan_options(config, self.platform)
        rep = replicated_sharding(self.mesh)
        self._replicated = rep
        self._step = _jit(  # with jaxdiff.xla_options' options for the platform
            self.train_step,
            platform=self.platform,
            in_shardings=(rep, batch_sharding(self.mesh)),
            out_shardings=(rep, rep),
            donate_argnums=0,
        )
        self._steps = _jit(
            make_multi_step(self.train_step, unroll=self.unroll),
            platform=self.platform,
            in_shardings=(rep, batch_sharding(self.mesh, stacked=True)),
            out_shardings=(rep, rep),
            donate_argnums=0,
        )
        self._data_steps: dict[tuple[int, int], Callable] = {}

    @property
    def num_devices(self) -> int:
        """Devices in the mesh (over all processes)."""
        return int(self.mesh.devices.size)

    def init_state(self, params: PyTree, key: jax.Array | int) -> TrainState:
        """A fresh state (:func:`init_train_state`) replicated over the mesh."""
        return replicate(init_train_state(params, self.tx, key), self.mesh)

    def put_batch(self, batch: Batch, *, stacked: bool = False) -> Batch:
        """Shard a host batch (this process's slice) over ``"data"``; see ``shard_batch``."""
        return shard_batch(dict(batch), self.mesh, stacked=stacked)

    def put_data(self, data: Batch) -> Batch:
        """Replicate a whole dataset ``{"x": (N, ...), "labels": (N,)}`` on every device.

        Host (NumPy) arrays are checked; arrays already on the device pass as they are.

        Raises:
          TypeError: ``data`` is not a dict with an ``"x"`` entry.
          ValueError: ``x`` holds NaN or inf (a dataset with one bad value would turn every
            later step's loss into NaN), or ``labels`` is not a 1-D integer array of length N.
        """
        if not isinstance(data, Mapping) or "x" not in data:
            raise TypeError("data must be a dict with 'x' and optionally 'labels'.")
        x = data["x"]
        if not isinstance(x, jax.Array) and np.issubdtype(np.asarray(x).dtype, np.floating):
            bad = ~np.isfinite(np.asarray(x))
            if bad.any():
                first = int(np.argwhere(bad)[0][0])
                raise ValueError(
                    f"training data x contains {int(bad.sum())} non-finite value(s) (NaN or inf), "
                    f"the first in example {first}; clean or drop those examples before training."
                )
        if data.get("labels") is not None and not isinstance(data["labels"], jax.Array):
            labels = np.asarray(data["labels"])
            n = int(np.shape(x)[0])
            if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(
                    f"labels must be an integer array of shape ({n},) (one per example); got "
                    f"dtype {labels.dtype} and shape {labels.shape}."
                )
        return replicate(dict(data), self.mesh)

    def _prepare(self, batch: Batch, *, stacked: bool) -> Batch:
        if not isinstance(batch, Mapping) or "x" not in batch:
            raise TypeError("batch must be a dict with 'x' and optionally 'labels'.")
        batch = dict(batch)
        leaves = jax.tree_util.tree_leaves(batch)
        if all(isinstance(leaf, jax.Array) for leaf in leaves):
            axis = 1 if stacked else 0
            check_batch_size(int(batch["x"].shape[axis]), self.mesh)
            return batch
        return self.put_batch(batch, stacked=stacked)

    def step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        """One training step; returns the new state and scalar metrics."""
        return self._step(state, self._prepare(batch, stacked=False))

    def steps(self, state: TrainState, batches: Batch) -> tuple[TrainState, Metrics]:
        """K steps in one compiled call; ``batches`` leaves ``(K, B, ...)``, metrics ``(K,)``."""
        return self._steps(state, self._prepare(batches, stacked=True))

    def steps_on_data(
        self, state: TrainState, data: Batch, batch_size: int, k: int | None = None
    ) -> tuple[TrainState, Metrics]:
        """K steps (default ``steps_per_call``) with batches of ``batch_size`` drawn on the device
        from ``data`` (put it there once with :meth:`put_data`); metrics ``(K,)``."""
        k = _check_k(self.steps_per_call if k is None else k)
        check_batch_size(int(batch_size), self.mesh)
        if not all(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(data)):
            raise TypeError(
                "steps_on_data needs the dataset on the devices; put it there once with "
                "data = trainer.put_data({'x': x, 'labels': labels}) and pass that (host arrays "
                "would be copied to the devices at every call)."
            )
        fn = self._data_steps.get((int(batch_size), k))
        if fn is None:
            fn = _jit(
                make_data_multi_step(
                    self.train_step,
                    int(batch_size),
                    k,
                    unroll=self.unroll,
                    sharding=batch_sharding(self.mesh),
                    batch_draw=self.batch_draw,
                ),
                platform=self.platform,
                in_shardings=(self._replicated, self._replicated),
                out_shardings=(self._replicated, self._replicated),
                donate_argnums=0,
            )
            self._data_steps[(int(batch_size), k)] = fn
        return fn(state, data)
