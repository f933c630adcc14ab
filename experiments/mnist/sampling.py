"""The MNIST run's samples: the progress grids while training and the final samples."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import data as jdata
from jaxdiff import plotting
from jaxdiff.samplers import Guidance, Loop, sample, solver_from_flags, step_sequence
from jaxdiff.sharding import gather, is_main_process
from jaxdiff.train import eval_params

SAMPLE_CHUNK = 250  # samples per compiled sampling call (bounds memory)
GRID = 64  # samples in each progress grid


to_images = jdata.unit_images  # sampler output -> float32 [0, 1], as samples.npy stores it


def _options(config) -> dict:
    """The keyword arguments of :func:`jaxdiff.sample` that the run's config decides (the
    solver from ``--sampler`` and ``--prediction``; guidance is per call, with its labels)."""
    return dict(
        solver=solver_from_flags(config.sampler, prediction=config.prediction, clip_x0=1.0),
        steps=config.sample_steps,
    )


def _guidance(config, num_classes: int | None, labels) -> Guidance | None:
    """``--guidance-scale`` and the labels of a class-conditional run; None if unconditional."""
    if not num_classes:
        return None
    return Guidance(config.guidance_scale, labels=labels, num_classes=num_classes)


def progress_grid_hook(
    config, apply, schedule, shape, key, num_classes, out: Path, mesh
) -> Callable:
    """``hook(step, state)`` that saves ``out/progress/samples_STEP.png`` from the EMA weights
    (class-conditional: 60 samples, one column per digit), sampled over ``mesh``'s devices.

    The grid uses the final sampler's settings (so both share one compiled loop when the shapes
    agree), except that DDPM over more than 100 steps is cut to 25.
    """
    n = min(GRID, config.num_samples)
    ncols = 8
    if num_classes:  # one column per digit
        n, ncols = n - n % 10 or n, 10
    options = _options(config)
    if config.sampler == "ddpm" and (options["steps"] or config.num_timesteps) > 100:
        options["steps"] = 25
    guidance = _guidance(config, num_classes, jnp.arange(n) % 10 if num_classes else None)

    def hook(step: int, state) -> None:
        result = sample(
            apply, eval_params(state), schedule, (n, *shape), jax.random.fold_in(key, 2),
            guidance=guidance, loop=Loop(chunk_size=SAMPLE_CHUNK), mesh=mesh, **options,
        )  # fmt: skip
        images = to_images(gather(result.samples))  # every process takes part
        if is_main_process():
            plotting.save_image_grid(
                out / "progress" / f"samples_{step:07d}.png",
                images,
                ncols=ncols,
                title=f"EMA samples after {step} steps",
            )

    return hook


def final_samples(config, apply, params, schedule, shape, key, num_classes, mesh) -> dict:
    """``config.num_samples`` samples (labels cycling 0-9 when conditional) and the reverse
    process of the first 10 (or all, if fewer): ``{"samples", "labels", "trajectory",
    "trajectory_t", "seconds", "steps"}``, images float32 in [0, 1], in every process.

    The batch is split over ``mesh``'s devices (all processes' in a multi-process run)."""
    n = config.num_samples
    labels = (np.arange(n) % 10).astype(np.int32) if num_classes else None
    options = _options(config)
    ts, t_next = step_sequence(schedule, config.sampler, config.sample_steps)
    n_steps = len(ts)
    sample_key = jax.random.fold_in(key, 3)
    t0 = time.perf_counter()
    result = sample(
        apply, params, schedule, (n, *shape), sample_key,
        guidance=_guidance(config, num_classes, None if labels is None else jnp.asarray(labels)),
        loop=Loop(chunk_size=SAMPLE_CHUNK), mesh=mesh, **options,
    )  # fmt: skip
    samples = to_images(gather(result.samples))
    seconds = time.perf_counter() - t0
    # Sample n depends only on (key, n), so these equal samples[:few]. At most 40 recorded steps
    # keep the figure and the GIF small.
    few = min(10, n)
    record = sorted(set(np.linspace(0, n_steps - 1, min(n_steps, 40)).round().astype(int)))
    few_labels = None if labels is None else jnp.asarray(labels[:few])
    traced = sample(
        apply, params, schedule, (few, *shape), sample_key,
        guidance=_guidance(config, num_classes, few_labels), record=record, mesh=mesh, **options,
    )  # fmt: skip
    return {
        "samples": samples,
        "labels": labels,
        "trajectory": to_images(gather(traced.trajectory)),
        "trajectory_t": [int(t_next[j]) for j in record],
        "seconds": seconds,
        "steps": n_steps,
    }
