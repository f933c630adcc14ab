"""The ``--objective`` and ``--sigma-data`` flags of the training experiments (mnist, digits,
toy2d): their checks, the ``sigma_data`` they resolve to, and the objective they build
(:mod:`jaxdiff.objectives`; docs/objectives.md).

Training uses the objective's loss through the Trainer's ``loss=`` hook (for ``ddpm`` that is
today's step to the bit). The experiments' sampling, grids and figures are written for the
integer steps of a schedule, so they do not sample a continuous-time objective (``edm``,
``flow``, ``flow-lognormal``) yet (``--num-samples 0`` trains only); ``jaxdiff.samplers.sample``
does, with the objective in place of the schedule.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from jaxdiff.objectives import Objective, make_objective, train_loss
from jaxdiff.schedules import Schedule
from jaxdiff.train import TrainConfig

__all__ = [
    "ABSENT",
    "OBJECTIVE_HELP",
    "SIGMA_DATA_DEFAULT",
    "SIGMA_DATA_HELP",
    "check_objective_flags",
    "data_std",
    "make_run_objective",
    "resolve_sigma_data",
    "run_loss",
]

#: What a run written before these flags was trained with (its config.json lacks them): a
#: ``--resume`` of such a run with another objective is refused like any other change.
ABSENT = {"objective": "ddpm", "sigma_data": None}


#: ``--objective``'s help: ``objective: ObjectiveName = field("ddpm", OBJECTIVE_HELP)``.
OBJECTIVE_HELP = (
    "training objective (docs/objectives.md): ddpm (integer steps of the schedule), edm (Karras "
    "et al. 2022), flow or flow-lognormal (flow matching, t uniform or logit-normal); the "
    "continuous ones train only (--num-samples 0) in this version"
)
#: ``--sigma-data``'s help and default text (``field(None, SIGMA_DATA_HELP, default_text=...)``).
SIGMA_DATA_HELP = "EDM's sigma_data (--objective edm)"
SIGMA_DATA_DEFAULT = "the standard deviation of the training data, measured"


def check_objective_flags(config: Any) -> None:
    """``ValueError`` for ``--sigma-data`` without ``--objective edm`` or not > 0, for a flow
    sampler with the ddpm objective, and for a continuous-time objective asked to sample
    (``--num-samples`` other than 0)."""
    if config.sigma_data is not None:
        if config.objective != "edm":
            raise ValueError("--sigma-data applies to --objective edm only; drop it")
        if not (math.isfinite(config.sigma_data) and config.sigma_data > 0):
            raise ValueError(f"--sigma-data must be > 0, got {config.sigma_data}")
    sampler = getattr(config, "sampler", None)
    if config.objective == "ddpm" and sampler in ("flow-euler", "flow-heun"):
        raise ValueError(
            f"--sampler {sampler} steps in a flow's own time and needs a continuous path; the "
            "ddpm objective samples on its schedule's integer steps: choose another sampler"
        )
    if config.objective != "ddpm" and config.num_samples != 0:
        raise ValueError(
            f"--objective {config.objective} cannot be sampled yet by this experiment (its "
            "sampling is written for the ddpm objective's integer steps); pass --num-samples 0 "
            "to train only (checkpoints, loss curves, report), then sample the checkpoint with "
            "jaxdiff.samplers.sample and the objective"
        )


def resolve_sigma_data(config: Any, x: np.ndarray) -> Any:
    """``config`` with ``sigma_data`` set to the standard deviation of the training data ``x``
    (4 decimals) when ``--objective edm`` left it out; unchanged otherwise."""
    if config.objective != "edm" or config.sigma_data is not None:
        return config
    return dataclasses.replace(config, sigma_data=round(data_std(x), 4))


def data_std(x: np.ndarray, chunk: int = 4096) -> float:
    """The standard deviation of every value of ``x`` ``(N, ...)``, accumulated in float64 over
    chunks of ``chunk`` examples (no float64 copy of a whole data set)."""
    x = np.asarray(x)
    n, s1, s2 = x.size, 0.0, 0.0
    for i in range(0, len(x), chunk):
        part = x[i : i + chunk].astype(np.float64)
        s1 += float(part.sum())
        s2 += float(np.square(part).sum())
    mean = s1 / n
    return math.sqrt(max(s2 / n - mean * mean, 0.0))


def make_run_objective(config: Any, schedule: Schedule, train: TrainConfig) -> Objective:
    """The objective of a resolved config: ``ddpm`` with the run's schedule and the training
    config's ``prediction``, ``loss_weighting``, ``snr_gamma`` and ``antithetic``; ``edm`` with
    the resolved ``sigma_data``."""
    return make_objective(
        config.objective,
        schedule,
        prediction=train.prediction,
        weighting=train.loss_weighting,
        snr_gamma=train.snr_gamma,
        antithetic=train.antithetic,
        sigma_data=0.5 if config.sigma_data is None else config.sigma_data,
    )


def run_loss(config: Any, schedule: Schedule, train: TrainConfig, apply):
    """The Trainer's ``loss=`` for a resolved config: :func:`make_run_objective`'s loss with
    the model ``apply`` (:func:`jaxdiff.objectives.train_loss`)."""
    return train_loss(make_run_objective(config, schedule, train), apply)
