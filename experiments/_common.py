"""Scaffolding shared by the experiments (mnist, digits, toy2d; forward: flags, run directory).

Each experiment builds its own data, model and figures; the steps around them are the same:
check the flags' ranges, open the run directory (main process only), check the batch against
the devices, restore the latest checkpoint on ``--resume``, run :func:`jaxdiff.loop.fit` with
the metrics log, and write the common report sections.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax

from jaxdiff import plotting
from jaxdiff.checkpoint import Checkpointer
from jaxdiff.loop import STALL_TIMEOUT, fit
from jaxdiff.outputs import MetricsLog, prepare_run_dir, read_metrics
from jaxdiff.sharding import is_main_process, main_process_succeeded, processes_without
from jaxdiff.train import Trainer, TrainState

__all__ = [
    "check_at_least",
    "check_batch_divisible",
    "command_section",
    "evaluate_or_skip",
    "evaluation_section",
    "fmt",
    "log",
    "loss_figure",
    "open_run_dir",
    "restore_latest",
    "train",
    "training_section",
]


def log(msg: str) -> None:
    """Print a progress line to stderr, from the main process only."""
    if is_main_process():
        print(msg, file=sys.stderr, flush=True)


def open_run_dir(
    config: Any,
    cfg_dict: dict,
    may_differ: Sequence[str],
    derived: Sequence[str] = (),
    *,
    tunable: Sequence[str] = (),
    reads: Mapping[str, Any] | None = None,
    absent: Mapping[str, Any] | None = None,
) -> Path:
    """``config.out`` prepared for this run (``prepare_run_dir``) on the main process.

    The run records the experiment that writes it, named after the package of ``config``'s
    class (``experiments.mnist``). ``tunable`` are the keys that may change on ``--resume``
    with a warning (optimizer hyperparameters); ``reads`` the folders the command reads, by flag
    (``{"--checkpoint": path}``), which ``--out`` must neither be, lie in nor contain;
    ``absent`` what a run whose config.json lacks a key was trained with (``prepare_run_dir``).

    Other processes of a multi-process run only get the path: process 0 writes every file, and
    every process waits at a barrier until the folder is ready (``--overwrite`` included); then
    every process must see it (one shared folder), or all stop with the same error.
    Raises what ``prepare_run_dir`` raises (a refused or unwritable ``--out``) before any work.
    """
    out, error = Path(config.out), None
    if is_main_process():
        try:
            out = prepare_run_dir(
                config.out, cfg_dict, resume=config.resume, overwrite=config.overwrite,
                may_differ=may_differ, derived=derived, tunable=tunable, reads=reads,
                absent=absent, experiment=".".join(type(config).__module__.split(".")[:2]),
            )  # fmt: skip
        except (OSError, ValueError) as e:
            error = e
    # Every process waits here until the folder is ready, and stops too if process 0 could not
    # prepare it (instead of waiting for it at the next collective).
    if not main_process_succeeded(error is None):
        if error is not None:
            raise error
        raise ValueError(f"process 0 could not prepare --out {config.out}; see its error")
    # Checkpoints are written by all processes into one folder: every host must see it.
    blind = processes_without((Path(config.out) / "config.json").is_file())
    if blind:
        raise ValueError(
            f"--out {config.out} is not visible from process(es) {blind}: process 0 prepared it, "
            "but with several hosts --out must be one folder every host sees (a shared file "
            "system or a bucket path); pass such a folder to every process"
        )
    return out


def check_at_least(config: Any, minimum: int, *names: str) -> None:
    """``ValueError`` for the first field in ``names`` below ``minimum``, named as its flag.

    For a config's ``__post_init__``: ``--train-steps must be >= 1, got 0``. ``None`` (a flag
    left to its default) passes.
    """
    for name in names:
        value = getattr(config, name)
        if value is not None and value < minimum:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")


def check_batch_divisible(batch_size: int, trainer: Trainer) -> None:
    """``ValueError`` naming both numbers when the global batch does not split over devices."""
    if batch_size % trainer.num_devices:
        raise ValueError(
            f"--batch-size {batch_size} is not divisible by the {trainer.num_devices} "
            "devices; pick a multiple of the device count"
        )


def restore_latest(
    ckpt: Checkpointer, state: TrainState, resume: bool
) -> tuple[TrainState, int | None]:
    """With ``resume``, the latest checkpoint restored into ``state`` and its step.

    Returns ``(state, None)`` when not resuming or when the run has no checkpoint yet (said
    on stderr), so the caller starts at step 0.
    """
    if resume and ckpt.latest_step() is not None:
        state, _meta = ckpt.restore(state)
        restored = int(jax.device_get(state.step))
        log(f"resumed from the checkpoint at step {restored}")
        return state, restored
    if resume:
        log("--resume: no checkpoint yet in this run; starting at step 0")
    return state, None


def train(
    trainer: Trainer,
    state: TrainState,
    data: Any,
    *,
    config: Any,
    out: Path,
    ckpt: Checkpointer,
    cfg_dict: dict,
    restored: int | None,
    hooks: Sequence[tuple[int, Callable]] = (),
) -> tuple[TrainState, list[dict], float]:
    """:func:`jaxdiff.loop.fit` to ``config.train_steps`` with ``metrics.jsonl`` in ``out``.

    ``data`` is an on-device dataset (``Trainer.put_data``) or an iterator of host stacks.
    The metrics log drops records after ``restored`` (a resumed run rewrites them). Returns
    ``(state, records of this call, seconds spent in fit)``.
    """
    metrics_log = MetricsLog(
        out / "metrics.jsonl", truncate_after=restored, enabled=is_main_process()
    )
    start = time.perf_counter()
    with metrics_log:
        state, records = fit(
            trainer,
            state,
            data,
            num_steps=config.train_steps,
            batch_size=config.batch_size,
            checkpointer=ckpt,
            checkpoint_metadata={"config": cfg_dict},
            metrics_log=metrics_log,
            hooks=list(hooks),
            progress=config.progress,
            stall_timeout=getattr(config, "stall_timeout", STALL_TIMEOUT),
        )
    return state, records, time.perf_counter() - start


def evaluate_or_skip(samples: Any, kind: str, **kwargs: Any) -> dict | None:
    """``jaxdiff`` sample evaluation of ``kind`` (mnist, digits, points; ``kwargs`` as
    ``evaluate_samples`` takes them), or None with a note on stderr when the samples cannot be
    evaluated (too few for a covariance, NaN after a divergence): the run is not lost."""
    from jaxdiff.evaluation import evaluate_samples

    try:
        return evaluate_samples(samples, kind, **kwargs)
    except ValueError as e:
        log(f"evaluation skipped: {e}")
        return None


def loss_figure(out: Path, *, max_window: int, epoch_size: int | None = None) -> Path:
    """``out / "loss_curves.png"`` from ``out / "metrics.jsonl"`` (every step's loss).

    The moving mean spans a tenth of the steps, at most ``max_window``; with ``epoch_size`` a
    panel shows the mean loss of each epoch (:func:`jaxdiff.plotting.plot_loss_curves`).
    """
    records = read_metrics(out / "metrics.jsonl")
    return plotting.plot_loss_curves(
        out / "loss_curves.png",
        [r["step"] for r in records],
        [r["loss"] for r in records],
        window=min(max_window, max(1, len(records) // 10)),
        epoch_size=epoch_size,
    )


def fmt(value: Any) -> str:
    """A metric for a report table: floats to 4 significant digits, lists as tuples."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return "(" + ", ".join(fmt(v) for v in value) + ")"
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items())
    return str(value)


