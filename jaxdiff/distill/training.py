"""Students on the training engine: the optimiser settings under which a frozen teacher
sub-tree stays exact, and the parameter tree ``{"student": ..., "teacher": ...}``.

:class:`jaxdiff.train.Trainer` takes ``loss(params, x0, labels, key, dropout_key)`` of the
parameters it trains. The teacher's parameters ride along in that tree so that they are traced
arguments of the compiled step (one program for every round of progressive distillation, no
megabytes of constants in it): the losses stop their gradient, which is then exactly zero, and
Adam's update of a zero gradient is exactly zero (``m = v = 0``, ``0 / (0 + eps) = 0``); AdamW's
weight decay would not leave them alone, so it is refused. The cost is memory: the optimiser's
moments and the EMA tree hold a copy of the teacher too.
"""

from __future__ import annotations

from typing import Any

from jaxdiff.train import TrainConfig

__all__ = ["check_frozen_teacher", "student_params", "student_train_config", "with_teacher"]


def check_frozen_teacher(config: TrainConfig) -> TrainConfig:
    """``config`` if a zero gradient leaves parameters unchanged under its optimiser, else
    ``ValueError`` (weight decay moves parameters whatever their gradient)."""
    if config.weight_decay != 0:
        raise ValueError(
            f"weight_decay={config.weight_decay} would decay the frozen teacher parameters; "
            "train a student with weight_decay=0 (optimizer 'adam')"
        )
    return config


def student_train_config(
    teacher: TrainConfig,
    *,
    learning_rate: float,
    ema_decay: float,
    steps_per_call: int | None = None,
) -> TrainConfig:
    """A student's :class:`TrainConfig`: Adam at ``learning_rate`` with gradient clipping at 1,
    ``ema_decay`` (no warm-up beyond the engine's), and the teacher's labels (``num_classes``
    and ``label_dropout``, so a guided teacher's student also learns the null label)."""
    return check_frozen_teacher(
        TrainConfig(
            learning_rate=learning_rate,
            grad_clip_norm=1.0,
            ema_decay=ema_decay,
            num_classes=teacher.num_classes,
            label_dropout=teacher.label_dropout,
            steps_per_call=steps_per_call,
        )
    )


def with_teacher(student: Any, teacher: Any) -> dict:
    """The trained tree ``{"student": student, "teacher": teacher}`` of the distillation losses."""
    return {"student": student, "teacher": teacher}


def student_params(tree: dict) -> Any:
    """The student's part of a tree of :func:`with_teacher` (e.g. ``eval_params(state)``)."""
    return tree["student"]
