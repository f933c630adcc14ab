"""The MNIST run's figures, evaluation and report.md."""

from __future__ import annotations

import math
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
from experiments.mnist.config import PROG, MnistConfig
from experiments.mnist.sampling import to_images
from jaxdiff import plotting
from jaxdiff.forward import q_sample
from jaxdiff.loop import steps_per_second
from jaxdiff.models import count_params
from jaxdiff.outputs import read_metrics, write_json, write_report
from jaxdiff.sharding import is_main_process


def forward_figures(out: Path, schedule, images: np.ndarray, key) -> None:
    """Forward-noising grid with pixel histograms (the same 6 digits at growing t)."""
    ts = [0, 50, 100, 200, 400, 600, 800, schedule.num_steps - 1]
    ts = sorted({min(t, schedule.num_steps - 1) for t in ts})
    x0 = jnp.asarray(images[:6])
    noisy = []
    for t in ts:
        noise = jax.random.normal(jax.random.fold_in(key, 10_000 + t), x0.shape)
        noisy.append(np.asarray(q_sample(schedule, x0, jnp.full((6,), t), noise)))
    plotting.plot_forward_process(out / "forward_process.png", np.stack(noisy), ts)


def final_figures(out: Path, config: MnistConfig, final: dict, images: np.ndarray) -> None:
    """Samples against real digits (and by class), the reverse process, the loss curve."""
    samples = final["samples"]
    plotting.plot_samples_vs_real(
        out / "samples_vs_real.png",
        samples[:64],
        to_images(images[:64]),
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
    shown_t = [ts[c] for c in cols]
    plotting.plot_reverse_process(out / "reverse_process.png", traj[cols], shown_t, n=8)
    plotting.plot_histogram_evolution(out / "reverse_histograms.png", traj[cols], shown_t)
    plotting.save_gif(out / "reverse_process.gif", traj, ncols=5)
    loss_figure(out, max_window=50)


def evaluate(config: MnistConfig, final: dict) -> dict | None:
    """Frechet distance and classifier scores of the final samples (None: not computable)."""
    return evaluate_or_skip(
        final["samples"], "mnist", labels=final["labels"], cache_dir=config.cache_dir,
        data_dir=config.data_dir, progress=config.progress,
    )  # fmt: skip


def write_run_report(out: Path, config: MnistConfig, metrics: dict) -> None:
    """``out/report.md``: the command, the samples, data, training and evaluation numbers
    (``--num-samples 0``: the command, data and training only)."""
    title = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}[config.dataset]
    if config.num_samples == 0:
        sections = [
            command_section(PROG, f"Preset: {config.preset}. Trained only (no samples)."),
            ("Data", f"{config.dataset}, training split: {metrics['data_source']}."),
            training_section(metrics, skip=("dataset", "data_source")),
        ]
        write_report(out / "report.md", f"{title} diffusion run ({config.objective})", sections)
        return
    samples = "![samples vs real](samples_vs_real.png)"
    if config.class_conditional:
        samples += "\n\n![by class](samples_by_class.png)"
    sections = [
        command_section(PROG, f"Preset: {config.preset}."),
        ("Samples", samples),
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
    write_report(out / "report.md", f"{title} diffusion run", sections)


def train_only(out, config: MnistConfig, params, records, train_seconds, data_source, t_start):
    """The metrics, loss curve and report of a run without samples (``--num-samples 0``)."""
    metrics: dict = {
        "objective": config.objective,
        "train_steps": config.train_steps,
        "batch_size": config.batch_size,
        "parameters": count_params(params),
        "train_seconds_this_run": round(train_seconds, 1),
        "steps_per_second": steps_per_second(records),
        "final_loss_mean_last_100": math.nan,
        "dataset": config.dataset,
        "data_source": data_source,
    }
    if not is_main_process():
        return metrics
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    metrics["final_loss_mean_last_100"] = float(np.mean(losses[-100:]))
    loss_figure(out, max_window=50)
    metrics["total_seconds_this_run"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "metrics.json", metrics)
    write_run_report(out, config, metrics)
    log(f"done (trained only) in {metrics['total_seconds_this_run'] / 60:.1f} min; see {out}")
    return metrics
