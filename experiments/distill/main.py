"""The run of ``python -m experiments.distill``: teacher, rounds of training, samples, report."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from experiments._common import check_batch_divisible, log, open_run_dir, restore_latest
from experiments.distill import report
from experiments.distill.config import RESUMABLE, DistillConfig, load_teacher
from jaxdiff import data as jdata
from jaxdiff import distill
from jaxdiff.checkpoint import Checkpointer
from jaxdiff.loop import DivergenceRule, fit
from jaxdiff.models import count_params
from jaxdiff.outputs import MetricsLog, write_json
from jaxdiff.train import Trainer, eval_params


def _data(run, kind: str, config: DistillConfig) -> dict:
    """The teacher's training data, scaled as it was trained: ``{"x", "labels"?}``."""
    if kind == "digits":
        images, labels = jdata.load_digits(scale="unit")
    else:
        images, labels = jdata.load_mnist(
            "train", dataset=run.config.get("dataset", "mnist"), data_dir=config.data_dir,
            image_size=run.spec.image_size, limit=run.config.get("train_limit"),
            progress=config.progress,
        )  # fmt: skip
    if len(images) < config.batch_size:
        raise ValueError(f"--batch-size {config.batch_size} exceeds the {len(images)} images")
    return {"x": images, "labels": labels} if run.num_classes else {"x": images}


def _divergence(config: DistillConfig) -> DivergenceRule:
    """Progressive distillation's truncated-SNR weights max(SNR, 1) reach SNR(t) at the
    smallest noisy time of the grid (80 on the linear and 280 on the cosine 1000-step
    schedule at t = 30, the first round's from 32 steps), so its batch losses legitimately
    jump by that much: only NaN, inf and a loss 1e4 times its running mean count as
    divergence there."""
    return DivergenceRule(factor=1e4) if config.method == "progressive" else DivergenceRule()


def _round(config, out, name, trainer, state, data, cfg_dict) -> object:
    """One student's training (``fit``, checkpoints in ``checkpoints/NAME``, resumable)."""
    ckpt = Checkpointer(
        out / "checkpoints" / name, max_to_keep=2,
        save_every=config.checkpoint_every or config.train_steps,
    )  # fmt: skip
    with ckpt:
        state, restored = restore_latest(ckpt, state, config.resume)
        with MetricsLog(out / f"metrics_{name}.jsonl", truncate_after=restored) as metrics_log:
            state, _records = fit(
                trainer, state, data, num_steps=config.train_steps, batch_size=config.batch_size,
                checkpointer=ckpt, checkpoint_metadata={"config": cfg_dict},
                metrics_log=metrics_log, progress=config.progress, divergence=_divergence(config),
            )  # fmt: skip
    return state


def train_students(config: DistillConfig, run, data, out, cfg_dict) -> dict:
    """Every round's student: ``{steps: EMA params}`` (consistency: ``{1: params}``)."""
    teacher = distill.discrete_denoiser(run.apply, run.schedule, run.spec.train.prediction)
    v_student = distill.Denoiser(run.apply, teacher.path, "v")
    train_cfg = distill.student_train_config(
        run.spec.train, learning_rate=config.learning_rate, ema_decay=config.ema_decay,
        steps_per_call=config.steps_per_call,
    )  # fmt: skip
    key = jax.random.key(config.seed)
    teacher_params, students, device_data = run.params, {}, None
    for n in config.rounds():
        if config.method == "progressive":
            loss = distill.make_progressive_loss(v_student, teacher, n)
            name = f"round_{n:03d}"
        else:
            loss = distill.make_consistency_loss(
                teacher, teacher, config.num_times, solver=config.ode_solver,
                sigma_data=config.sigma_data,
            )  # fmt: skip
            name = "consistency"
        trainer = Trainer(run.apply, run.schedule, train_cfg, loss=loss)
        check_batch_divisible(config.batch_size, trainer)
        # The student starts from its teacher (Algorithm 2 of both papers).
        params = distill.with_teacher(teacher_params, teacher_params)
        state = trainer.init_state(params, jax.random.fold_in(key, n))
        if device_data is None:
            device_data = trainer.put_data(data)
        log(f"{config.method} distillation: {name}, {config.train_steps} steps")
        state = _round(config, out, name, trainer, state, device_data, cfg_dict)
        students[n] = distill.student_params(eval_params(state))
        if config.method == "progressive":  # the student teaches the next round
            teacher_params, teacher = students[n], v_student
    return students


def main(config: DistillConfig) -> dict:
    """Distil, sample, evaluate; return the metrics (also written to metrics.json)."""
    t_start = time.perf_counter()
    # Inputs first: a bad teacher folder or missing data fails before --out is touched.
    run, kind = load_teacher(config)
    data = _data(run, kind, config)
    cfg_dict = dataclasses.asdict(config)
    out = open_run_dir(config, cfg_dict, RESUMABLE, reads={"--teacher": config.teacher})
    log(
        f"jaxdiff distill: {config.method} from {run.spec.model} ({count_params(run.params):,} "
        f"parameters, {run.spec.train.prediction}-prediction, step {run.step}) in "
        f"{config.teacher}; rounds {config.rounds()}; out: {out}"
    )
    students = train_students(config, run, data, out, cfg_dict)
    samples = report.draw_samples(config, run, students)
    metrics: dict = {
        "teacher": str(config.teacher), "teacher_kind": kind, "teacher_model": run.spec.model,
        "teacher_step": run.step, "teacher_prediction": run.spec.train.prediction,
        "method": config.method, "rounds": config.rounds(),
        "train_steps_total": config.train_steps * len(config.rounds()),
    }  # fmt: skip
    unit = {name: report.to_unit(kind, x) for name, x in samples.items()}
    for name, x in unit.items():
        np.save(out / f"samples_{name}.npy", x)
    report.picture(out, config, unit)
    if config.evaluate:
        metrics["evaluation"] = report.evaluate(config, kind, unit, run.num_classes)
    metrics["total_seconds_this_run"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "metrics.json", metrics)
    report.write_run_report(out, config, metrics, list(unit))
    log(f"done in {metrics['total_seconds_this_run']:.0f} s; see {out / 'report.md'}")
    return metrics
