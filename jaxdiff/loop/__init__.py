"""The training loop (:func:`fit`) and what stops it: divergence, SIGINT/SIGTERM, lost peers."""

from jaxdiff.loop.fit import STALL_TIMEOUT, Hook, fit, steps_per_second
from jaxdiff.loop.health import DivergenceError, DivergenceRule
from jaxdiff.loop.stop import TrainingInterrupted

__all__ = [
    "STALL_TIMEOUT",
    "DivergenceError",
    "DivergenceRule",
    "Hook",
    "TrainingInterrupted",
    "fit",
    "steps_per_second",
]
