"""sklearn's 8x8 digits (the 8x8 tutorial recipe): the improved denoiser, sample grids, GIF.

Run::

    python -m experiments.digits                               # writes runs/digits/
    python -m experiments.digits --model small --out runs/digits-small   # CPU-sized model
    python -m experiments.digits --resume                      # continue runs/digits/
    python -m experiments.digits --help                        # every option, with defaults

The recipe of the 8x8-digits tutorial: the 1,797 images scaled to [0, 1] (pixel / 16), the
"improved denoiser" U-Net (:func:`jaxdiff.models.improved_denoiser_8x8`, 9.2M parameters),
a linear schedule of 1000 steps (1e-4..0.02), AdamW with learning rate 2e-4 and weight decay
0.01, batch 32, gradient clipping at 1, 50 epochs (2,800 steps). Sampling uses the EMA
parameters (decay 0.995 with warm-up, matched to the run length) and DPM-Solver++
with 20 steps (``--sampler ddpm`` for the tutorial's 1000 ancestral steps).

The improved denoiser runs every layer at the full 8x8 resolution with up to 256 channels,
about 1.2 GFLOP per image: a GPU model. On this project's 2-core CPU the whole default run
took 71.8 min on 2026-12-01 (training 0.71 steps/s, 1,000 samples in 5.1 min; Frechet distance
22.3), and training ran at 0.37-0.43 steps/s before the matmul kernel gradients of
:mod:`jaxdiff.models.conv`, on a slower day of the same machine. ``--model small`` (0.6M
parameters, 2.8 steps/s) ran the whole recipe in 20 minutes there, to a Frechet distance of 34
(real digits 6.5, noise 389).

Outputs in ``--out`` (every experiment's contract): config.json, metrics.jsonl (one record per
training step), metrics.json (final numbers and the Frechet distance etc. in the feature space
of a small digits classifier), samples.npy (float32 ``(N, 8, 8, 1)`` in [0, 1]), PNG figures,
reverse_process.gif, checkpoints/ and report.md.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Literal

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
from jaxdiff.checkpoint import Checkpointer
from jaxdiff.forward import q_sample
from jaxdiff.loop import steps_per_second
from jaxdiff.models import UNet, count_params, improved_denoiser_8x8, split_model
from jaxdiff.outputs import read_metrics, write_json, write_report
from jaxdiff.samplers import SamplerName, sample, step_sequence
from jaxdiff.schedules import make_schedule
from jaxdiff.sharding import is_main_process
from jaxdiff.train import TrainConfig, Trainer, eval_params

PROG = "python -m experiments.digits"

#: Measured training speed (steps/s, batch 32) on this project's shared 2-core CPU, for the
#: printed duration estimate; jax 0.10.2, default steps per call. "improved": 0.71 measured on
#: 2026-12-01 for the whole default run (with the matmul kernel gradients of
#: jaxdiff.models.conv; 0.4 on 2026-11-23 before them, on a slower day of the same machine).
CPU_STEPS_PER_SECOND = {"improved": 0.7, "small": 2.8, "tiny": 20.0}


def unet_small_8x8(channels, image_size, num_classes=None, *, dtype=None, rngs):
    """0.6M parameters: two levels (32, 64 channels) at full 8x8 resolution, no attention."""
    return UNet(
        channels,
        image_size,
        base_channels=32,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        num_classes=num_classes,
        norm_groups=8,
        downsample=False,
        dtype=dtype,
        rngs=rngs,
    )


def unet_tiny_8x8(channels, image_size, num_classes=None, *, dtype=None, rngs):
    """One level of 8 channels (~10k parameters), for smoke tests: it compiles fast."""
    return UNet(
        channels,
        image_size,
        base_channels=8,
        channel_mults=(1,),
        num_res_blocks=1,
        attention_resolutions=(),
        mid_attention=False,
        num_classes=num_classes,
        norm_groups=4,
        downsample=False,
        dtype=dtype,
        rngs=rngs,
    )


MODELS = {"improved": improved_denoiser_8x8, "small": unet_small_8x8, "tiny": unet_tiny_8x8}


@dataclasses.dataclass(frozen=True)
class DigitsConfig:
    """Configuration of ``python -m experiments.digits`` (flags: ``--epochs 10`` ...)."""

    out: str = field("runs/digits", "output directory (config, metrics, samples, figures, ckpts)")
    seed: int = field(0, "PRNG seed of the model init, the training noise and the samples")
    model: Literal["improved", "small", "tiny"] = field(
        "improved", "U-Net: improved (the tutorial's, 9.2M params), small (0.6M), tiny (tests)"
    )
    epochs: int = field(50, "passes over the 1,797 images (ignored when --train-steps is given)")
    train_steps: int | None = field(None, "total training steps (default: epochs x batches)")
    batch_size: int = field(32, "batch size")
    learning_rate: float = field(2e-4, "AdamW learning rate")
    weight_decay: float = field(0.01, "AdamW weight decay")
    grad_clip: float = field(1.0, "clip gradients to this global norm")
    ema_decay: float = field(0.995, "EMA decay (with warm-up) of the parameters used to sample")
    schedule: Literal["linear", "cosine", "quadratic", "sigmoid"] = field(
        "linear", "beta schedule (the tutorial: linear 1e-4..0.02)"
    )
    num_timesteps: int = field(1000, "diffusion steps T")
    sampler: SamplerName = field("dpm++", "sampler for the final samples (the tutorial: ddpm)")
    sample_steps: int | None = field(
        None, "sampler steps (default: the sampler's, e.g. dpm++ 20, ddim 50, ddpm T)"
    )
    num_samples: int = field(1000, "final samples saved to samples.npy and evaluated")
    steps_per_call: int | None = field(
        None, "training steps per compiled call (K); default per backend, see jaxdiff.train"
    )
    checkpoint_every: int = field(560, "checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = field(3, "checkpoints to keep")
    evaluate: bool = field(True, "Frechet distance etc. with the digits feature classifier")
    cache_dir: str | None = field(None, "cache for the evaluation classifier (~/.cache/jaxdiff)")
    resume: bool = field(False, "continue the run in --out from its latest checkpoint")
    overwrite: bool = field(False, "delete an earlier run in --out and start again")
    progress: bool = field(True, "show progress bars")

    def __post_init__(self):
        for name in ("epochs", "batch_size", "num_samples", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        for name in ("train_steps", "sample_steps", "steps_per_call"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.batch_size > 1797:
            raise ValueError(f"--batch-size {self.batch_size} is larger than the 1797 images")
        if self.checkpoint_every < 0:
            raise ValueError(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if self.num_timesteps < 2:
            raise ValueError(f"--num-timesteps must be >= 2, got {self.num_timesteps}")
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
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other; pass one of them")


# Settings that may change between a run and its --resume (they do not change the trained model).
RESUMABLE = (
    "epochs", "train_steps", "sampler", "sample_steps", "num_samples", "evaluate", "cache_dir",
    "resume", "overwrite", "progress", "keep_checkpoints", "checkpoint_every", "steps_per_call",
)  # fmt: skip

#: Timesteps of the forward-process figure (of T = 1000; scaled to other T).
FORWARD_T = (0, 50, 100, 200, 400, 600, 800, 999)


def resolve(config: DigitsConfig, num_images: int = 1797) -> DigitsConfig:
    """Fill ``train_steps`` from the epochs (what config.json records)."""
    steps = config.train_steps or config.epochs * jdata.steps_per_epoch(
        num_images, config.batch_size
    )
    return dataclasses.replace(config, train_steps=steps)


def main(config: DigitsConfig) -> dict:
    """Run the experiment; return the final metrics dict (also written to metrics.json)."""
    t_start = time.perf_counter()
    images, _labels = jdata.load_digits(scale="unit")  # (1797, 8, 8, 1) in [0, 1]
    config = resolve(config, len(images))
    spe = jdata.steps_per_epoch(len(images), config.batch_size)
    cfg_dict = dataclasses.asdict(config)
    main_process = is_main_process()
    out = open_run_dir(config, cfg_dict, RESUMABLE)

    # The initialisers draw from an "rbg" key: on XLA:CPU every parameter shape compiles its own
    # initialiser, and a threefry one takes ~1 s to compile there (a tiny U-Net: 46 compiles,
    # ~35 s, against ~9 s with rbg). The values differ from a threefry init, not the recipe.
    model = MODELS[config.model](1, 8, rngs=nnx.Rngs(jax.random.key(config.seed, impl="rbg")))
    _graphdef, params, apply = split_model(model)
    n_params = count_params(params)
    schedule = make_schedule(config.schedule, config.num_timesteps)
    trainer = Trainer(
        apply,
        schedule,
        TrainConfig(
            learning_rate=config.learning_rate,
            optimizer="adamw",
            weight_decay=config.weight_decay,
            grad_clip_norm=config.grad_clip,
            ema_decay=config.ema_decay,
            steps_per_call=config.steps_per_call,
        ),
    )
    check_batch_divisible(config.batch_size, trainer)
    key = jax.random.key(config.seed)
    state = trainer.init_state(params, jax.random.fold_in(key, 0))
    estimate = ""
    if jax.default_backend() == "cpu":
        minutes = config.train_steps / CPU_STEPS_PER_SECOND[config.model] / 60
        estimate = f"; expected training time on a 2-core CPU ~{minutes:.0f} min"
    log(
        f"jaxdiff digits: {config.model} U-Net with {n_params:,} parameters on "
        f"{jax.default_backend()} ({trainer.num_devices} device(s)); {config.train_steps} steps "
        f"({config.train_steps / spe:.4g} epochs of {spe} batches of {config.batch_size})"
        f"{estimate}; out: {out}"
    )

    ckpt = Checkpointer(
        out / "checkpoints",
        max_to_keep=config.keep_checkpoints,
        save_every=config.checkpoint_every or config.train_steps,
    )
    with ckpt:
        state, restored = restore_latest(ckpt, state, config.resume)
        if main_process:
            _forward_figures(out, schedule, images, key)
        data = trainer.put_data({"x": images})
        state, records, train_seconds = train(
            trainer, state, data, config=config, out=out, ckpt=ckpt, cfg_dict=cfg_dict,
            restored=restored,
        )  # fmt: skip
    del data

    final = _final_samples(config, apply, eval_params(state), schedule, key)
    metrics: dict = {
        "model": config.model,
        "parameters": n_params,
        "train_steps": config.train_steps,
        "epochs": round(config.train_steps / spe, 3),
        "batch_size": config.batch_size,
        "train_seconds_this_run": round(train_seconds, 1),
        "steps_per_second": steps_per_second(records),
        "sampler": config.sampler,
        "sample_steps": final["steps"],
        "sample_seconds": round(final["seconds"], 1),
        "alphas_cumprod_last": schedule.final_alpha_bar,
    }
    if main_process:
        losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
        metrics["final_loss_mean_last_epoch"] = float(np.mean(losses[-spe:]))
        np.save(out / "samples.npy", final["samples"])
        _final_figures(out, config, final, images, spe)
        metrics["pixel_mean"] = {
            "samples": float(final["samples"].mean()),
            "data": float(images.mean()),
        }
        if config.evaluate:
            metrics["evaluation"] = _evaluate(config, final["samples"])
        metrics["total_seconds_this_run"] = round(time.perf_counter() - t_start, 1)
        write_json(out / "metrics.json", metrics)
        _write_report(out, config, metrics)
        log(f"done in {metrics['total_seconds_this_run'] / 60:.1f} min; see {out / 'report.md'}")
    return metrics


# --------------------------------------------------------------------------------------------------
# Sampling, figures, evaluation
# --------------------------------------------------------------------------------------------------


def _forward_figures(out: Path, schedule, images: np.ndarray, key) -> None:
    """Schedule curves and the forward-noising grid with pixel histograms."""
    T = schedule.num_steps
    plotting.plot_schedules(
        out / "schedules.png",
        {
            f"{schedule.kind} (this run)": schedule,
            **({"cosine": make_schedule("cosine", T)} if schedule.kind != "cosine" else {}),
            **({"linear": make_schedule("linear", T)} if schedule.kind != "linear" else {}),
        },
    )
    ts = sorted({min(T - 1, round(t * (T - 1) / 999)) for t in FORWARD_T})
    x0 = jnp.asarray(images[:6])
    noise = jax.random.normal(jax.random.fold_in(key, 10), x0.shape)
    noisy = [np.asarray(q_sample(schedule, x0, jnp.full((6,), t), noise)) for t in ts]
    # The digits live in [0, 1]: drawn black to white over that range (noise clipped for
    # display only); the histograms show the true values.
    plotting.plot_forward_process(
        out / "forward_process.png", np.stack(noisy), ts, value_range=(0.0, 1.0)
    )


def _final_samples(config: DigitsConfig, apply, params, schedule, key) -> dict:
    """``num_samples`` EMA samples with their reverse process at (up to) 40 steps."""
    ts, t_next = step_sequence(schedule, config.sampler, config.sample_steps)
    n_steps = len(ts)
    # 8x8 images are small: recording every sample's states costs ~10 MB for 1000 samples.
    record = sorted({int(i) for i in np.linspace(0, n_steps - 1, min(n_steps, 40)).round()})
    t0 = time.perf_counter()
    result = sample(
        apply,
        params,
        schedule,
        (config.num_samples, 8, 8, 1),
        jax.random.fold_in(key, 3),
        sampler=config.sampler,
        steps=config.sample_steps,
        clip_x0=1.0,
        record=record,
        chunk_size=250,
    )
    samples = np.clip(np.asarray(jax.device_get(result.samples), np.float32), 0.0, 1.0)
    seconds = time.perf_counter() - t0
    return {
        "samples": samples,
        "trajectory": np.asarray(jax.device_get(result.trajectory[:, :40]), np.float32),
        "trajectory_t": [int(t_next[j]) for j in record],
        "seconds": seconds,
        "steps": n_steps,
    }


def _final_figures(out: Path, config: DigitsConfig, final: dict, images: np.ndarray, spe: int):
    samples = final["samples"]
    plotting.save_image_grid(
        out / "samples_grid.png",
        samples[:40],
        ncols=8,
        title=f"{config.sampler} ({final['steps']} steps), EMA weights",
    )
    plotting.plot_samples_vs_real(
        out / "samples_vs_real.png",
        samples[:64],
        images[:64],
        title=f"{config.model} U-Net, {config.sampler} ({final['steps']} steps)",
    )
    traj, ts = final["trajectory"], final["trajectory_t"]
    cols = sorted({int(i) for i in np.linspace(0, len(ts) - 1, min(len(ts), 10)).round()})
    shown = np.clip(traj, 0.0, 1.0)
    plotting.plot_reverse_process(
        out / "reverse_process.png", shown[cols], [ts[c] for c in cols], n=8
    )
    # Unclipped values: the histograms go from N(0, 1) noise to the pixel values in [0, 1].
    plotting.plot_histogram_evolution(
        out / "histogram_evolution.png", traj[cols], [ts[c] for c in cols]
    )
    plotting.save_gif(out / "reverse_process.gif", shown, ncols=8, scale=6)
    records = read_metrics(out / "metrics.jsonl")
    plotting.plot_loss_curves(
        out / "loss_curves.png",
        [r["step"] for r in records],
        [r["loss"] for r in records],
        window=min(50, max(1, len(records) // 10)),
        epoch_size=spe,
    )


def _evaluate(config: DigitsConfig, samples: np.ndarray) -> dict | None:
    from jaxdiff.evaluation import evaluate_samples

    try:
        return evaluate_samples(
            samples, "digits", cache_dir=config.cache_dir, progress=config.progress
        )
    except ValueError as e:  # e.g. too few samples for a covariance: report, don't lose the run
        log(f"evaluation skipped: {e}")
        return None


def _write_report(out: Path, config: DigitsConfig, metrics: dict) -> None:
    sections = [
        command_section(PROG),
        (
            "Samples",
            "5 x 8 samples (EMA weights):\n\n![samples](samples_grid.png)\n\n"
            "Generated next to the training data:\n\n![samples vs real](samples_vs_real.png)",
        ),
        training_section(metrics),
    ]
    if metrics.get("evaluation"):
        sections.append(evaluation_section(metrics["evaluation"], "held-out real digits"))
    sections.append(
        (
            "Processes",
            "Schedule curves (beta, alpha, alpha-bar):\n\n![schedules](schedules.png)\n\n"
            "Forward process with pixel histograms (images drawn over the data's [0, 1] "
            "range, noise clipped for display):\n\n![forward](forward_process.png)\n\n"
            "Reverse process (rows: samples, columns: steps):\n\n"
            "![reverse process](reverse_process.png)\n\n"
            "Pixel-intensity histograms and statistics over the reverse process:\n\n"
            "![histogram evolution](histogram_evolution.png)\n\n"
            "![reverse GIF](reverse_process.gif)",
        )
    )
    write_report(out / "report.md", "8x8 digits diffusion run", sections)


if __name__ == "__main__":
    sys.exit(run_main(DigitsConfig, main, prog=PROG))
