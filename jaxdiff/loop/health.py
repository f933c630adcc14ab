"""When training counts as diverged: a pure check of one call's metrics, run on the host.

A step is unhealthy when its loss or gradient norm is NaN or infinite, or when its loss exceeds
``factor`` times the running mean of the losses before it (an exponential moving mean with
``decay``, from the first step on; the ratio applies once ``warmup`` steps are in it). The loop
stops at the first unhealthy step, before any state that includes it is saved. A diffusion
loss at initialisation is about 1 and falls from there; a jump by a factor of 100 is no noise
of a batch (a learning rate of 1 on toy2d: 1.15 at step 1, 5e5 at step 2).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

__all__ = ["DivergenceError", "DivergenceRule", "Health", "check_health"]


@dataclasses.dataclass(frozen=True)
class DivergenceRule:
    """``factor``: a loss above ``factor`` x the running mean is divergence; ``decay``: the
    running mean's decay per step (0.99: about the last 100 steps); ``warmup``: steps in the
    mean before the ratio applies (non-finite values count from the first step)."""

    factor: float = 100.0
    decay: float = 0.99
    warmup: int = 1


class Health(NamedTuple):
    """The host-side running state of the check: ``mean`` of the losses so far (NaN before the
    first step) and ``count`` of the steps seen."""

    mean: float = math.nan
    count: int = 0


def check_health(
    rule: DivergenceRule, health: Health, loss: np.ndarray, grad_norm: np.ndarray | None
) -> tuple[Health, int | None, str]:
    """Check one call's per-step ``loss`` (n,) and ``grad_norm`` (n,) in order.

    Returns ``(health after the healthy steps, index of the first unhealthy step or None,
    why it is unhealthy)``.
    """
    mean, count = health
    for i, value in enumerate(loss):
        value = float(value)
        if not math.isfinite(value):
            return Health(mean, count), i, f"the loss is {value}"
        if grad_norm is not None and not math.isfinite(float(grad_norm[i])):
            return Health(mean, count), i, f"the gradient norm is {float(grad_norm[i])}"
        if count >= rule.warmup and value > rule.factor * mean:
            return (
                Health(mean, count),
                i,
                f"the loss {value:.4g} is over {rule.factor:g} times its running mean {mean:.4g}",
            )
        mean = value if count == 0 else rule.decay * mean + (1 - rule.decay) * value
        count += 1
    return Health(mean, count), None, ""


class DivergenceError(FloatingPointError):
    """Training diverged at ``step`` (1-based); nothing that includes it was saved, and
    ``last_checkpoint`` (or ``None``) is the newest step kept."""

    def __init__(self, step: int, reason: str, last_checkpoint: int | None, directory):
        self.step = step
        self.last_checkpoint = last_checkpoint
        if last_checkpoint is not None:
            where = (
                f"the last healthy checkpoint (step {last_checkpoint}, in {directory}) is kept; "
                "lower --learning-rate (or clip gradients harder) and rerun with --resume"
            )
        else:
            where = "no checkpoint was written before it; lower the learning rate and start again"
        super().__init__(f"training diverged at step {step}: {reason}; stopped; {where}")
