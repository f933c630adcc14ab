"""The distillation run's samples, picture, evaluation and report.md."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import command_section, evaluate_or_skip, fmt
from experiments.distill.config import EVAL_STEPS, PROG, DistillConfig
from jaxdiff import data as jdata
from jaxdiff import distill, plotting
from jaxdiff.outputs import write_report

CHUNK = 250  # samples per compiled sampling call
PICTURE_COLUMNS = 10


def _chunked(fn, x_T, labels) -> np.ndarray:
    parts = []
    for i in range(0, len(x_T), CHUNK):
        lab = None if labels is None else labels[i : i + CHUNK]
        parts.append(np.asarray(jax.device_get(fn(x_T[i : i + CHUNK], lab, i))))
    return np.concatenate(parts)


def draw_samples(config: DistillConfig, run, students: dict) -> dict[str, np.ndarray]:
    """``{"teacher": ..., "student_4": ..., ...}``: raw samples of the teacher (DDIM at
    ``--teacher-steps``) and of the students at each of :data:`EVAL_STEPS` they have, all from
    the same starting noise and labels."""
    teacher = distill.discrete_denoiser(run.apply, run.schedule, run.spec.train.prediction)
    key = jax.random.fold_in(jax.random.key(config.seed), 1_000_003)
    shape = (config.num_samples, *run.spec.image_shape)
    x_T = distill.prior_std(teacher.path) * jax.random.normal(key, shape)
    labels = None
    if run.num_classes:
        labels = jnp.arange(config.num_samples, dtype=jnp.int32) % run.num_classes
    out = {
        "teacher": _chunked(
            lambda x, lab, _i: distill.ddim_sample(
                teacher, run.params, x, config.teacher_steps, lab
            ),
            x_T, labels,
        )
    }  # fmt: skip
    if config.method == "progressive":
        v_student = distill.Denoiser(run.apply, teacher.path, "v")
        for s in EVAL_STEPS:
            if s in students:
                out[f"student_{s}"] = _chunked(
                    lambda x, lab, _i, s=s: distill.ddim_sample(v_student, students[s], x, s, lab),
                    x_T, labels,
                )  # fmt: skip
        return out
    for s in EVAL_STEPS:
        taus = distill.consistency_sample_times(teacher.path, True, s, config.num_times)
        out[f"student_{s}"] = _chunked(
            lambda x, lab, i, taus=taus, s=s: distill.consistency_sample(
                teacher, students[1], x, taus, jax.random.fold_in(key, 1000 * s + i), lab,
                sigma_data=config.sigma_data,
            ),
            x_T, labels,
        )  # fmt: skip
    return out


def to_unit(kind: str, raw: np.ndarray) -> np.ndarray:
    """Samples as the experiments save them: float32 in ``[0, 1]`` (MNIST was trained in
    ``[-1, 1]``, the digits in ``[0, 1]``)."""
    if kind == "mnist":
        return jdata.unit_images(raw)
    return np.clip(np.asarray(raw, np.float32), 0.0, 1.0)


def _label(config: DistillConfig, name: str) -> str:
    if name == "teacher":
        return f"teacher, DDIM {config.teacher_steps} steps"
    return f"student, {name.split('_')[1]} step(s)"


def picture(out: Path, config: DistillConfig, unit: dict[str, np.ndarray]) -> Path:
    """``samples.png``: one row per model (teacher, then the students at 4, 2, 1 steps), the
    same starting noise in every column."""
    n = min(PICTURE_COLUMNS, config.num_samples)
    rows = [np.nan_to_num(x[:n], nan=0.0) for x in unit.values()]
    title = "rows: " + "; ".join(_label(config, name) for name in unit)
    return plotting.save_image_grid(out / "samples.png", np.concatenate(rows), n, title=title)


def evaluate(config: DistillConfig, kind: str, unit: dict, num_classes) -> dict:
    """``{name: evaluation or None}`` of every sample set (``jaxdiff.evaluation``)."""
    labels = None
    if num_classes:
        labels = np.arange(config.num_samples) % num_classes
    extra = {"data_dir": config.data_dir} if kind == "mnist" else {}
    return {
        name: evaluate_or_skip(
            x, kind, labels=labels, cache_dir=config.cache_dir, progress=config.progress, **extra
        )
        for name, x in unit.items()
    }


def write_run_report(out: Path, config: DistillConfig, metrics: dict, names: list[str]) -> Path:
    """``report.md``: the command, the teacher, the rounds, the picture and the evaluation."""
    what = (
        f"Teacher: `{metrics['teacher']}` ({metrics['teacher_kind']}, {metrics['teacher_model']}, "
        f"{metrics['teacher_prediction']}-prediction, step {metrics['teacher_step']}).\n\n"
        f"Method: {config.method}; student rounds (steps): {metrics['rounds']}, "
        f"{config.train_steps} training steps each, batch {config.batch_size}, Adam "
        f"{config.learning_rate:g}, EMA {config.ema_decay}."
    )
    sections = [command_section(PROG), ("Distillation", what)]
    sections.append(("Samples", "![teacher and students](samples.png)"))
    evaluation = metrics.get("evaluation")
    if evaluation:
        cols = sorted({m for e in evaluation.values() if e for m in e["metrics"]})
        rows = [
            f"| {_label(config, name)} | "
            + " | ".join(fmt(e["metrics"][m]["samples"]) if e else "-" for m in cols)
            + " |"
            for name, e in ((n, evaluation.get(n)) for n in names)
        ]
        table = "| samples | " + " | ".join(cols) + " |\n|" + " --- |" * (len(cols) + 1)
        sections.append(
            ("Evaluation", f"{config.num_samples} samples each.\n\n{table}\n" + "\n".join(rows))
        )
    return write_report(out / "report.md", f"Distillation ({config.method})", sections)
