"""Toy point clouds (the 2-D tutorial recipe): conditional-linear MLP, DDPM, scatter plots, GIF.

Run::

    python -m experiments.toy2d                                   # moons, writes runs/toy2d/
    python -m experiments.toy2d --tutorial-schedule --out runs/toy2d-tutorial
    python -m experiments.toy2d --dataset swiss_roll_3d --out runs/roll3d
    python -m experiments.toy2d --help                            # every option, with defaults

The recipe of the classic "diffusion models on a 2-D swiss roll" tutorial: 10^4 points,
the conditional-linear MLP (:class:`jaxdiff.models.ConditionalMLP`, 128 units), Adam 1e-3, batch
128, gradient clipping at 1, EMA 0.9, antithetic timesteps, a sigmoid schedule of 100 steps,
DDPM ancestral sampling with variance beta_t, 1000 epochs (78,000 steps). On this project's
shared 2-core CPU one training step of this MLP takes 1.6-3.3 ms, depending on the other load,
however the loop is compiled (the softplus and 128x128 matmuls dominate), so the default run
takes 2.5 minutes on the idle machine and up to 5.5 minutes under load (measured; 627 and 304
steps/s). ``--epochs 300`` takes 1-1.5 minutes but its samples are visibly
blurrier (the swiss roll's arms merge), although the MMD and sliced Wasserstein numbers barely
move: they are too coarse to see it.

One flaw is taught rather than copied: the tutorial's schedule (sigmoid 1e-5..5e-3) keeps
``alphas_cumprod[-1] = 0.778`` of the signal at its last step, while sampling starts from
N(0, I); even a perfect network then samples the wrong distribution. The default ends the
schedule at ``beta_end = 0.1`` (``alphas_cumprod[-1]`` about 0.006); ``--tutorial-schedule``
reproduces the original exactly, and report.md shows both.

Outputs in ``--out`` (every experiment's contract): config.json, metrics.jsonl (one record per
training step), metrics.json (final numbers, point metrics against fresh data), samples.npy
(float32 ``(N, D)`` in data coordinates), PNG figures, forward_reverse.gif, checkpoints/ and
report.md.
The package, one job a module: ``config`` (the flags, their checks, the resolved schedule and
training settings), ``data`` (host batches), ``sampling`` (the final samples and the states
the figures show), ``figures``, ``terminal`` (the schedules' last steps against the prior),
``report`` (report.md) and ``main`` (the run, in that order).
"""

from experiments.toy2d.config import (
    DEFAULT_BETA_END,
    DEFAULT_EPOCHS,
    PROG,
    RESUMABLE,
    SCATTER_FRAMES,
    TUTORIAL_BETAS,
    Toy2dConfig,
    build_schedule,
    resolve,
    steps_per_epoch,
    train_config,
)
from experiments.toy2d.data import host_batches
from experiments.toy2d.main import main
from jaxdiff.models import ConditionalMLP  # the experiment's network, as the benchmarks build it

__all__ = [
    "DEFAULT_BETA_END",
    "DEFAULT_EPOCHS",
    "PROG",
    "RESUMABLE",
    "SCATTER_FRAMES",
    "TUTORIAL_BETAS",
    "ConditionalMLP",
    "Toy2dConfig",
    "build_schedule",
    "host_batches",
    "main",
    "resolve",
    "steps_per_epoch",
    "train_config",
]