def command_section(prog: str, note: str = "") -> tuple[str, str]:
    """The report's "Command" section: the command line as run, and where the config is."""
    text = f"```\n{prog} " + " ".join(sys.argv[1:]) + "\n```\n\nResolved config: `config.json`."
    return "Command", text + (f" {note}" if note else "")


def training_section(metrics: Mapping[str, Any], skip: Sequence[str] = ()) -> tuple[str, str]:
    """The report's "Training" section: every metric not in ``skip``, then the loss curves."""
    rows = [
        f"| {k} | {fmt(v)} |" for k, v in metrics.items() if k != "evaluation" and k not in skip
    ]
    return (
        "Training",
        "| quantity | value |\n| --- | --- |\n"
        + "\n".join(rows)
        + "\n\n![loss curves](loss_curves.png)",
    )


def evaluation_section(evaluation: Mapping[str, Any], real: str) -> tuple[str, str]:
    """The report's "Evaluation" section for image samples; ``real`` says what the floor is."""
    rows = [
        f"| {name} | {fmt(v['samples'])} | {fmt(v['real'])} | {fmt(v['noise'])} |"
        for name, v in evaluation["metrics"].items()
    ]
    return (
        "Evaluation",
        f"{evaluation['num_samples']} samples, feature network: "
        f"{evaluation.get('feature_network', '?')}. 'real' is {real} (the floor), 'noise' is "
        "noise images (the ceiling).\n\n| metric | samples | real | noise |\n"
        "| --- | --- | --- | --- |\n" + "\n".join(rows),
    )
