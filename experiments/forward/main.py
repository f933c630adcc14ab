"""The run of ``python -m experiments.forward``: the four demonstrations, metrics, report."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from experiments._common import log, open_run_dir
from experiments.forward import chains, figures, mixture
from experiments.forward.config import ForwardConfig, build_schedule, show_timesteps
from experiments.forward.report import write_report
from jaxdiff import data as jdata
from jaxdiff import plotting
from jaxdiff.outputs import MetricsLog, write_json


def main(config: ForwardConfig) -> dict:
    """Run the demonstrations; return the metrics dict (also written to metrics.json)."""
    t_start = time.perf_counter()
    # Inputs first: missing data or a refused --out must fail before any work.
    n_images = max(config.digit_index + 1, config.num_digits)
    images, labels, data_source = jdata.load_mnist(
        "test", data_dir=config.data_dir, limit=n_images, return_source=True
    )
    log(f"data: {data_source}")
    if config.digit_index >= len(images):
        raise ValueError(
            f"--digit-index {config.digit_index} is beyond the {len(images)} MNIST test images"
        )
    out = open_run_dir(config, dataclasses.asdict(config), ("resume", "overwrite"))
    key = jax.random.key(config.seed)
    schedule = build_schedule(config.schedule, config.num_timesteps)
    schedules = {
        "linear": build_schedule("linear", config.num_timesteps),
        "cosine": build_schedule("cosine", config.num_timesteps),
    }
    ts = show_timesteps(config.num_timesteps)
    log(f"jaxdiff forward: {schedule!r}; timesteps {ts}; out: {out}")

    metrics: dict = {
        "schedule": repr(schedule),
        "timesteps": ts,
        "alphas_cumprod_last": {k: s.final_alpha_bar for k, s in schedules.items()}
        | {config.schedule: schedule.final_alpha_bar},
    }
    with MetricsLog(out / "metrics.jsonl") as metrics_log:
        # 1. One digit noised by the iterative chain and by the closed form, many times each.
        digit, label = images[config.digit_index], int(labels[config.digit_index])
        iterative, closed = chains.sample_both(config, schedule, digit, ts, key)
        metrics["iterative_vs_closed_form"] = chains.compare_moments(
            config, schedule, digit, label, ts, iterative, closed, metrics_log
        )
        figures.iterative_vs_closed(
            out / "iterative_vs_closed_form.png", iterative, closed, ts, label
        )
        # 2. A few digits noised under the linear and the cosine schedule, and the GIF.
        noisy = figures.progression(out, config, schedules, images[: config.num_digits], ts, key)
        # 3. The two schedules themselves.
        plotting.plot_schedules(out / "schedules.png", schedules)
        # 4. A 1-D Gaussian mixture converging to N(0, 1).
        metrics["mixture"], curves, last = mixture.noise_mixture(
            config, schedule, ts, key, metrics_log
        )
        np.save(out / "samples.npy", last.astype(np.float32)[:, None])
        figures.mixture_density(out / "mixture_density.png", curves)
        figures.mixture_convergence(
            out / "mixture_convergence.png", schedule, mixture.tv_to_normal(schedule)
        )
    np.save(out / "noisy_digits.npy", noisy)
    metrics["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "metrics.json", metrics)
    write_report(out, config, metrics)
    log(f"done in {metrics['total_seconds']:.0f} s; see {out / 'report.md'}")
    return metrics
