"""The final samples of ``python -m experiments.toy2d``, with the states the figures show."""

from __future__ import annotations

import time

import jax
import numpy as np

from experiments.toy2d.config import SCATTER_FRAMES, Toy2dConfig
from jaxdiff.samplers import Loop, sample, solver_from_flags, step_sequence
from jaxdiff.schedules import Schedule
from jaxdiff.sharding import gather


def evenly(n: int, k: int) -> list[int]:
    """``k`` (or fewer, distinct) indices spread evenly over ``0..n-1``, both ends included."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, k)).round()})


def final_samples(
    config: Toy2dConfig, apply, params, schedule: Schedule, dim: int, key, mesh
) -> dict:
    """``num_samples`` points from the EMA model, with the states for the figures and the GIF,
    sampled over ``mesh``'s devices (all processes' in a multi-process run), in every process.

    Returns ``samples`` (float32 ``(N, D)``), ``seconds`` and ``steps`` of the sampler, and
    ``scatter`` and ``gif``: each ``(states, timestep labels)``, from x_T to x_0.
    """
    ts, t_next = step_sequence(schedule, config.sampler, config.sample_steps)
    n_steps = len(ts)
    # Frames: x_T itself, then the state after the recorded steps (the last one is x0).
    scatter = evenly(n_steps + 1, SCATTER_FRAMES)
    gif = evenly(n_steps + 1, config.gif_frames + 1)
    record = sorted({i - 1 for i in scatter + gif if i > 0})
    x_T = jax.random.normal(jax.random.fold_in(key, 3), (config.num_samples, dim))
    t0 = time.perf_counter()
    result = sample(
        apply,
        params,
        schedule,
        (config.num_samples, dim),
        jax.random.fold_in(key, 4),
        solver=solver_from_flags(config.sampler, variance=config.variance),
        steps=config.sample_steps,
        x_T=x_T,
        record=record,
        loop=Loop(steps_per_call=None),  # one scan: an MLP runs fine in a rolled loop
        mesh=mesh,
    )
    samples, traj = gather((result.samples, result.trajectory))
    samples, traj = samples.astype(np.float32), traj.astype(np.float32)
    seconds = time.perf_counter() - t0
    states = {0: np.asarray(x_T, np.float32)}
    for j, r in enumerate(record):
        states[r + 1] = traj[j]
    labels = {0: int(ts[0])} | {r + 1: int(t_next[r]) for r in record}
    return {
        "samples": samples,
        "seconds": seconds,
        "steps": n_steps,
        "scatter": ([states[i] for i in scatter], [labels[i] for i in scatter]),
        "gif": ([states[i] for i in gif], [labels[i] for i in gif]),
    }


def sample_statistics(points: np.ndarray, samples: np.ndarray) -> dict:
    """Per-coordinate mean and std of the data and the samples, and the non-finite samples."""
    return {
        "data_mean": points.mean(0).tolist(),
        "sample_mean": samples.mean(0).tolist(),
        "data_std": points.std(0).tolist(),
        "sample_std": samples.std(0).tolist(),
        "non_finite_samples": int((~np.isfinite(samples)).any(axis=1).sum()),
    }
