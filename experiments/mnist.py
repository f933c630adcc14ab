"""MNIST: train a U-Net denoiser with EMA, sample it, draw the figures, measure it, report.

Run (defaults sized by backend; see :data:`PRESETS`)::

    python -m experiments.mnist                                  # writes runs/mnist/
    python -m experiments.mnist --out runs/cond --class-conditional --guidance-scale 2
    python -m experiments.mnist --resume                          # continue runs/mnist/
    python -m experiments.mnist --help                            # every option, with defaults

Outputs in ``--out`` (every experiment's contract): config.json, metrics.jsonl (one record per
training step), metrics.json (final numbers), samples.npy (float32 ``(N, H, W, 1)`` in [0, 1];
labels.npy too when class-conditional), PNG figures, a GIF of the reverse process, checkpoints/
and report.md.

Data: a prepared tensorflow-datasets copy named by ``--data-dir`` or ``$TFDS_DATA_DIR``, else the
official MNIST IDX files, downloaded and verified once (``jaxdiff.data.load_mnist``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments._cli import field, run_main
from experiments._common import (
    check_batch_divisible,
    command_section,
    evaluation_section,
    log,
    open_run_dir,
    restore_latest,
    train,
    training_section,
)
from jaxdiff import data as jdata
from jaxdiff import plotting
from jaxdiff.checkpoint import Checkpointer, CorruptCheckpointError
from jaxdiff.forward import q_sample
from jaxdiff.loop import steps_per_second
from jaxdiff.models import (
    UNet,
    count_params,
    split_model,
    unet_level_sizes,
    unet_mnist,
    unet_mnist_small,
)
from jaxdiff.outputs import read_metrics, write_json, write_report
from jaxdiff.samplers import SamplerName, sample, step_sequence
from jaxdiff.schedules import Schedule, make_schedule
from jaxdiff.sharding import is_main_process, local_copy
from jaxdiff.train import TrainConfig, Trainer, eval_params, init_train_state, make_optimizer

PROG = "python -m experiments.mnist"
SAMPLE_CHUNK = 250  # samples per compiled sampling call (bounds memory)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preset:
    """Backend-sized defaults for the fields left as ``None`` on the command line."""

    name: str
    model: str
    train_steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    lr_schedule: str
    ema_decay: float
    schedule: str
    loss_weighting: str
    sample_every: int
    checkpoint_every: int
    sampler: str
    sample_steps: int | None
    dtype: str  # compute dtype of the U-Net (parameters stay float32)
    num_samples: int  # final samples, evaluated against the real data
    # For the printed duration estimate: measured seconds per training step at ``batch_size``
    # and the rest of the run (compile, data, sampling, evaluation), or None where no one has
    # measured them; the estimate then comes from the step's FLOP count.
    seconds_per_step: float | None
    fixed_seconds: float | None
    # How the compiled training loop runs (TrainConfig.steps_per_call / unroll / batch_draw);
    # None: the backend's defaults. The gpu preset names its own, so that a CPU run of it (tests,
    # 8 forced host devices) exercises the accelerator's program.
    steps_per_call: int | None = None
    unroll: int | bool | None = None
    batch_draw: str | None = None


# The CPU preset is sized so that the whole default run (data, compile, training, 1,000 samples,
# figures, evaluation) fits in 20 minutes on a 2-core CPU: 10.8 min measured here on 2026-12-01
# with an empty cache; this machine has run the same training up to ~2x slower on other days,
# which still fits (README.md). The EMA decay is matched to the run length.
# Its recipe was chosen by measurement (README.md, "How the CPU preset was chosen"): the cosine
# schedule with Min-SNR-5 loss weighting and lr 2e-3 took the Frechet distance of the 1,200-step
# run from 98 (linear, L_simple, lr 1e-3) to 65 at 256 samples; neither change helps alone as
# much (cosine alone 100, Min-SNR alone 81).
# It samples with DDPM on 25 respaced steps: for the briefly trained model ancestral sampling
# measured FID 59 against 83 for DPM-Solver++ (20 steps) and 84 for DDIM (50 steps) on the same
# checkpoint (256 samples each). Deterministic ODE solvers follow the model's errors; the noise
# injected by DDPM corrects part of them. DDPM on 50 steps measured 52 but doubles the sampling.
# A cosine learning-rate decay measured worse with the EMA weights (FID 106 vs 94 for the earlier
# linear recipe; README.md), so both presets keep a constant rate after warm-up.
PRESETS = {
    "cpu": Preset(
        name="cpu",
        model="compact",
        train_steps=1600,
        batch_size=32,
        learning_rate=2e-3,
        warmup_steps=100,
        lr_schedule="constant",
        ema_decay=0.995,
        schedule="cosine",
        loss_weighting="min_snr",
        sample_every=300,
        checkpoint_every=300,
        sampler="ddpm",
        sample_steps=25,
        dtype="float32",
        num_samples=1000,
        seconds_per_step=0.3,
        fixed_seconds=170.0,
    ),
    # Not yet run on a GPU: its timing is unmeasured, and it computes in float32 until bfloat16
    # has been checked to give the same quality (the U-Net supports it: --dtype bfloat16).
    "gpu": Preset(
        name="gpu",
        model="full",
        train_steps=40_000,
        batch_size=128,
        learning_rate=2e-4,
        warmup_steps=1000,
        lr_schedule="constant",
        ema_decay=0.9999,
        schedule="linear",
        loss_weighting="simple",
        sample_every=5000,
        checkpoint_every=5000,
        sampler="dpm++",
        sample_steps=20,
        dtype="float32",
        num_samples=10_000,
        seconds_per_step=None,
        fixed_seconds=None,
        steps_per_call=10,
        unroll=1,
        batch_draw="table",
    ),
}


def unet_tiny(channels, image_size, num_classes, *, dtype=None, rngs):
    """A few-thousand-parameter U-Net (two levels, base 8, no attention) for smoke tests."""
    return UNet(
        channels,
        image_size,
        base_channels=8,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        mid_attention=False,
        num_classes=num_classes,
        norm_groups=4,
        dtype=dtype,
        rngs=rngs,
    )


def unet_compact(channels, image_size, num_classes, *, dtype=None, rngs):
    """The CPU preset's U-Net: ``unet_mnist_small`` at base 16 (0.28M parameters).

    On XLA:CPU the base-32 ``unet_mnist_small`` trains at ~6 s per batch-64 step on 2 cores
    (benchmarks/RESULTS.md), too slow for a 20-minute run; base 16 is ~4x cheaper.
    """
    side = min(unet_level_sizes(image_size, 3)[-1])
    return UNet(
        channels,
        image_size,
        base_channels=16,
        channel_mults=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(side,),
        num_classes=num_classes,
        norm_groups=8,
        dtype=dtype,
        rngs=rngs,
    )


MODELS = {
    "tiny": unet_tiny,
    "compact": unet_compact,
    "small": unet_mnist_small,
    "full": unet_mnist,
}


_DEFAULT_GUIDANCE = 1.0


@dataclasses.dataclass(frozen=True)
class MnistConfig:
    """Configuration of ``python -m experiments.mnist`` (flags: ``--train-steps 2000`` ...).

    Fields left at ``None`` take the backend's preset (``--preset auto``: "cpu" on a CPU, "gpu"
    on a GPU or TPU).
    """

    out: str = field("runs/mnist", "output directory (config, metrics, samples, figures, ckpts)")
    seed: int = field(0, "PRNG seed of the model init, the training noise and the samples")
    preset: Literal["auto", "cpu", "gpu"] = field("auto", "defaults sized for this backend")
    train_steps: int | None = field(None, "total training steps (preset: cpu 1600, gpu 40000)")
    batch_size: int | None = field(None, "global batch size (preset: cpu 32, gpu 128)")
    model: Literal["tiny", "compact", "small", "full"] | None = field(
        None,
        "U-Net: tiny (tests), compact (0.28M params), small (1.1M) or full (6.5M) "
        "(preset: cpu compact, gpu full)",
    )
    learning_rate: float | None = field(None, "peak Adam learning rate (cpu 2e-3, gpu 2e-4)")
    warmup_steps: int | None = field(None, "linear learning-rate warm-up steps")
    lr_schedule: Literal["constant", "cosine"] | None = field(
        None, "after warm-up: constant, or cosine decay to 0 at --train-steps (preset: constant)"
    )
    ema_decay: float | None = field(None, "EMA decay, with warm-up (cpu 0.995, gpu 0.9999)")
    loss_weighting: Literal["simple", "min_snr"] | None = field(
        None,
        "timestep weighting of the loss: simple (L_simple) or min_snr (preset: cpu min_snr, "
        "gpu simple)",
    )
    snr_gamma: float = field(5.0, "gamma of --loss-weighting min_snr (Hang et al. 2023)")
    image_size: int = field(28, "train on 28x28 or 32x32 (bilinear resize) images")
    num_timesteps: int = field(1000, "diffusion steps T")
    schedule: Literal["linear", "cosine", "quadratic", "sigmoid"] | None = field(
        None, "beta schedule (preset: cpu cosine, gpu linear)"
    )
    prediction: Literal["eps", "x0", "v"] = field("eps", "what the network predicts")
    class_conditional: bool = field(False, "condition on the digit (label dropout for CFG)")
    label_dropout: float = field(0.1, "probability of the null label while training (CFG)")
    guidance_scale: float = field(
        _DEFAULT_GUIDANCE, "classifier-free guidance weight w (needs --class-conditional)"
    )
    sampler: SamplerName | None = field(
        None, "sampler for the final samples (preset: cpu ddpm, gpu dpm++)"
    )
    sample_steps: int | None = field(
        None, "sampler steps (preset: cpu ddpm 25, gpu dpm++ 20; else the sampler's default)"
    )
    num_samples: int | None = field(
        None, "final samples saved to samples.npy and evaluated (preset: cpu 1000, gpu 10000)"
    )
    dtype: Literal["float32", "bfloat16"] | None = field(
        None, "U-Net compute dtype; parameters stay float32 (preset: float32)"
    )
    sample_every: int | None = field(None, "write a sample grid every N steps (0 = never)")
    checkpoint_every: int | None = field(None, "checkpoint every N steps (and at the end)")
    keep_checkpoints: int = field(3, "checkpoints to keep")
    steps_per_call: int | None = field(
        None, "training steps per compiled call (K); default per backend, see jaxdiff.train"
    )
    train_limit: int | None = field(None, "use only the first N training images (smoke tests)")
    dataset: Literal["mnist", "fashion_mnist"] = field(
        "mnist", "data set: MNIST digits or Fashion-MNIST (same format; no FID for fashion)"
    )
    data_dir: str | None = field(
        None,
        "prepared tensorflow_datasets folder ($TFDS_DATA_DIR); without one the official IDX "
        "files are downloaded once ($JAXDIFF_MNIST_URL for a mirror)",
    )
    evaluate: bool = field(True, "Frechet distance etc. with the MNIST feature classifier")
    cache_dir: str | None = field(None, "cache for the evaluation classifier (~/.cache/jaxdiff)")
    resume: bool = field(False, "continue the run in --out from its latest checkpoint")
    overwrite: bool = field(False, "delete an earlier run in --out and start again")
    progress: bool = field(True, "show progress bars")
    distributed: bool = field(
        False,
        "join a multi-process run (jax.distributed: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
        "JAX_PROCESS_ID, or the cluster's own variables); every process runs the same command",
    )

    def __post_init__(self):
        for name in (
            "train_steps",
            "batch_size",
            "warmup_steps",
            "sample_steps",
            "train_limit",
            "steps_per_call",
        ):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "warmup_steps" else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.image_size not in (28, 32):
            raise ValueError(f"--image-size must be 28 or 32, got {self.image_size}")
        if self.num_timesteps < 2:
            raise ValueError(f"--num-timesteps must be >= 2, got {self.num_timesteps}")
        if self.num_samples is not None and self.num_samples < 1:
            raise ValueError(f"--num-samples must be >= 1, got {self.num_samples}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"--keep-checkpoints must be >= 1, got {self.keep_checkpoints}")
        for name in ("sample_every", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
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
        if self.guidance_scale != _DEFAULT_GUIDANCE and not self.class_conditional:
            raise ValueError(
                f"--guidance-scale {self.guidance_scale:g} needs --class-conditional (guidance "
                "mixes conditional and unconditional predictions); add --class-conditional or "
                "drop --guidance-scale"
            )
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other; pass one of them")


# Settings that may change between a run and its --resume (they do not change the trained model).
RESUMABLE = (
    "train_steps",
    "sampler",
    "sample_steps",
    "num_samples",
    "guidance_scale",
    "sample_every",
    "evaluate",
    "cache_dir",
    "data_dir",
    "resume",
    "overwrite",
    "progress",
    "keep_checkpoints",
    "steps_per_call",
    "distributed",
)


def resolve(config: MnistConfig, backend: str | None = None) -> tuple[MnistConfig, Preset]:
    """Fill every ``None`` field from the preset for ``backend`` (default: JAX's backend)."""
    name = config.preset
    if name == "auto":
        name = "cpu" if (backend or jax.default_backend()) == "cpu" else "gpu"
    p = PRESETS[name]
    filled = {
        "train_steps": p.train_steps,
        "batch_size": p.batch_size,
        "model": p.model,
        "learning_rate": p.learning_rate,
        "warmup_steps": p.warmup_steps,
        "lr_schedule": p.lr_schedule,
        "ema_decay": p.ema_decay,
        "schedule": p.schedule,
        "loss_weighting": p.loss_weighting,
        "sample_every": p.sample_every,
        "checkpoint_every": p.checkpoint_every,
        "num_samples": p.num_samples,
        "dtype": p.dtype,
        "steps_per_call": p.steps_per_call,
    }
    changes = {k: v for k, v in filled.items() if getattr(config, k) is None}
    if config.sampler is None:  # the preset's steps go with the preset's sampler only
        changes["sampler"] = p.sampler
        if config.sample_steps is None:
            changes["sample_steps"] = p.sample_steps
    config = dataclasses.replace(config, preset=name, **changes)
    if config.warmup_steps >= config.train_steps and config.warmup_steps > 0:
        config = dataclasses.replace(config, warmup_steps=max(0, config.train_steps // 10))
    return config, p


def build(
    config: MnistConfig, *, abstract: bool = False
) -> tuple[Callable, Any, Schedule, TrainConfig]:
    """``(apply, params, schedule, train_config)`` of a resolved config (see :func:`resolve`).

    The U-Net (initialised from ``config.seed``), its noise schedule and the training settings:
    :func:`main` trains with them and :func:`load_run` rebuilds them to restore a finished run.
    ``abstract=True`` returns ``jax.ShapeDtypeStruct`` params (``nnx.eval_shape``): a restore
    target that skips the initialisers, whose compilation takes ~25 s on a 2-core CPU.
    """
    num_classes = 10 if config.class_conditional else None

    def make():
        factory = MODELS[config.model]
        dtype = jnp.bfloat16 if config.dtype == "bfloat16" else None  # None: float32
        return factory(1, config.image_size, num_classes, dtype=dtype, rngs=nnx.Rngs(config.seed))

    _graphdef, params, apply = split_model(nnx.eval_shape(make) if abstract else make())
    schedule = make_schedule(config.schedule, config.num_timesteps)
    train_config = TrainConfig(
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
        unroll=PRESETS[config.preset].unroll,
        batch_draw=PRESETS[config.preset].batch_draw,
    )
    return apply, params, schedule, train_config


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A finished (or checkpointed) ``experiments.mnist`` run, ready to sample from.

    Attributes:
      config: the run's resolved :class:`MnistConfig` (from its config.json).
      apply: the pure model function ``apply(params, x, t, labels=None)``.
      params: the EMA parameters of the restored checkpoint (what sampling uses).
      schedule: the noise schedule the model was trained with.
      step: the training step of the restored checkpoint.
      num_classes: 10 for a class-conditional model (the null label is 10), else None.
    """

    config: MnistConfig
    apply: Callable
    params: Any
    schedule: Schedule
    step: int
    num_classes: int | None


def load_config(run_dir) -> MnistConfig:
    """The resolved :class:`MnistConfig` of an ``experiments.mnist`` output directory.

    Reads ``run_dir/config.json``; keys this version does not know are ignored and missing ones
    take their defaults (then the run's preset, :func:`resolve`).

    Raises:
      FileNotFoundError: ``run_dir`` holds no config.json (not an experiments.mnist run).
      ValueError: config.json is unreadable or not a valid MNIST config.
    """
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no experiments.mnist run in {run_dir} (no config.json there): train one with "
            f"`{PROG} --out {run_dir}` or pass --checkpoint with the --out of an MNIST run"
        )
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in dataclasses.fields(MnistConfig)}
        config = MnistConfig(**{k: v for k, v in saved.items() if k in known})
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path} is not a valid experiments.mnist config: {e}") from e
    config, _preset = resolve(config)
    return config


def load_run(run_dir, step: int | None = None) -> TrainedRun:
    """Rebuild the model of an ``experiments.mnist`` run and restore its EMA parameters.

    Args:
      run_dir: the run's ``--out`` directory (config.json and checkpoints/).
      step: the checkpoint step to restore; None: the newest valid one.

    Raises:
      FileNotFoundError: no config.json or no checkpoint in ``run_dir/checkpoints``; the message
        says which command creates one.
      ValueError: config.json is invalid, or the checkpoint does not fit the model it describes,
        or no checkpoint step could be read (all corrupt).
    """
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    hint = (
        f"no checkpoint in {ckpt_dir}: train one with `{PROG} --out {run_dir}` (or finish the "
        f"run there with `{PROG} --out {run_dir} --resume`), or pass --checkpoint"
    )
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(hint)
    apply, params, schedule, train_config = build(config, abstract=True)
    tx = make_optimizer(train_config)
    # Only shapes and dtypes are needed as the restore target: nothing is computed here.
    target = jax.eval_shape(lambda p: init_train_state(p, tx, 0), params)
    with Checkpointer(ckpt_dir, read_only=True) as ckpt:
        if ckpt.latest_step() is None:
            raise FileNotFoundError(hint)
        try:
            state, _meta = ckpt.restore(target, step=step)
        except CorruptCheckpointError as e:
            raise ValueError(str(e)) from e
        restored = ckpt.last_restored_step
    return TrainedRun(
        config=config,
        apply=apply,
        params=eval_params(state),
        schedule=schedule,
        step=int(restored),
        num_classes=10 if config.class_conditional else None,
    )


def to_images(x) -> np.ndarray:
    """Sampler output in [-1, 1] -> float32 [0, 1] (clipped), as samples.npy stores it."""
    return np.clip(np.asarray(jdata.to_unit_interval(jax.device_get(x)), np.float32), 0.0, 1.0)


def main(config: MnistConfig) -> dict:
    """Run the experiment; return the final metrics dict (also written to metrics.json)."""
    batch_named = config.batch_size is not None
    config, preset = resolve(config)
    config = fit_batch_to_devices(config, batch_named, jax.device_count())
    t_start = time.perf_counter()
    num_classes = 10 if config.class_conditional else None
    guidance = config.guidance_scale if config.class_conditional else 0.0

    # Inputs first: missing data or a refused --out must fail before any work.
    images, labels, data_source = jdata.load_mnist(
        "train",
        dataset=config.dataset,
        data_dir=config.data_dir,
        image_size=config.image_size,
        limit=config.train_limit,
        progress=config.progress,
        return_source=True,
    )
    log(f"data: {data_source}")
    if len(images) < config.batch_size:
        raise ValueError(
            f"--batch-size {config.batch_size} is larger than the {len(images)} training images; "
            "lower --batch-size or raise --train-limit"
        )
    cfg_dict = dataclasses.asdict(config)
    main_process = is_main_process()
    out = open_run_dir(config, cfg_dict, RESUMABLE)

    # Model, schedule, compiled step.
    apply, params, schedule, train_config = build(config)
    n_params = count_params(params)
    trainer = Trainer(apply, schedule, train_config)
    check_batch_divisible(config.batch_size, trainer)
    key = jax.random.PRNGKey(config.seed)
    state = trainer.init_state(params, jax.random.fold_in(key, 0))

    log(
        f"jaxdiff MNIST: preset '{config.preset}' on {jax.default_backend()} "
        f"({trainer.num_devices} device(s)); {config.model} U-Net with {n_params:,} parameters "
        f"({config.dtype}); {config.train_steps} steps of batch {config.batch_size}; "
        f"{_duration_estimate(config, preset, trainer, state)}; out: {out}"
    )

    ckpt = Checkpointer(
        out / "checkpoints",
        max_to_keep=config.keep_checkpoints,
        save_every=config.checkpoint_every or config.train_steps,  # 0: only at the end
    )
    with ckpt:
        state, restored = restore_latest(ckpt, state, config.resume)

        if main_process:
            _forward_figures(out, schedule, images, key)

        data = trainer.put_data({"x": images, "labels": labels} if num_classes else {"x": images})
        # The progress grid uses the final sampler's settings (so both share one compiled
        # loop when the shapes agree), except that DDPM over more than 100 steps is cut to 25.
        n_grid = min(64, config.num_samples)
        grid_labels = jnp.arange(n_grid) % 10 if num_classes else None
        grid_sampler, grid_steps = config.sampler, config.sample_steps
        if grid_sampler == "ddpm" and (grid_steps or config.num_timesteps) > 100:
            grid_steps = 25

        def sample_grid(step, st):
            result = sample(
                apply,
                local_copy(eval_params(st)),
                schedule,
                (n_grid, *images.shape[1:]),
                jax.random.fold_in(key, 2),
                sampler=grid_sampler,
                steps=grid_steps,
                labels=grid_labels,
                num_classes=num_classes,
                guidance_scale=guidance,
                prediction=config.prediction,
                clip_x0=1.0,
                chunk_size=SAMPLE_CHUNK,
            )
            if main_process:
                plotting.save_image_grid(
                    out / "progress" / f"samples_{step:07d}.png",
                    to_images(result.samples),
                    ncols=8,
                    title=f"EMA samples after {step} steps",
                )

        hooks = [(config.sample_every, sample_grid)] if config.sample_every else []
        state, records, train_seconds = train(
            trainer, state, data, config=config, out=out, ckpt=ckpt, cfg_dict=cfg_dict,
            restored=restored, hooks=hooks,
        )  # fmt: skip
    del data

    # Final samples (EMA parameters).
    final = _final_samples(
        config,
        apply,
        local_copy(eval_params(state)),
        schedule,
        images.shape[1:],
        key,
        num_classes,
        guidance,
    )
    metrics: dict = {
        "train_steps": config.train_steps,
        "batch_size": config.batch_size,
        "parameters": n_params,
        "train_seconds_this_run": round(train_seconds, 1),
        "steps_per_second": steps_per_second(records),
        "final_loss_mean_last_100": float(
            np.mean([r["loss"] for r in read_metrics(out / "metrics.jsonl")][-100:])
        )
        if main_process
        else math.nan,
        "sample_seconds": round(final["seconds"], 1),
        "sampler": config.sampler,
        "sample_steps": final["steps"],
        "dataset": config.dataset,
        "data_source": data_source,
    }
    if main_process:
        np.save(out / "samples.npy", final["samples"])
        if num_classes:
            np.save(out / "labels.npy", final["labels"])
        _final_figures(out, config, final, images)
        if config.evaluate and config.dataset != "mnist":
            metrics["evaluation_skipped"] = (
                f"the feature classifier of the Frechet distance knows MNIST digits, not "
                f"{config.dataset}"
            )
            log(f"evaluation skipped: {metrics['evaluation_skipped']}")
        elif config.evaluate:
            evaluation = _evaluate(config, final)
            if evaluation is not None:
                metrics["evaluation"] = evaluation
        metrics["total_seconds_this_run"] = round(time.perf_counter() - t_start, 1)
        write_json(out / "metrics.json", metrics)
        _write_report(out, config, metrics)
        log(f"done in {metrics['total_seconds_this_run'] / 60:.1f} min; see {out / 'report.md'}")
    return metrics


# Sustained throughput assumed for a duration estimate from FLOPs (no measured step time yet).
_ASSUMED_TFLOPS = 100.0


def _duration_estimate(config: MnistConfig, preset: Preset, trainer, state) -> str:
    """The printed duration estimate: measured per-step time where the preset has one, else
    the training FLOPs (XLA's count of one compiled step) at an assumed throughput."""
    if preset.seconds_per_step is not None and preset.fixed_seconds is not None:
        seconds = preset.fixed_seconds + preset.seconds_per_step * config.train_steps * (
            config.batch_size / preset.batch_size
        )
        machine = f"measured on the {preset.name} preset's machine"
        return f"expected duration ~{seconds / 60:.0f} min ({machine})"
    x = jax.ShapeDtypeStruct(
        (config.batch_size, config.image_size, config.image_size, 1), jnp.float32
    )
    batch = {"x": x}
    if config.class_conditional:
        batch["labels"] = jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)
    analysis = jax.jit(trainer.train_step).trace(state, batch).lower().cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per program
        analysis = analysis[0]
    flops = float(analysis["flops"])
    total = flops * config.train_steps
    seconds = total / (_ASSUMED_TFLOPS * 1e12)
    amount = f"{total / 1e15:.1f} PFLOP" if total >= 1e15 else f"{total / 1e12:.1f} TFLOP"
    duration = f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.1f} s"
    return (
        f"training is {amount} (XLA's count), ~{duration} at {_ASSUMED_TFLOPS:.0f} TFLOP/s "
        "sustained: an estimate, this preset's time is not measured yet"
    )


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


def _forward_figures(out: Path, schedule, images: np.ndarray, key) -> None:
    """Forward-noising grid with pixel histograms (the same 6 digits at growing t)."""
    ts = [0, 50, 100, 200, 400, 600, 800, schedule.num_steps - 1]
    ts = sorted({min(t, schedule.num_steps - 1) for t in ts})
    x0 = jnp.asarray(images[:6])
    noisy = []
    for t in ts:
        noise = jax.random.normal(jax.random.fold_in(key, 10_000 + t), x0.shape)
        noisy.append(np.asarray(q_sample(schedule, x0, jnp.full((6,), t), noise)))
    plotting.plot_forward_process(out / "forward_process.png", np.stack(noisy), ts)


def _final_samples(config, apply, params, schedule, shape, key, num_classes, guidance) -> dict:
    n = config.num_samples
    labels = (np.arange(n) % 10).astype(np.int32) if num_classes else None
    kwargs = dict(
        sampler=config.sampler,
        steps=config.sample_steps,
        num_classes=num_classes,
        guidance_scale=guidance,
        prediction=config.prediction,
        clip_x0=1.0,
    )
    ts, t_next = step_sequence(schedule, config.sampler, config.sample_steps)
    n_steps = len(ts)
    sample_key = jax.random.fold_in(key, 3)
    t0 = time.perf_counter()
    result = sample(
        apply,
        params,
        schedule,
        (n, *shape),
        sample_key,
        labels=None if labels is None else jnp.asarray(labels),
        chunk_size=SAMPLE_CHUNK,
        **kwargs,
    )
    samples = to_images(result.samples)
    seconds = time.perf_counter() - t0
    # The reverse process of the first 10 samples: sample n depends only on (key, n), so these
    # equal samples[:10]. At most 40 recorded steps keep the figure and the GIF small.
    record = sorted(set(np.linspace(0, n_steps - 1, min(n_steps, 40)).round().astype(int)))
    few = sample(
        apply,
        params,
        schedule,
        (10, *shape),
        sample_key,
        labels=None if labels is None else jnp.asarray(labels[:10]),
        record=record,
        **kwargs,
    )
    trajectory = to_images(few.trajectory)
    record_t = [int(t_next[j]) for j in record]
    return {
        "samples": samples,
        "labels": labels,
        "trajectory": trajectory,
        "trajectory_t": record_t,
        "seconds": seconds,
        "steps": n_steps,
    }


def _final_figures(out: Path, config: MnistConfig, final: dict, images: np.ndarray) -> None:
    samples = final["samples"]
    real = to_images(images[:64])
    plotting.plot_samples_vs_real(
        out / "samples_vs_real.png",
        samples[:64],
        real,
        title=f"{config.sampler} ({final['steps']} steps), EMA weights",
    )
    if final["labels"] is not None:
        # One row per digit: 10 samples of each class.
        order = np.concatenate([np.flatnonzero(final["labels"] == d)[:10] for d in range(10)])
        plotting.save_image_grid(
            out / "samples_by_class.png",
            samples[order],
            ncols=10,
            title=f"rows: digits 0-9, guidance w={config.guidance_scale}",
        )
    traj, ts = final["trajectory"], final["trajectory_t"]
    cols = sorted(set(np.linspace(0, len(ts) - 1, min(len(ts), 10)).round().astype(int)))
    plotting.plot_reverse_process(
        out / "reverse_process.png", traj[cols], [ts[c] for c in cols], n=8
    )
    plotting.plot_histogram_evolution(
        out / "reverse_histograms.png", traj[cols], [ts[c] for c in cols]
    )
    plotting.save_gif(out / "reverse_process.gif", traj, ncols=5)
    records = read_metrics(out / "metrics.jsonl")
    plotting.plot_loss_curves(
        out / "loss_curves.png",
        [r["step"] for r in records],
        [r["loss"] for r in records],
        window=50,
    )


def _evaluate(config: MnistConfig, final: dict) -> dict | None:
    from jaxdiff.evaluation import evaluate_samples

    try:
        return evaluate_samples(
            final["samples"],
            "mnist",
            labels=final["labels"],
            cache_dir=config.cache_dir,
            data_dir=config.data_dir,
            progress=config.progress,
        )
    except ValueError as e:  # e.g. too few samples for a covariance: report, don't lose the run
        log(f"evaluation skipped: {e}")
        return None


def _write_report(out: Path, config: MnistConfig, metrics: dict) -> None:
    sections = [
        command_section(PROG, f"Preset: {config.preset}."),
        (
            "Samples",
            "![samples vs real](samples_vs_real.png)"
            + ("\n\n![by class](samples_by_class.png)" if config.class_conditional else ""),
        ),
        ("Data", f"{config.dataset}, training split: {metrics['data_source']}."),
        training_section(metrics, skip=("dataset", "data_source", "evaluation_skipped")),
    ]
    if metrics.get("evaluation_skipped"):
        sections.append(("Evaluation", f"Skipped: {metrics['evaluation_skipped']}."))
    if metrics.get("evaluation"):
        sections.append(evaluation_section(metrics["evaluation"], "real data against real data"))
    sections.append(
        (
            "Processes",
            "![reverse process](reverse_process.png)\n\n"
            "![reverse histograms](reverse_histograms.png)\n\n"
            "![reverse GIF](reverse_process.gif)\n\n![forward process](forward_process.png)",
        )
    )
    title = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}[config.dataset]
    write_report(out / "report.md", f"{title} diffusion run", sections)


if __name__ == "__main__":
    sys.exit(run_main(MnistConfig, main, prog=PROG))
