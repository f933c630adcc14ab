"""The figures of ``python -m experiments.toy2d``: scatter plots of both processes, the GIF.

3-D point clouds (``swiss_roll_3d``) are drawn in their roll plane (x, z), plus one 3-D view
of the samples against the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.toy2d.config import SCATTER_FRAMES, Toy2dConfig
from experiments.toy2d.sampling import evenly
from jaxdiff import plotting
from jaxdiff.forward import q_sample
from jaxdiff.schedules import Schedule


def view(dim: int) -> list[int]:
    """The two coordinates drawn: the roll plane (x, z) of the 3-D swiss roll, else (x, y)."""
    return [0, 2] if dim == 3 else [0, 1]


def forward_states(schedule: Schedule, points: np.ndarray, ts: Sequence[int], key) -> np.ndarray:
    """q(x_t | x_0) of all points at each t in ``ts``, one fixed noise draw: ``(S, N, D)``."""
    x0 = jnp.asarray(points)
    noise = jax.random.normal(jax.random.fold_in(key, 5), x0.shape)
    return np.stack(
        [np.asarray(q_sample(schedule, x0, jnp.full((x0.shape[0],), t), noise)) for t in ts]
    )


def forward_figure(
    out: Path, config: Toy2dConfig, schedule: Schedule, points: np.ndarray, key
) -> None:
    """q(x_t) scatter at 10 timesteps (drawn before training, so a crash still leaves it)."""
    ts = evenly(schedule.num_steps, SCATTER_FRAMES)
    frames = forward_states(schedule, points, ts, key)
    plotting.plot_point_process(
        out / "forward_scatter.png",
        frames[..., view(points.shape[1])],
        ts,
        title=f"forward process q(x_t | x_0), {config.dataset}, "
        f"alphas_cumprod[-1] = {schedule.final_alpha_bar:.3g}",
    )


def process_figures(
    out: Path, config: Toy2dConfig, schedule: Schedule, points: np.ndarray, final: dict, key
) -> None:
    """The reverse-process scatter, and the GIF: the data noised, then the samples denoised.

    ``final`` is what :func:`experiments.toy2d.sampling.final_samples` returns.
    """
    plane = view(points.shape[1])
    frames, labels = final["scatter"]
    plotting.plot_point_process(
        out / "reverse_scatter.png",
        np.stack(frames)[..., plane],
        labels,
        title=f"reverse process ({config.sampler}, EMA weights)",
    )

    # GIF: the forward process of the data, then the reverse process of the samples.
    n_show = min(2000, points.shape[0], final["samples"].shape[0])
    fwd_t = evenly(schedule.num_steps, config.gif_frames)
    fwd = forward_states(schedule, points[:n_show], fwd_t, key)[..., plane]
    rev, rev_t = final["gif"]
    rev = [r[:n_show][:, plane] for r in rev]
    finite = [f for f in (*fwd, *rev) if np.isfinite(f).all()]
    lim = max(float(np.percentile(np.abs(f), 99.5)) for f in finite) * 1.1 if finite else 3.0
    gif_frames = scatter_frames(
        [points[:n_show][:, plane], *fwd, *rev],
        ["data x0"]
        + [f"forward  t={t}" for t in fwd_t]
        + [f"reverse  t={t}" if t >= 0 else "reverse  x0" for t in rev_t],
        lim,
    )
    plotting.save_gif(out / "forward_reverse.gif", gif_frames, scale=1, duration_ms=120)


def sample_figures(out: Path, config: Toy2dConfig, points: np.ndarray, samples: np.ndarray) -> None:
    """The samples beside the data (and, for a 3-D cloud, both in 3-D)."""
    plane = view(points.shape[1])
    scatter_panels(
        out / "samples_vs_data.png",
        {"data": points[:, plane], f"samples ({config.sampler})": samples[:, plane]},
        title=f"{config.dataset}: {samples.shape[0]} samples, EMA weights",
    )
    if points.shape[1] == 3:  # the roll itself, which the (x, z) view flattens
        plotting.plot_points_3d(
            out / "samples_vs_data_3d.png",
            {"data": points, f"samples ({config.sampler})": samples},
            title=f"{config.dataset} in 3-D (first 5,000 points of each)",
        )


def scatter_panels(path: Path, panels: Mapping[str, np.ndarray], *, title: str = "") -> Path:
    """Side-by-side scatter plots with shared limits (one panel per named point set)."""
    from matplotlib.figure import Figure

    lim = max(float(np.percentile(np.abs(p[:, :2]), 99.5)) for p in panels.values()) * 1.1
    fig = Figure(figsize=(3.2 * len(panels), 3.5), dpi=120)
    for k, (name, pts) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4, edgecolors="none")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def scatter_frames(frames: Sequence[np.ndarray], titles: Sequence[str], lim: float) -> np.ndarray:
    """Render scatter plots to RGB arrays ``(F, H, W, 3)`` in [0, 1] (GIF frames)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = []
    for pts, title in zip(frames, titles, strict=True):
        fig = Figure(figsize=(3.2, 3.4), dpi=80)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5, edgecolors="none")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
        canvas.draw()
        images.append(np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float32) / 255.0)
    return np.stack(images)
