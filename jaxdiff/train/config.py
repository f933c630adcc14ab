"""Training configuration: :class:`TrainConfig` (validated on construction) and the per-backend
defaults of the compiled loop (steps per call K, ``lax.scan`` unroll, on-device batch draw)."""

from __future__ import annotations

import dataclasses
import math

import jax

from jaxdiff.losses import WEIGHTINGS
from jaxdiff.parameterization import PREDICTIONS

__all__ = [
    "BATCH_DRAWS",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "TrainConfig",
    "default_scan_options",
    "scan_options",
]

OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")
BATCH_DRAWS = ("cond", "table")

# K (steps per compiled call), lax.scan's unroll and how on-device batches are drawn, per
# backend; see default_scan_options.
_SCAN_DEFAULTS: dict[str, tuple[int, bool | int, str]] = {
    "cpu": (4, True, "cond"),
    "gpu": (10, 1, "table"),
    "tpu": (10, 1, "table"),
}


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
