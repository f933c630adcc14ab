"""The flags of ``python -m experiments.toy2d``, their checks, and what they resolve to.

:class:`Toy2dConfig` is the command line (``experiments._cli`` turns its fields into flags);
:func:`resolve` fills the defaults that depend on other flags (what config.json records);
:func:`build_schedule` and :func:`train_config` turn a resolved config into the library's
objects, so that the benchmarks build exactly what the experiment trains.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from flax import nnx

from experiments._cli import DistributedRunFlags, field
from experiments._common import check_at_least
from experiments._objective import (
    OBJECTIVE_HELP,
    SIGMA_DATA_DEFAULT,
    SIGMA_DATA_HELP,
    check_objective_flags,
)
from jaxdiff.models import ConditionalMLP, SinusoidalMLP
from jaxdiff.objectives import ObjectiveName
from jaxdiff.samplers import SamplerName
from jaxdiff.schedules import Schedule, make_schedule
from jaxdiff.train import TrainConfig

PROG = "python -m experiments.toy2d"

#: The tutorial's schedule, reproduced by ``--tutorial-schedule``.
TUTORIAL_BETAS = (1e-5, 5e-3)
#: The default end of the schedule: alphas_cumprod[-1] ~ 0.006 with 100 sigmoid steps.
DEFAULT_BETA_END = 0.1
#: Number of frames of the forward and reverse scatter figures (as in the tutorial).
SCATTER_FRAMES = 10
#: Passes over the data: the tutorial's 1000 (300 are faster but blurrier; package docstring).
DEFAULT_EPOCHS = 1000


@dataclasses.dataclass(frozen=True)
class Toy2dConfig(DistributedRunFlags):
    """Configuration of ``python -m experiments.toy2d`` (flags: ``--dataset swiss_roll`` ...).

    The defaults are the 2-D tutorial's recipe, except the end of the noise schedule (see
    ``--tutorial-schedule``).
    """

    out: str = field("runs/toy2d", "output directory (config, metrics, samples, figures, ckpts)")
    seed: int = field(0, "seed of the data, the model init, the training noise and the samples")
    dataset: Literal["moons", "swiss_roll", "s_curve", "swiss_roll_3d"] = field(
        "moons", "point cloud (swiss_roll_3d is 3-D; its figures show the roll plane x-z)"
    )
    num_points: int = field(10_000, "training points drawn from the data set")
    epochs: int = field(
        DEFAULT_EPOCHS, "passes over the points (as the tutorial); --train-steps overrides it"
    )
    train_steps: int | None = field(
        None, "total training steps", default_text="--epochs x batches per epoch"
    )
    batch_size: int = field(128, "batch size")
    hidden: int = field(
        128,
        "width of the conditional-linear MLP (of the sinusoidal MLP for a continuous --objective)",
    )
    learning_rate: float = field(1e-3, "Adam learning rate")
    grad_clip: float = field(1.0, "clip gradients to this global norm")
    ema_decay: float = field(0.9, "EMA decay of the parameters used for sampling")
    antithetic: bool = field(True, "pair timesteps t and T-1-t in each batch")
    objective: ObjectiveName = field("ddpm", OBJECTIVE_HELP)
    sigma_data: float | None = field(None, SIGMA_DATA_HELP, default_text=SIGMA_DATA_DEFAULT)
    schedule: Literal["sigmoid", "linear", "quadratic", "cosine"] = field(
        "sigmoid", "beta schedule"
    )
    num_timesteps: int = field(100, "diffusion steps T")
    beta_start: float = field(1e-5, "first beta (sigmoid, linear, quadratic)")
    beta_end: float | None = field(
        None,
        f"last beta (the tutorial's: {TUTORIAL_BETAS[1]})",
        default_text=f"{DEFAULT_BETA_END}; with --tutorial-schedule {TUTORIAL_BETAS[1]}",
    )
    tutorial_schedule: bool = field(
        False, "the tutorial's exact schedule: sigmoid 1e-5..5e-3, alphas_cumprod[-1] = 0.778"
    )
    sampler: SamplerName = field("ddpm", "sampler (the tutorial: ddpm)")
    sample_steps: int | None = field(
        None, "sampler steps", default_text="the sampler's: ddpm T, ddim 50, dpm++ 20, ..."
    )
    variance: Literal["beta", "posterior"] = field(
        "beta", "DDPM step variance (the tutorial: beta_t)"
    )
    num_samples: int = field(
        10_000, "points to sample, save to samples.npy and evaluate (0: train only)"
    )
    gif_frames: int = field(20, "frames of each half (forward, reverse) of the GIF")
    steps_per_call: int = field(100, "training steps per compiled call (lax.scan)")
    checkpoint_every: int = field(10_000, "checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = field(3, "checkpoints to keep")
    evaluate: bool = field(True, "MMD and sliced Wasserstein distance against fresh data")
    cache_dir: str | None = field(
        None, "cache for the evaluation references", default_text="~/.cache/jaxdiff"
    )

    def __post_init__(self):
        positive = (
            "num_points", "epochs", "batch_size", "hidden", "gif_frames", "steps_per_call",
            "keep_checkpoints", "train_steps", "sample_steps",
        )  # fmt: skip
        check_at_least(self, 1, *positive)
        check_at_least(self, 0, "checkpoint_every", "num_samples")
        check_objective_flags(self)
        if self.batch_size > self.num_points:
            raise ValueError(
                f"--batch-size {self.batch_size} is larger than --num-points {self.num_points}"
            )
        check_at_least(self, 2, "num_timesteps")
        for name in ("learning_rate", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}"
                )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"--ema-decay must lie in [0, 1), got {self.ema_decay}")
        for name in ("beta_start", "beta_end"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must lie in (0, 1), got {value}")
        if self.tutorial_schedule:
            if (
                self.schedule != "sigmoid"
                or self.num_timesteps != 100
                or self.beta_start != TUTORIAL_BETAS[0]
                or self.beta_end not in (None, TUTORIAL_BETAS[1])
            ):
                raise ValueError(
                    "--tutorial-schedule fixes the schedule (sigmoid, 100 steps, betas 1e-5..5e-3);"
                    " drop --schedule/--num-timesteps/--beta-start/--beta-end"
                )
        if self.sampler != "ddpm" and self.variance != "beta":
            raise ValueError("--variance applies to --sampler ddpm only")
        if self.sample_steps is not None and self.sample_steps > self.num_timesteps:
            raise ValueError(
                f"--sample-steps {self.sample_steps} exceeds --num-timesteps {self.num_timesteps}"
            )
        super().__post_init__()  # --resume and --overwrite


# Settings that may change between a run and its --resume (they do not change the trained model).
RESUMABLE = (
    "epochs", "train_steps", "sampler", "sample_steps", "variance", "num_samples", "gif_frames",
    "evaluate",
    "cache_dir", "resume", "overwrite", "progress", "keep_checkpoints", "checkpoint_every",
    "steps_per_call", "distributed", "deterministic", "stall_timeout",
)  # fmt: skip


#: Settings that may change on --resume with a warning (the optimiser's, e.g. lowered).
TUNABLE = ("learning_rate", "grad_clip")


def steps_per_epoch(config: Toy2dConfig) -> int:
    """Full batches per pass over the points (the remainder is dropped)."""
    return config.num_points // config.batch_size


def resolve(config: Toy2dConfig) -> Toy2dConfig:
    """Fill ``beta_end`` and ``train_steps`` (what config.json records)."""
    beta_end = config.beta_end
    if config.tutorial_schedule:
        beta_end = TUTORIAL_BETAS[1]
    elif beta_end is None:
        beta_end = DEFAULT_BETA_END
    steps = config.train_steps or config.epochs * steps_per_epoch(config)
    return dataclasses.replace(config, beta_end=beta_end, train_steps=steps)


def build_schedule(config: Toy2dConfig) -> Schedule:
    """The noise schedule of a resolved config (its ``beta_end`` filled by :func:`resolve`)."""
    if config.schedule == "cosine":
        return make_schedule("cosine", config.num_timesteps)
    return make_schedule(
        config.schedule,
        config.num_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
    )


def build_model(config: Toy2dConfig, dim: int) -> nnx.Module:
    """The tutorial's conditional-linear MLP for ``--objective ddpm`` (it looks its layers'
    scales up by integer step), else the sinusoidal MLP (continuous time)."""
    rngs = nnx.Rngs(config.seed)
    if config.objective == "ddpm":
        return ConditionalMLP(dim, config.num_timesteps, config.hidden, rngs=rngs)
    return SinusoidalMLP(dim, hidden=config.hidden, rngs=rngs)


def schedule_name(config: Toy2dConfig) -> str:
    """The schedule in a few words, for figure legends: ``sigmoid 1e-05..0.1, T=100``."""
    if config.schedule == "cosine":
        return f"cosine, T={config.num_timesteps}"
    return f"{config.schedule} {config.beta_start:g}..{config.beta_end:g}, T={config.num_timesteps}"


def train_config(config: Toy2dConfig) -> TrainConfig:
    """The optimiser and training loop of the recipe (Adam, clipping, EMA, antithetic t)."""
    return TrainConfig(
        learning_rate=config.learning_rate,
        grad_clip_norm=config.grad_clip,
        ema_decay=config.ema_decay,
        antithetic=config.antithetic,
        steps_per_call=config.steps_per_call,
        unroll=1,  # an MLP runs fine in a rolled scan on every backend
    )
