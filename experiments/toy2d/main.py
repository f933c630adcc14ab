"""The run of ``python -m experiments.toy2d``: data, model, training, samples, figures, report."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from experiments._common import (
    check_batch_divisible,
    evaluate_or_skip,
    log,
    loss_figure,
    open_run_dir,
    restore_latest,
    train,
)
from experiments._objective import ABSENT, resolve_sigma_data, run_loss
from experiments.toy2d import figures
from experiments.toy2d.config import (
    RESUMABLE,
    TUNABLE,
    Toy2dConfig,
    build_model,
    build_schedule,
    resolve,
    steps_per_epoch,
    train_config,
)
from experiments.toy2d.data import host_batches
from experiments.toy2d.report import train_only, write_report
from experiments.toy2d.sampling import final_samples, sample_statistics
from experiments.toy2d.terminal import compare_terminal
from jaxdiff import data as jdata
from jaxdiff.checkpoint import Checkpointer
from jaxdiff.loop import steps_per_second
from jaxdiff.models import count_params, split_model
from jaxdiff.outputs import read_metrics, write_json
from jaxdiff.sharding import is_main_process
from jaxdiff.train import Trainer, eval_params


def main(config: Toy2dConfig) -> dict:
    """Run the experiment; return the final metrics dict (also written to metrics.json)."""
    config = resolve(config)
    t_start = time.perf_counter()
    # Data: the point cloud, and the run directory (refused before any work).
    dim = jdata.POINT_DATASETS[config.dataset][0]
    points = jdata.make_points(config.dataset, config.num_points, seed=config.seed)
    config = resolve_sigma_data(config, points)
    cfg_dict = dataclasses.asdict(config)
    out = open_run_dir(config, cfg_dict, RESUMABLE, tunable=TUNABLE, absent=ABSENT)

    # Model (build_model: integer steps or continuous time), objective, the tutorial's optimiser.
    schedule = build_schedule(config)
    model = build_model(config, dim)
    _graphdef, params, apply = split_model(model)
    n_params = count_params(params)
    tc = train_config(config)
    trainer = Trainer(apply, schedule, tc, loss=run_loss(config, schedule, tc, apply))
    check_batch_divisible(config.batch_size, trainer)
    key = jax.random.key(config.seed)
    state = trainer.init_state(params, jax.random.fold_in(key, 0))
    spe = steps_per_epoch(config)
    log(
        f"jaxdiff toy2d: {config.dataset} ({config.num_points} points, D={dim}); "
        f"{type(model).__name__} with {n_params:,} parameters; {config.train_steps} steps "
        f"({config.train_steps / spe:.4g} epochs of {spe} batches of {config.batch_size}); "
        f"objective {config.objective}; {schedule!r}; out: {out}"
    )

    # Training from host batches, checkpointed (and resumed) every `checkpoint_every` steps.
    checkpoint_every = config.checkpoint_every or config.train_steps
    ckpt = Checkpointer(
        out / "checkpoints", max_to_keep=config.keep_checkpoints, save_every=checkpoint_every
    )
    with ckpt:
        state, restored = restore_latest(ckpt, state, config.resume)
        start = int(jax.device_get(state.step))
        if is_main_process() and config.objective == "ddpm":  # the schedule's forward process
            figures.forward_figure(out, config, schedule, points, key)
        batches = host_batches(
            points,
            config.batch_size,
            config.seed,
            start,
            config.train_steps,
            trainer.steps_per_call,
            boundaries=(checkpoint_every,),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        state, records, train_seconds = train(
            trainer, state, batches, config=config, out=out, ckpt=ckpt, cfg_dict=cfg_dict,
            restored=restored,
        )  # fmt: skip

    if config.num_samples == 0:
        return train_only(out, config, n_params, spe, records, train_seconds, t_start)

    # Samples from the EMA weights, split over every device; the main process writes.
    final = final_samples(config, apply, eval_params(state), schedule, dim, key, trainer.mesh)
    samples = final["samples"]
    metrics: dict = {
        "dataset": config.dataset,
        "train_steps": config.train_steps,
        "epochs": round(config.train_steps / spe, 3),
        "batch_size": config.batch_size,
        "parameters": n_params,
        "schedule": repr(schedule),
        "alphas_cumprod_last": schedule.final_alpha_bar,
        "train_seconds_this_run": round(train_seconds, 1),
        "steps_per_second": steps_per_second(records),
        "sample_seconds": round(final["seconds"], 2),
        "sampler": config.sampler,
        "sample_steps": final["steps"],
        **sample_statistics(points, samples),
    }
    if not is_main_process():
        return metrics
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    metrics["final_loss_mean_last_epoch"] = float(np.mean(losses[-spe:]))
    np.save(out / "samples.npy", samples)

    # Figures, the schedules' terminal distributions, evaluation, metrics.json and report.md.
    figures.process_figures(out, config, schedule, points, final, key)
    figures.sample_figures(out, config, points, samples)
    metrics["terminal"] = compare_terminal(out, config, schedule, points, key)
    loss_figure(out, max_window=500, epoch_size=spe)
    metrics |= _evaluation(samples, config)
    metrics["total_seconds_this_run"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "metrics.json", metrics)
    write_report(out, config, metrics)
    log(f"done in {metrics['total_seconds_this_run']:.0f} s; see {out / 'report.md'}")
    return metrics


def _evaluation(samples: np.ndarray, config: Toy2dConfig) -> dict:
    """``{"evaluation": ...}``: MMD and sliced Wasserstein distance to fresh data.

    ``{}`` with ``--no-evaluate`` or samples that cannot be evaluated (said on stderr).
    """
    if not config.evaluate:
        return {}
    evaluation = evaluate_or_skip(
        samples, "points", dataset=config.dataset, cache_dir=config.cache_dir
    )
    return {} if evaluation is None else {"evaluation": evaluation}
