"""The figures of ``python -m experiments.forward``, one or two per demonstration, and the GIF."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.forward.config import ForwardConfig
from experiments.forward.mixture import GRID, NORMAL
from jaxdiff import plotting
from jaxdiff.forward import q_sample
from jaxdiff.schedules import Schedule


def iterative_vs_closed(
    path: Path, iterative: np.ndarray, closed: np.ndarray, ts: list[int], label: int
) -> Path:
    """Demo 1: one chain of each method at every t, over the pixel histograms of all chains."""
    from matplotlib.figure import Figure

    s = len(ts)
    fig = Figure(figsize=(1.6 * s, 5.4), dpi=120)
    gs = fig.add_gridspec(3, s, height_ratios=(1, 1, 1.1))
    grid = np.linspace(-4, 4, 200)
    for j, t in enumerate(ts):
        for row, (name, x) in enumerate((("iterative", iterative), ("closed form", closed))):
            ax = fig.add_subplot(gs[row, j])
            ax.imshow(np.clip((x[j, 0, ..., 0] + 1) / 2, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"t={t}", fontsize=8)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
        ax = fig.add_subplot(gs[2, j])
        kw = dict(bins=60, range=(-4, 4), density=True, histtype="step")
        ax.hist(iterative[j].ravel(), label="iterative", **kw)
        ax.hist(closed[j].ravel(), label="closed form", linestyle="--", **kw)
        ax.plot(grid, np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi), "k:", lw=0.8)
        ax.set_yticks([])
        ax.tick_params(labelsize=6)
        if j == 0:
            ax.legend(fontsize=5, loc="upper left")
    fig.suptitle(
        f"digit {label}: the iterative chain (DDPM eq. 2) and the closed form (eq. 4) at the same "
        f"t; bottom: pixel values over {iterative.shape[1]} chains (dotted: N(0, 1))",
        fontsize=9,
    )
    fig.savefig(path, bbox_inches="tight")
    return path


def progression(
    out: Path,
    config: ForwardConfig,
    schedules: dict[str, Schedule],
    images: np.ndarray,
    ts: list[int],
    key,
) -> np.ndarray:
    """Demo 2: q(x_t | x_0) of ``images`` at ``ts`` under each schedule; figures and the GIF.

    Returns the linear schedule's noisy images ``(S, N, H, W, 1)`` in data units.
    """
    x0 = jnp.asarray(images)
    noise = jax.random.normal(jax.random.fold_in(key, 3), x0.shape)  # one draw for every t
    result = None
    for name, sch in schedules.items():
        noisy = np.stack(
            [np.asarray(q_sample(sch, x0, jnp.full((len(images),), t), noise)) for t in ts]
        )
        plotting.plot_forward_process(out / f"forward_{name}.png", noisy, ts, n=len(images))
        if name == "linear":
            result = noisy
    # GIF of the linear and the cosine schedule side by side (rows: linear, then cosine).
    frame_t = sorted(
        {round(t) for t in np.linspace(0, config.num_timesteps - 1, config.gif_frames)}
    )
    frames = []
    for t in frame_t:
        row = [
            np.asarray(q_sample(sch, x0, jnp.full((len(images),), t), noise))
            for sch in schedules.values()
        ]
        frames.append(np.concatenate(row))
    frames = np.clip((np.stack(frames) + 1.0) / 2.0, 0.0, 1.0)
    plotting.save_gif(out / "forward_process.gif", frames, ncols=len(images), duration_ms=100)
    return result


def mixture_density(path: Path, curves: list[tuple]) -> Path:
    """Demo 4: histogram, KDE and exact density of q(x_t) at each shown t, against N(0, 1).

    ``curves`` holds ``(t, x_t, kde, exact)`` per t, from
    :func:`experiments.forward.mixture.noise_mixture`.
    """
    from matplotlib.figure import Figure

    s = len(curves)
    fig = Figure(figsize=(2.3 * s, 2.8), dpi=120)
    for j, (t, xt, kde, exact) in enumerate(curves):
        ax = fig.add_subplot(1, s, j + 1)
        ax.hist(xt, bins=80, range=(GRID[0], GRID[-1]), density=True, color="0.85")
        ax.plot(GRID, kde, color="tab:blue", lw=1.2, label="KDE")
        ax.plot(GRID, exact, color="tab:orange", lw=1, ls="--", label="exact q(x_t)")
        ax.plot(GRID, NORMAL, "k:", lw=1, label="N(0, 1)")
        ax.set_title(f"t={t}", fontsize=9)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        if j == 0:
            ax.legend(fontsize=6, loc="upper left")
    fig.suptitle("a 3-component Gaussian mixture under the forward process", fontsize=10, y=1.04)
    fig.savefig(path, bbox_inches="tight")
    return path


def mixture_convergence(path: Path, schedule: Schedule, tv: np.ndarray) -> Path:
    """Demo 4: distance ``tv`` of the exact q(x_t) to N(0, 1) at every t, with alpha-bar."""
    from matplotlib.figure import Figure

    abars = np.asarray(schedule.alphas_cumprod, np.float64)
    fig = Figure(figsize=(6, 3.5), dpi=120)
    ax = fig.add_subplot()
    ax.plot(np.arange(len(abars)), tv, label="TV(q(x_t), N(0, 1))")
    ax.plot(np.arange(len(abars)), abars, "--", label="alphas_cumprod[t]")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.legend()
    ax.set_title(f"mixture -> N(0, 1), {schedule.kind} schedule", fontsize=10)
    fig.savefig(path, bbox_inches="tight")
    return path
