"""``python -m experiments.digits``'s settings: the flags and the model they build."""

from __future__ import annotations

import dataclasses
from typing import Literal

from experiments._cli import DistributedRunFlags, field
from experiments._common import check_at_least
from experiments._objective import (
    OBJECTIVE_HELP,
    SIGMA_DATA_DEFAULT,
    SIGMA_DATA_HELP,
    check_objective_flags,
)
from jaxdiff import data as jdata
from jaxdiff.objectives import ObjectiveName
from jaxdiff.runs import ModelSpec
from jaxdiff.samplers import SamplerName
from jaxdiff.train import TrainConfig

PROG = "python -m experiments.digits"

#: Measured training speed (steps/s, batch 32) on this project's shared 2-core CPU, for the
#: printed duration estimate; jax 0.10.2, default steps per call. "improved": 0.71 measured on
#: 2026-12-01 for the whole default run (with the matmul kernel gradients of
#: jaxdiff.models.conv; 0.4 on 2026-11-23 before them, on a slower day of the same machine).
CPU_STEPS_PER_SECOND = {"improved": 0.7, "small": 2.8, "tiny": 20.0}


#: ``--model`` choices -> the library's model presets (:data:`jaxdiff.models.PRESETS`).
MODELS = {"improved": "improved_denoiser_8x8", "small": "unet_small_8x8", "tiny": "unet_tiny_8x8"}


@dataclasses.dataclass(frozen=True)
class DigitsConfig(DistributedRunFlags):
    """Configuration of ``python -m experiments.digits`` (flags: ``--epochs 10`` ...)."""

    out: str = field("runs/digits", "output directory (config, metrics, samples, figures, ckpts)")
    seed: int = field(0, "PRNG seed of the model init, the training noise and the samples")
    model: Literal["improved", "small", "tiny"] = field(
        "improved", "U-Net: improved (the tutorial's, 9.2M params), small (0.6M), tiny (tests)"
    )
    epochs: int = field(50, "passes over the 1,797 images (ignored when --train-steps is given)")
    train_steps: int | None = field(
        None, "total training steps", default_text="--epochs x batches per epoch"
    )
    batch_size: int = field(32, "batch size")
    learning_rate: float = field(2e-4, "AdamW learning rate")
    weight_decay: float = field(0.01, "AdamW weight decay")
    grad_clip: float = field(1.0, "clip gradients to this global norm")
    ema_decay: float = field(0.995, "EMA decay (with warm-up) of the parameters used to sample")
    schedule: Literal["linear", "cosine", "quadratic", "sigmoid"] = field(
        "linear", "beta schedule (the tutorial: linear 1e-4..0.02)"
    )
    num_timesteps: int = field(1000, "diffusion steps T")
    objective: ObjectiveName = field("ddpm", OBJECTIVE_HELP)
    sigma_data: float | None = field(None, SIGMA_DATA_HELP, default_text=SIGMA_DATA_DEFAULT)
    sampler: SamplerName = field("dpm++", "sampler for the final samples (the tutorial: ddpm)")
    sample_steps: int | None = field(
        None, "sampler steps", default_text="the sampler's: dpm++ 20, ddim 50, ddpm T, ..."
    )
    num_samples: int = field(
        1000, "final samples saved to samples.npy and evaluated (0: train only)"
    )
    steps_per_call: int | None = field(
        None, "training steps per compiled call (K)", default_text="per backend, see jaxdiff.train"
    )
    checkpoint_every: int = field(560, "checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = field(3, "checkpoints to keep")
    evaluate: bool = field(True, "Frechet distance etc. with the digits feature classifier")
    cache_dir: str | None = field(
        None, "cache for the evaluation classifier", default_text="~/.cache/jaxdiff"
    )

    def __post_init__(self):
        check_at_least(
            self, 1, "epochs", "batch_size", "keep_checkpoints", "train_steps", "sample_steps",
            "steps_per_call",
        )  # fmt: skip
        check_at_least(self, 0, "checkpoint_every", "num_samples")
        check_objective_flags(self)
        check_at_least(self, 2, "num_timesteps")
        if self.batch_size > 1797:
            raise ValueError(f"--batch-size {self.batch_size} is larger than the 1797 images")
        if self.sample_steps is not None and self.sample_steps > self.num_timesteps:
            raise ValueError(
                f"--sample-steps {self.sample_steps} exceeds --num-timesteps {self.num_timesteps}"
            )
        for name in ("learning_rate", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}"
                )
        if self.weight_decay < 0:
            raise ValueError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"--ema-decay must lie in [0, 1), got {self.ema_decay}")
        super().__post_init__()  # --resume and --overwrite


# Settings that may change between a run and its --resume (they do not change the trained model).
RESUMABLE = (
    "epochs", "train_steps", "sampler", "sample_steps", "num_samples", "evaluate", "cache_dir",
    "resume", "overwrite", "progress", "keep_checkpoints", "checkpoint_every", "steps_per_call",
    "distributed", "deterministic", "stall_timeout",
)  # fmt: skip

#: Timesteps of the forward-process figure (of T = 1000; scaled to other T).
FORWARD_T = (0, 50, 100, 200, 400, 600, 800, 999)


def resolve(config: DigitsConfig, num_images: int = 1797) -> DigitsConfig:
    """Fill ``train_steps`` from the epochs (what config.json records)."""
    steps = config.train_steps or config.epochs * jdata.steps_per_epoch(
        num_images, config.batch_size
    )
    return dataclasses.replace(config, train_steps=steps)


def model_spec(config: DigitsConfig) -> ModelSpec:
    """What rebuilds the run's model (:class:`jaxdiff.runs.ModelSpec`) from a resolved config.

    The initialisers draw from an "rbg" key: on XLA:CPU every parameter shape compiles its own
    initialiser, and a threefry one takes ~1 s to compile there (a tiny U-Net: 46 compiles,
    ~35 s, against ~9 s with rbg). The values differ from a threefry init, not the recipe.
    """
    train = TrainConfig(
        learning_rate=config.learning_rate,
        optimizer="adamw",
        weight_decay=config.weight_decay,
        grad_clip_norm=config.grad_clip,
        ema_decay=config.ema_decay,
        steps_per_call=config.steps_per_call,
    )
    return ModelSpec(
        model=MODELS[config.model],
        image_size=8,
        seed=config.seed,
        rng_impl="rbg",
        schedule=config.schedule,
        num_timesteps=config.num_timesteps,
        train=train,
    )
