"""The digits run's samples, figures, evaluation and report.md."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import (
    command_section,
    evaluate_or_skip,
    evaluation_section,
    log,
    loss_figure,
    training_section,
)
from experiments.digits.config import FORWARD_T, PROG, DigitsConfig
from jaxdiff import plotting
from jaxdiff.forward import q_sample
from jaxdiff.loop import steps_per_second
from jaxdiff.outputs import read_metrics, write_json, write_report
from jaxdiff.samplers import Loop, sample, solver_from_flags, step_sequence
from jaxdiff.schedules import make_schedule
from jaxdiff.sharding import gather, is_main_process


def forward_figures(out: Path, schedule, images: np.ndarray, key) -> None:
    """Schedule curves and the forward-noising grid with pixel histograms."""
    T = schedule.num_steps
    others = {k: make_schedule(k, T) for k in ("cosine", "linear") if k != schedule.kind}
    plotting.plot_schedules(
        out / "schedules.png", {f"{schedule.kind} (this run)": schedule, **others}
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


def final_samples(config: DigitsConfig, apply, params, schedule, key, mesh) -> dict:
    """``num_samples`` EMA samples with their reverse process at (up to) 40 steps, sampled over
    ``mesh``'s devices (all processes' in a multi-process run), in every process."""
    ts, t_next = step_sequence(schedule, config.sampler, config.sample_steps)
    n_steps = len(ts)
    # 8x8 images are small: recording every sample's states costs ~10 MB for 1000 samples.
    record = sorted({int(i) for i in np.linspace(0, n_steps - 1, min(n_steps, 40)).round()})
    t0 = time.perf_counter()
    result = sample(
        apply, params, schedule, (config.num_samples, 8, 8, 1), jax.random.fold_in(key, 3),
        solver=solver_from_flags(config.sampler, clip_x0=1.0), steps=config.sample_steps,
        record=record, loop=Loop(chunk_size=250), mesh=mesh,
    )  # fmt: skip
    samples, trajectory = gather((result.samples, result.trajectory))
    return {
        "samples": np.clip(samples.astype(np.float32), 0.0, 1.0),
        "trajectory": trajectory[:, :40].astype(np.float32),
        "trajectory_t": [int(t_next[j]) for j in record],
        "seconds": time.perf_counter() - t0,
        "steps": n_steps,
    }


def final_figures(out: Path, config: DigitsConfig, final: dict, images: np.ndarray, spe: int):
    """Sample grids, the reverse process (figure, histograms, GIF) and the loss curve."""
    samples, title = final["samples"], f"{config.sampler} ({final['steps']} steps)"
    plotting.save_image_grid(
        out / "samples_grid.png", samples[:40], ncols=8, title=f"{title}, EMA weights"
    )
    plotting.plot_samples_vs_real(
        out / "samples_vs_real.png",
        samples[:64],
        images[:64],
        title=f"{config.model} U-Net, {title}",
    )
    traj, ts = final["trajectory"], final["trajectory_t"]
    cols = sorted({int(i) for i in np.linspace(0, len(ts) - 1, min(len(ts), 10)).round()})
    shown, shown_t = np.clip(traj, 0.0, 1.0), [ts[c] for c in cols]
    plotting.plot_reverse_process(out / "reverse_process.png", shown[cols], shown_t, n=8)
    # Unclipped values: the histograms go from N(0, 1) noise to the pixel values in [0, 1].
    plotting.plot_histogram_evolution(out / "histogram_evolution.png", traj[cols], shown_t)
    plotting.save_gif(out / "reverse_process.gif", shown, ncols=8, scale=6)
    loss_figure(out, max_window=50, epoch_size=spe)


def evaluate(config: DigitsConfig, samples: np.ndarray) -> dict | None:
    """Frechet distance etc. against held-out digits (None: not computable)."""
    return evaluate_or_skip(samples, "digits", cache_dir=config.cache_dir, progress=config.progress)


def write_run_report(out: Path, config: DigitsConfig, metrics: dict) -> None:
    """``out/report.md``: the command, samples, training and evaluation numbers, processes
    (``--num-samples 0``: the command and training only)."""
    if config.num_samples == 0:
        sections = [command_section(PROG, "Trained only (no samples)."), training_section(metrics)]
        title = f"8x8 digits diffusion run ({config.objective}, trained only)"
        write_report(out / "report.md", title, sections)
        return
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


def train_only(out, config: DigitsConfig, n_params, spe, records, train_seconds, t_start) -> dict:
    """The metrics, loss curve and report of a run without samples (``--num-samples 0``)."""
    metrics: dict = {
        "model": config.model,
        "objective": config.objective,
        "parameters": n_params,
        "train_steps": config.train_steps,
        "epochs": round(config.train_steps / spe, 3),
        "batch_size": config.batch_size,
        "train_seconds_this_run": round(train_seconds, 1),
        "steps_per_second": steps_per_second(records),
    }
    if not is_main_process():
        return metrics
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    metrics["final_loss_mean_last_epoch"] = float(np.mean(losses[-spe:]))
    loss_figure(out, max_window=50, epoch_size=spe)
    metrics["total_seconds_this_run"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "metrics.json", metrics)
    write_run_report(out, config, metrics)
    log(f"done (trained only) in {metrics['total_seconds_this_run'] / 60:.1f} min; see {out}")
    return metrics
