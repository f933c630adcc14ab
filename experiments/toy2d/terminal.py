"""Where each schedule leaves the data at its last step, against where sampling starts.

The run's schedule is compared with its counterpart (the default against the tutorial's,
or both for any other schedule): q(x_T-1 | x_0) of the data under each, beside the
sampler's start N(0, I) (figures schedules.png and terminal_distribution.png, and the
numbers of report.md's table).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from experiments.toy2d.config import DEFAULT_BETA_END, TUTORIAL_BETAS, Toy2dConfig, schedule_name
from experiments.toy2d.figures import forward_states, scatter_panels, view
from jaxdiff import plotting
from jaxdiff.schedules import Schedule, make_schedule


def compared_schedules(config: Toy2dConfig, schedule: Schedule) -> dict[str, Schedule]:
    """The run's schedule, then the tutorial's and the default where the run's is neither."""
    tutorial = make_schedule(
        "sigmoid", 100, beta_start=TUTORIAL_BETAS[0], beta_end=TUTORIAL_BETAS[1]
    )
    default = make_schedule("sigmoid", 100, beta_start=TUTORIAL_BETAS[0], beta_end=DEFAULT_BETA_END)
    sigmoid_100 = config.schedule == "sigmoid" and config.num_timesteps == 100
    sigmoid_100 = sigmoid_100 and config.beta_start == TUTORIAL_BETAS[0]
    named = {f"this run: {schedule_name(config)}": schedule}
    if not (sigmoid_100 and config.beta_end == TUTORIAL_BETAS[1]):
        named["tutorial: sigmoid 1e-5..5e-3"] = tutorial
    if not (sigmoid_100 and config.beta_end == DEFAULT_BETA_END):
        named[f"default: sigmoid 1e-5..{DEFAULT_BETA_END}"] = default
    return named


def compare_terminal(
    out: Path, config: Toy2dConfig, schedule: Schedule, points: np.ndarray, key
) -> dict:
    """Draw schedules.png and terminal_distribution.png; return each schedule's numbers.

    Per schedule: ``alphas_cumprod[-1]``, the signal scale and noise std it leaves, the mean and
    std of q(x_T-1) over (at most) 2,000 points, and its point metrics against N(0, I) samples.
    """
    named = compared_schedules(config, schedule)
    plotting.plot_schedules(out / "schedules.png", named)

    from jaxdiff.metrics import point_metrics

    plane = view(points.shape[1])
    rng = np.random.default_rng(config.seed)
    x0 = points[: min(2000, points.shape[0])]
    prior = rng.standard_normal(x0.shape).astype(np.float32)
    panels, terminal = {}, {}
    for name, sch in named.items():
        x_last = forward_states(sch, x0, [sch.num_steps - 1], key)[0]
        abar = sch.final_alpha_bar
        panels[f"{name.split(':')[0]}: q(x_T-1), abar={abar:.3g}"] = x_last[:, plane]
        terminal[name] = {
            "alphas_cumprod_last": abar,
            "signal_scale": math.sqrt(abar),
            "noise_std": math.sqrt(1.0 - abar),
            "q_xT_mean": x_last.mean(0).tolist(),
            "q_xT_std": x_last.std(0).tolist(),
            **{f"{k}_vs_prior": v for k, v in point_metrics(x_last, prior).items()},
        }
    panels["prior N(0, I): where sampling starts"] = prior[:, plane]
    scatter_panels(
        out / "terminal_distribution.png",
        panels,
        title="the last forward step q(x_T-1 | x_0) against the sampler's start N(0, I)",
    )
    return terminal
