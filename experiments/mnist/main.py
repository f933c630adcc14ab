"""``python -m experiments.mnist``: train a denoiser on MNIST, sample it, measure it, report."""

from __future__ import annotations

import dataclasses
import math
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
from experiments.mnist import report
from experiments.mnist.config import (
    RESUMABLE,
    MnistConfig,
    fit_batch_to_devices,
    model_spec,
    resolve,
)
from experiments.mnist.estimate import duration_estimate
from experiments.mnist.sampling import final_samples, progress_grid_hook
from jaxdiff import data as jdata
from jaxdiff.checkpoint import Checkpointer
from jaxdiff.loop import steps_per_second
from jaxdiff.models import count_params
from jaxdiff.outputs import read_metrics, write_json
from jaxdiff.runs import SPEC_KEY
from jaxdiff.sharding import is_main_process
from jaxdiff.train import Trainer, eval_params


def main(config: MnistConfig) -> dict:
    """Run the experiment; return the final metrics dict (also written to metrics.json)."""
    batch_named = config.batch_size is not None
    config, preset = resolve(config)
    config = fit_batch_to_devices(config, batch_named, jax.device_count())
    t_start = time.perf_counter()
    spec = model_spec(config)
    num_classes = spec.num_classes

    # Inputs first: missing data or a refused --out must fail before any work.
    images, labels, data_source = jdata.load_mnist(
        "train", dataset=config.dataset, data_dir=config.data_dir, image_size=config.image_size,
        limit=config.train_limit, progress=config.progress, return_source=True,
    )  # fmt: skip
    log(f"data: {data_source}")
    if len(images) < config.batch_size:
        raise ValueError(
            f"--batch-size {config.batch_size} is larger than the {len(images)} training images; "
            "lower --batch-size or raise --train-limit"
        )
    config = resolve_sigma_data(config, images)
    cfg_dict = {**dataclasses.asdict(config), SPEC_KEY: spec.to_json()}
    out = open_run_dir(
        config, cfg_dict, RESUMABLE, derived=(SPEC_KEY,), tunable=("learning_rate",),
        absent=ABSENT,
    )  # fmt: skip

    # Model, schedule, objective, compiled step.
    apply, params, schedule = spec.build()
    loss = run_loss(config, schedule, spec.train, apply)
    trainer = Trainer(apply, schedule, spec.train, loss=loss)
    check_batch_divisible(config.batch_size, trainer)
    key = jax.random.PRNGKey(config.seed)
    state = trainer.init_state(params, jax.random.fold_in(key, 0))
    log(
        f"jaxdiff MNIST: preset '{config.preset}' on {jax.default_backend()} "
        f"({trainer.num_devices} device(s)); {config.model} model with {count_params(params):,} "
        f"parameters ({config.dtype} compute); {config.train_steps} steps of batch "
        f"{config.batch_size}; objective {config.objective}; "
        f"{duration_estimate(config, preset, trainer, state)}; out: {out}"
    )

    ckpt = Checkpointer(
        out / "checkpoints",
        max_to_keep=config.keep_checkpoints,
        save_every=config.checkpoint_every or config.train_steps,  # 0: only at the end
    )
    with ckpt:
        state, restored = restore_latest(ckpt, state, config.resume)
        if is_main_process() and config.objective == "ddpm":  # the schedule's forward process
            report.forward_figures(out, schedule, images, key)
        data = trainer.put_data({"x": images, "labels": labels} if num_classes else {"x": images})
        grid = progress_grid_hook(
            config, apply, schedule, images.shape[1:], key, num_classes, out, trainer.mesh
        )
        hooks = [(config.sample_every, grid)] if config.sample_every else []
        state, records, train_seconds = train(
            trainer, state, data, config=config, out=out, ckpt=ckpt, cfg_dict=cfg_dict,
            restored=restored, hooks=hooks,
        )  # fmt: skip
    del data
    if config.num_samples == 0:
        return report.train_only(out, config, params, records, train_seconds, data_source, t_start)

    # Final samples (EMA parameters) split over every device; process 0 writes the files.
    params = eval_params(state)
    final = final_samples(
        config, apply, params, schedule, images.shape[1:], key, num_classes, trainer.mesh
    )
    metrics: dict = {
        "train_steps": config.train_steps,
        "batch_size": config.batch_size,
        "parameters": count_params(params),
        "train_seconds_this_run": round(train_seconds, 1),
        "steps_per_second": steps_per_second(records),
        "final_loss_mean_last_100": math.nan,
        "sample_seconds": round(final["seconds"], 1),
        "sampler": config.sampler,
        "sample_steps": final["steps"],
        "dataset": config.dataset,
        "data_source": data_source,
    }
    if not is_main_process():
        return metrics
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    metrics["final_loss_mean_last_100"] = float(np.mean(losses[-100:]))
    np.save(out / "samples.npy", final["samples"])
    if num_classes:
        np.save(out / "labels.npy", final["labels"])
    report.final_figures(out, config, final, images)
    if config.evaluate and config.dataset != "mnist":
        metrics["evaluation_skipped"] = (
            f"the feature classifier of the Frechet distance knows MNIST digits, not "
            f"{config.dataset}"
        )
        log(f"evaluation skipped: {metrics['evaluation_skipped']}")
    elif config.evaluate and (evaluation := report.evaluate(config, final)) is not None:
        metrics["evaluation"] = evaluation
    metrics["total_seconds_this_run"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "metrics.json", metrics)
    report.write_run_report(out, config, metrics)
    log(f"done in {metrics['total_seconds_this_run'] / 60:.1f} min; see {out / 'report.md'}")
    return metrics
