"""``python -m experiments.mnist``'s settings: the flags, the two presets, the model they build.

Every flag is a field of :class:`MnistConfig`. Fields left at ``None`` take the value of the
preset (``--preset auto``: "cpu" on a CPU, "gpu" on a GPU or TPU); a preset is a named set of
keyword defaults, so ``--help`` shows each one's value per preset.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import jax

from experiments._cli import DistributedRunFlags, field
from experiments._common import check_at_least, log
from experiments._objective import (
    OBJECTIVE_HELP,
    SIGMA_DATA_DEFAULT,
    SIGMA_DATA_HELP,
    check_objective_flags,
)
from jaxdiff.objectives import ObjectiveName
from jaxdiff.runs import ModelSpec
from jaxdiff.samplers import SamplerName
from jaxdiff.train import TrainConfig

PROG = "python -m experiments.mnist"

#: ``--model`` choices -> the library's model presets (:data:`jaxdiff.models.PRESETS`).
MODELS = {
    "tiny": "unet_tiny",
    "compact": "unet_compact",
    "small": "unet_mnist_small",
    "full": "unet_mnist",
    "cnn": "small_cnn",
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """Backend-sized defaults: ``defaults`` fill the :class:`MnistConfig` fields left ``None``.

    ``unroll`` and ``batch_draw`` shape the compiled training loop (``TrainConfig``; None: the
    backend's own); the gpu preset names its own, so that a CPU run of it (tests, 8 forced host
    devices) exercises the accelerator's program. ``seconds_per_step`` (at the preset's batch)
    and ``fixed_seconds`` (compile, data, sampling, evaluation) give the printed duration
    estimate where someone measured them; None: the estimate comes from the step's FLOP count.
    """

    defaults: Mapping[str, Any]
    unroll: int | bool | None = None
    batch_draw: str | None = None
    seconds_per_step: float | None = None
    fixed_seconds: float | None = None


# The CPU preset is sized so that the whole default run (data, compile, training, 1,000 samples,
# figures, evaluation) fits in 15 minutes on a 2-core CPU (README.md, "How the CPU preset was
# chosen", which has the measurements behind each choice). The cosine schedule with Min-SNR-5
# weighting and lr 2e-3 took the Frechet distance of a 1,200-step unconditional run from 98
# (linear, L_simple, lr 1e-3) to 65 at 256 samples; class labels with classifier-free guidance
# w=0.5 took it from ~52 (unconditional, 1,600 steps) to 22-25 at 2,000 steps; ancestral
# DDPM on 25 respaced steps beat DPM-Solver++ and DDIM on the briefly trained model; a cosine
# learning-rate decay measured worse with the EMA weights. The EMA decay is matched to the run
# length.
CPU = Preset(
    defaults=dict(
        model="compact", train_steps=2000, batch_size=32, learning_rate=2e-3, warmup_steps=100,
        lr_schedule="constant", ema_decay=0.995, schedule="cosine", loss_weighting="min_snr",
        sample_every=500, checkpoint_every=500, sampler="ddpm", sample_steps=25,
        dtype="float32", num_samples=1000, steps_per_call=None,
    ),
    seconds_per_step=0.27,
    fixed_seconds=160.0,
)  # fmt: skip

# Not yet run on a GPU: its timing is unmeasured. bfloat16 compute (float32 parameters): equal
# in quality to float32 on the CPU preset cut to 400 steps, 3 seeds each (FID 145.6 +- 6.9
# against 147.4 +- 6.1, losses within 0.1%; benchmarks/RESULTS.md, 2026-12-06).
GPU = Preset(
    defaults=dict(
        model="full", train_steps=40_000, batch_size=128, learning_rate=2e-4, warmup_steps=1000,
        lr_schedule="constant", ema_decay=0.9999, schedule="linear", loss_weighting="simple",
        sample_every=5000, checkpoint_every=5000, sampler="dpm++", sample_steps=20,
        dtype="bfloat16", num_samples=10_000, steps_per_call=10,
    ),
    unroll=1,
    batch_draw="table",
)  # fmt: skip

PRESETS = {"cpu": CPU, "gpu": GPU}
#: Each preset's field values, for ``--help``.
PRESET_DEFAULTS = {name: p.defaults for name, p in PRESETS.items()}
_DEFAULT_GUIDANCE = 0.5


@dataclasses.dataclass(frozen=True)
class MnistConfig(DistributedRunFlags):
    """Configuration of ``python -m experiments.mnist`` (flags: ``--train-steps 2000`` ...).

    Defaults marked "from preset" depend on --preset (auto: cpu on a CPU, gpu on a GPU or TPU).
    """

    preset_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = PRESET_DEFAULTS

    out: str = field("runs/mnist", "output directory (config, metrics, samples, figures, ckpts)")
    seed: int = field(0, "PRNG seed of the model init, the training noise and the samples")
    preset: Literal["auto", "cpu", "gpu"] = field("auto", "defaults sized for this backend")
    train_steps: int | None = field(None, "total training steps")
    batch_size: int | None = field(None, "global batch size")
    model: Literal["tiny", "compact", "small", "full", "cnn"] | None = field(
        None,
        "U-Net: tiny (tests), compact (0.28M params), small (1.1M) or full (6.5M); or cnn, the "
        "tutorials' three-conv CNN (42k, unconditional, time feature t/T)",
    )
    learning_rate: float | None = field(None, "peak Adam learning rate")
    warmup_steps: int | None = field(None, "linear learning-rate warm-up steps")
    lr_schedule: Literal["constant", "cosine"] | None = field(
        None, "after warm-up: constant, or cosine decay to 0 at --train-steps"
    )
    ema_decay: float | None = field(None, "EMA decay, with warm-up")
    loss_weighting: Literal["simple", "min_snr"] | None = field(
        None, "timestep weighting of the loss: simple (L_simple) or min_snr"
    )
    snr_gamma: float = field(5.0, "gamma of --loss-weighting min_snr (Hang et al. 2023)")
    image_size: int = field(28, "train on 28x28 or 32x32 (bilinear resize) images")
    num_timesteps: int = field(1000, "diffusion steps T")
    schedule: Literal["linear", "cosine", "quadratic", "sigmoid", "constant"] | None = field(
        None, "beta schedule; constant: alpha_t = --alpha at every step"
    )
    alpha: float | None = field(
        None,
        "the per-step alpha a of --schedule constant (alphas_cumprod[t] = a**(t+1))",
        default_text="required with --schedule constant",
    )
    objective: ObjectiveName = field("ddpm", OBJECTIVE_HELP)
    sigma_data: float | None = field(None, SIGMA_DATA_HELP, default_text=SIGMA_DATA_DEFAULT)
    prediction: Literal["eps", "x0", "v"] = field(
        "eps", "what the network predicts (--objective ddpm)"
    )
    class_conditional: bool | None = field(
        None,
        "condition on the digit (label dropout for CFG); --no-class-conditional: the classic "
        "unconditional run",
        default_text="on, except with --model cnn (unconditional)",
    )
    label_dropout: float = field(0.1, "probability of the null label while training (CFG)")
    guidance_scale: float = field(
        _DEFAULT_GUIDANCE, "classifier-free guidance weight w (needs --class-conditional)"
    )
    sampler: SamplerName | None = field(None, "sampler for the final samples")
    sample_steps: int | None = field(
        None,
        "sampler steps",
        default_text="from preset: cpu 25, gpu 20, with the preset's sampler; another "
        "--sampler: its own default",
    )
    num_samples: int | None = field(None, "final samples to save and evaluate (0: train only)")
    dtype: Literal["float32", "bfloat16"] | None = field(
        None, "U-Net compute dtype; parameters stay float32"
    )
    sample_every: int | None = field(None, "write a sample grid every N steps (0 = never)")
    checkpoint_every: int | None = field(None, "checkpoint every N steps (and at the end)")
    keep_checkpoints: int = field(3, "checkpoints to keep")
    steps_per_call: int | None = field(None, "training steps per compiled call (K)")
    train_limit: int | None = field(
        None, "use only the first N training images (smoke tests)", default_text="all"
    )
    dataset: Literal["mnist", "fashion_mnist"] = field(
        "mnist", "data set: MNIST digits or Fashion-MNIST (same format; no FID for fashion)"
    )
    data_dir: str | None = field(
        None,
        "prepared tensorflow_datasets folder; without one the official IDX files are downloaded "
        "once ($JAXDIFF_MNIST_URL for a mirror)",
        default_text="$TFDS_DATA_DIR",
    )
    evaluate: bool = field(True, "Frechet distance etc. with the MNIST feature classifier")
    cache_dir: str | None = field(
        None, "cache for the evaluation classifier", default_text="~/.cache/jaxdiff"
    )

    def __post_init__(self):
        check_at_least(
            self, 1, "train_steps", "batch_size", "sample_steps", "train_limit", "steps_per_call",
            "keep_checkpoints",
        )  # fmt: skip
        check_at_least(self, 0, "warmup_steps", "sample_every", "checkpoint_every", "num_samples")
        check_objective_flags(self)
        if self.objective != "ddpm" and self.prediction != "eps":
            raise ValueError(
                f"--prediction applies to --objective ddpm only ({self.objective} fixes what the "
                "network predicts); drop it"
            )
        if self.num_samples == 0 and self.sample_every:
            raise ValueError(
                "--sample-every draws progress grids, but --num-samples 0 trains only; drop "
                "--sample-every or set --num-samples > 0"
            )
        check_at_least(self, 2, "num_timesteps")
        if self.image_size not in (28, 32):
            raise ValueError(f"--image-size must be 28 or 32, got {self.image_size}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if not (math.isfinite(self.snr_gamma) and self.snr_gamma > 0):
            raise ValueError(f"--snr-gamma must be > 0, got {self.snr_gamma}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"--ema-decay must lie in [0, 1), got {self.ema_decay}")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"--label-dropout must lie in [0, 1), got {self.label_dropout}")
        if self.guidance_scale < 0:
            raise ValueError(f"--guidance-scale must be >= 0, got {self.guidance_scale}")
        if self.guidance_scale > 0 and self.class_conditional and self.label_dropout == 0:
            raise ValueError(
                "--guidance-scale > 0 needs an unconditional model too: set --label-dropout > 0 "
                "(e.g. 0.1) or --guidance-scale 0"
            )
        if self.model == "cnn" and (
            self.class_conditional
            or self.guidance_scale != _DEFAULT_GUIDANCE
            or self.dtype == "bfloat16"
        ):
            raise ValueError(
                "--model cnn is unconditional and float32: drop --class-conditional, "
                "--guidance-scale and --dtype bfloat16, or pick a U-Net --model"
            )
        if self.guidance_scale != _DEFAULT_GUIDANCE and self.class_conditional is False:
            raise ValueError(
                f"--guidance-scale {self.guidance_scale:g} needs --class-conditional (guidance "
                "mixes conditional and unconditional predictions); drop --no-class-conditional "
                "or --guidance-scale"
            )
        if (self.schedule == "constant") != (self.alpha is not None):
            raise ValueError(
                "--schedule constant needs --alpha A (the per-step alpha, in (0, 1), e.g. 0.99) "
                "and --alpha needs --schedule constant"
            )
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise ValueError(f"--alpha must lie in (0, 1), got {self.alpha}")
        super().__post_init__()  # --resume and --overwrite


# Settings that may change between a run and its --resume (they do not change the trained model).
RESUMABLE = (
    "train_steps", "sampler", "sample_steps", "num_samples", "guidance_scale", "sample_every",
    "evaluate", "cache_dir", "data_dir", "resume", "overwrite", "progress", "keep_checkpoints",
    "steps_per_call", "distributed", "deterministic", "stall_timeout",
)  # fmt: skip


def resolve(config: MnistConfig, backend: str | None = None) -> tuple[MnistConfig, Preset]:
    """Fill every ``None`` field from the preset for ``backend`` (default: JAX's backend)."""
    name = config.preset
    if name == "auto":
        name = "cpu" if (backend or jax.default_backend()) == "cpu" else "gpu"
    p = PRESETS[name]
    changes = {
        k: v
        for k, v in p.defaults.items()
        if k not in ("sampler", "sample_steps") and getattr(config, k) is None
    }
    if config.num_samples == 0 and config.sample_every is None:  # trained only: no grids
        changes["sample_every"] = 0
    model = changes.get("model", config.model)
    if config.class_conditional is None:  # the U-Nets take labels, the tutorials' CNN does not
        changes["class_conditional"] = model != "cnn"
    if config.dtype is None and model == "cnn":  # and it computes in float32 only
        changes["dtype"] = "float32"
    if config.sampler is None:  # the preset's steps go with the preset's sampler only
        changes["sampler"] = p.defaults["sampler"]
        if config.sample_steps is None:
            changes["sample_steps"] = p.defaults["sample_steps"]
    config = dataclasses.replace(config, preset=name, **changes)
    if config.warmup_steps >= config.train_steps and config.warmup_steps > 0:
        config = dataclasses.replace(config, warmup_steps=max(0, config.train_steps // 10))
    return config, p


def model_spec(config: MnistConfig) -> ModelSpec:
    """What rebuilds the run's model (:class:`jaxdiff.runs.ModelSpec`) from a resolved config."""
    num_classes = 10 if config.class_conditional else None
    preset = PRESETS[config.preset]
    train = TrainConfig(
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps,
        lr_schedule=config.lr_schedule,
        total_steps=config.train_steps if config.lr_schedule == "cosine" else None,
        ema_decay=config.ema_decay,
        prediction=config.prediction,
        loss_weighting=config.loss_weighting,
        snr_gamma=config.snr_gamma,
        num_classes=num_classes,
        label_dropout=config.label_dropout if config.class_conditional else 0.0,
        steps_per_call=config.steps_per_call,
        unroll=preset.unroll,
        batch_draw=preset.batch_draw,
    )
    return ModelSpec(
        model=MODELS[config.model],
        image_size=config.image_size,
        num_classes=num_classes,
        dtype=config.dtype,
        seed=config.seed,
        schedule=config.schedule,
        num_timesteps=config.num_timesteps,
        schedule_kwargs={"a": config.alpha} if config.schedule == "constant" else {},
        train=train,
    )


def build(config: MnistConfig, *, abstract: bool = False):
    """``(apply, params, schedule, train_config)`` of a resolved config (see :func:`resolve`).

    ``abstract=True``: ``jax.ShapeDtypeStruct`` params (:meth:`jaxdiff.runs.ModelSpec.build`).
    """
    spec = model_spec(config)
    apply, params, schedule = spec.build(abstract=abstract)
    return apply, params, schedule, spec.train


def fit_batch_to_devices(config: MnistConfig, named: bool, devices: int) -> MnistConfig:
    """The config with a global batch that splits evenly over ``devices``.

    A preset's batch is rounded up to the next multiple of the device count, with a note (the
    default command then runs on 6 or 7 GPUs too); a ``--batch-size`` the user named is never
    changed: a ValueError names the nearest valid sizes.
    """
    b = config.batch_size
    if b % devices == 0:
        return config
    lower, upper = b // devices * devices, (b // devices + 1) * devices
    if named:
        sizes = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(
            f"--batch-size {b} does not split over the {devices} devices; use {sizes} (a "
            f"multiple of {devices})"
        )
    log(f"note: the {config.preset} preset's batch {b} rounded up to {upper} for {devices} devices")
    return dataclasses.replace(config, batch_size=upper)
