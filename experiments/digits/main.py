"""``python -m experiments.digits``: the 8x8-digits tutorial's recipe, end to end."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from experiments._common import (
    check_batch_divisible,
    log,
    open_run_dir,
    restore_latest,
    train,
)
from experiments._objective import ABSENT, resolve_sigma_data, run_loss
from experiments.digits import report
from experiments.digits.config import (
    CPU_STEPS_PER_SECOND,
    RESUMABLE,
    DigitsConfig,
    model_spec,
    resolve,
)
from jaxdiff import data as jdata
from jaxdiff.checkpoint import Checkpointer
from jaxdiff.loop import steps_per_second
from jaxdiff.models import count_params
from jaxdiff.outputs import read_metrics, write_json
from jaxdiff.runs import SPEC_KEY
from jaxdiff.sharding import is_main_process
from jaxdiff.train import Trainer, eval_params


def main(config: DigitsConfig) -> dict:
    """Run the experiment; return the final metrics dict (also written to metrics.json)."""
    t_start = time.perf_counter()
    images, _labels = jdata.load_digits(scale="unit")  # (1797, 8, 8, 1) in [0, 1]
    config = resolve_sigma_data(resolve(config, len(images)), images)
    spe = jdata.steps_per_epoch(len(images), config.batch_size)
    spec = model_spec(config)
    cfg_dict = {**dataclasses.asdict(config), SPEC_KEY: spec.to_json()}
    out = open_run_dir(
        config, cfg_dict, RESUMABLE, derived=(SPEC_KEY,), tunable=("learning_rate", "grad_clip"),
        absent=ABSENT,
    )  # fmt: skip

    apply, params, schedule = spec.build()
    n_params = count_params(params)
    loss = run_loss(config, schedule, spec.train, apply)
    trainer = Trainer(apply, schedule, spec.train, loss=loss)
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
        f"({config.train_steps / spe:.4g} epochs of {spe} batches of {config.batch_size}); "
        f"objective {config.objective}{estimate}; out: {out}"
    )

    ckpt = Checkpointer(
        out / "checkpoints",
        max_to_keep=config.keep_checkpoints,
        save_every=config.checkpoint_every or config.train_steps,
    )
    with ckpt:
        state, restored = restore_latest(ckpt, state, config.resume)
        if is_main_process() and config.objective == "ddpm":  # the schedule's forward process
            report.forward_figures(out, schedule, images, key)
        data = trainer.put_data({"x": images})
        state, records, train_seconds = train(
            trainer, state, data, config=config, out=out, ckpt=ckpt, cfg_dict=cfg_dict,
            restored=restored,
        )  # fmt: skip
    del data
    if config.num_samples == 0:
        return report.train_only(out, config, n_params, spe, records, train_seconds, t_start)

    # Samples from the EMA weights, split over every device; the main process writes.
    final = report.final_samples(config, apply, eval_params(state), schedule, key, trainer.mesh)
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
    if not is_main_process():
        return metrics
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    metrics["final_loss_mean_last_epoch"] = float(np.mean(losses[-spe:]))
    np.save(out / "samples.npy", final["samples"])
    report.final_figures(out, config, final, images, spe)
    metrics["pixel_mean"] = {
        "samples": float(final["samples"].mean()),
        "data": float(images.mean()),
    }
    if config.evaluate:
        metrics["evaluation"] = report.evaluate(config, final["samples"])
    metrics["total_seconds_this_run"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "metrics.json", metrics)
    report.write_run_report(out, config, metrics)
    log(f"done in {metrics['total_seconds_this_run'] / 60:.1f} min; see {out / 'report.md'}")
    return metrics
