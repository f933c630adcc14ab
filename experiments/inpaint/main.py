"""``python -m experiments.inpaint``: inpaint MNIST test digits with a trained model."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import log, open_run_dir
from experiments.inpaint import report
from experiments.inpaint.config import InpaintConfig, make_masks, model_evaluations
from jaxdiff import data as jdata
from jaxdiff.models import count_params
from jaxdiff.outputs import write_json
from jaxdiff.runs import load_run
from jaxdiff.samplers import Guidance, Inpaint, Loop, sample, solver_from_flags
from jaxdiff.sharding import make_mesh


def main(config: InpaintConfig) -> dict:
    """Inpaint; return the metrics dict (also written to metrics.json)."""
    t_start = time.perf_counter()
    # Inputs first: a missing checkpoint or data, or a refused --out, fails before any work.
    try:
        run = load_run(config.checkpoint)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--checkpoint {config.checkpoint}: {e}") from e
    T, steps = run.schedule.num_steps, config.sample_steps
    if steps > T:
        raise ValueError(
            f"--sample-steps {steps} exceeds the checkpoint's {T} diffusion steps; lower it"
        )
    if config.jump_length > steps:
        raise ValueError(f"--jump-length {config.jump_length} exceeds the {steps} sampler steps")
    size, model = run.spec.image_size, run.config.get("model", run.spec.model)
    images, labels, data_source = jdata.load_mnist(
        "test", dataset=run.config.get("dataset", "mnist"), data_dir=config.data_dir,
        image_size=size, limit=config.num_images, return_source=True,
    )  # fmt: skip
    log(f"data: {data_source}")
    out = open_run_dir(
        config, dataclasses.asdict(config), ("resume", "overwrite"),
        reads={"--checkpoint": config.checkpoint},
    )  # fmt: skip
    guidance = run.config.get("guidance_scale", 0.0) if run.num_classes else 0.0
    # Classifier-free guidance evaluates the conditional and the null label in one call of 2B.
    evals = model_evaluations(steps, config.resample_jumps, config.jump_length)
    evals *= 2 if guidance else 1
    log(
        f"jaxdiff inpaint: {model} U-Net from {config.checkpoint} (step {run.step}); "
        f"{len(config.masks)} masks x {len(images)} test images; {config.sampler}, {steps} steps, "
        f"{config.resample_jumps} resampling jumps of {config.jump_length} "
        f"({evals} model evaluations per image); out: {out}"
    )

    # One batch: mask by mask, the same N test images each time.
    m, n = len(config.masks), len(images)
    masks = np.concatenate(
        [make_masks(k, n, size, config.random_fraction, config.seed) for k in config.masks]
    )
    known = np.tile(images, (m, 1, 1, 1))
    t0 = time.perf_counter()
    result = sample(
        run.apply, run.params, run.schedule, known.shape, jax.random.key(config.seed),
        solver=solver_from_flags(config.sampler, prediction=run.spec.train.prediction,
                                 clip_x0=1.0),
        steps=steps,
        guidance=Guidance(guidance, labels=jnp.asarray(np.tile(labels, m)),
                          num_classes=run.num_classes) if run.num_classes else None,
        inpaint=Inpaint(masks, known, resample_jumps=config.resample_jumps,
                        jump_length=config.jump_length),
        loop=Loop(chunk_size=250),
        mesh=make_mesh(),  # the batch split over all devices
    )  # fmt: skip
    raw = np.asarray(jax.device_get(result.samples))
    sample_seconds = time.perf_counter() - t0
    unit = jdata.unit_images
    arrays = dict(raw=raw, known=known, masks=masks, samples=unit(raw), originals=unit(known))
    np.save(out / "samples.npy", arrays["samples"])
    np.save(out / "masks.npy", masks)

    per_mask = report.mask_metrics(out, config, arrays, labels)
    exact_ok = all(
        v["known_max_abs_diff"] == 0.0 and v["known_max_abs_diff_samples_npy"] == 0.0
        for v in per_mask.values()
    )
    if not exact_ok:
        log("WARNING: some known pixels differ from the input; see metrics.json")
    report.inpaint_figure(
        out, config, arrays, f"{model} U-Net (step {run.step}), {config.sampler} {steps} steps, "
        f"{config.resample_jumps} resampling jumps",
    )  # fmt: skip
    conditioning = "unconditional"
    if run.num_classes:
        conditioning = f"conditioned on the true labels (guidance scale {guidance})"
    metrics = {
        "checkpoint": str(config.checkpoint), "checkpoint_step": run.step, "model": model,
        "parameters": count_params(run.params), "conditioning": conditioning,
        "image_size": size, "num_images": n, "labels": labels, "sampler": config.sampler,
        "sample_steps": steps, "resample_jumps": config.resample_jumps,
        "jump_length": config.jump_length, "model_evaluations_per_image": evals,
        "masks": per_mask, "known_pixels_exact": exact_ok,
        "sample_seconds": round(sample_seconds, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }  # fmt: skip
    write_json(out / "metrics.json", metrics)
    report.write_run_report(out, config, metrics)
    log(f"done in {metrics['total_seconds']:.0f} s; see {out / 'report.md'}")
    return metrics
