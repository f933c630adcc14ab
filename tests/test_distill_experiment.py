"""``python -m experiments.distill`` on a tiny digits teacher: the outputs, exact resume across
an interrupt, and bad teacher folders and step counts (one error line, exit 2, nothing written).

The teacher is a run folder written here as ``experiments.digits`` writes one (config.json with
its model spec, an orbax checkpoint) holding an untrained 8x8 ``small_cnn`` on a 16-step
schedule: the mechanics do not need a good teacher, and this one compiles in seconds.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments._cli import build_parser, parse_config, run_main
from experiments.distill import PROG, DistillConfig, main
from jaxdiff.checkpoint import Checkpointer
from jaxdiff.loop import TrainingInterrupted, fit
from jaxdiff.outputs import prepare_run_dir, read_metrics
from jaxdiff.runs import SPEC_KEY, ModelSpec
from jaxdiff.train import TrainConfig, init_train_state, make_optimizer

distill_main = importlib.import_module("experiments.distill.main")  # not the function

# Two rounds (4 -> 2 -> 1 steps) of 3 steps, one step per compiled call.
TINY = [
    "--teacher-steps", "4", "--train-steps", "3", "--steps-per-call", "1",
    "--checkpoint-every", "1", "--num-samples", "6", "--batch-size", "8", "--no-evaluate",
    "--no-progress",
]  # fmt: skip


def _teacher(folder: Path, *, experiment="experiments.digits", train_steps=1, saved=1) -> Path:
    spec = ModelSpec(
        model="small_cnn", image_size=8, schedule="cosine", num_timesteps=16,
        train=TrainConfig(ema_decay=0.9),
    )  # fmt: skip
    config = {"train_steps": train_steps, SPEC_KEY: spec.to_json()}
    out = prepare_run_dir(folder, config, resume=False, overwrite=False, experiment=experiment)
    _apply, params, _schedule = spec.build()
    state = init_train_state(params, make_optimizer(spec.train), 0)
    with Checkpointer(out / "checkpoints") as ckpt:
        ckpt.save(saved, state._replace(step=jax.numpy.int32(saved)), force=True)
    return out


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return _teacher(tmp_path_factory.mktemp("teacher") / "digits")


@pytest.fixture(scope="module")
def straight(teacher, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("distill") / "straight"
    metrics = main(
        parse_config(DistillConfig, [*TINY, "--teacher", str(teacher), "--out", str(out)])
    )
    return out, metrics


def _restored(out: Path, name: str) -> dict:
    """The final (step 3) state of a round, as orbax reads it without a target (dicts)."""
    return ocp.StandardCheckpointer().restore(out / "checkpoints" / name / "3" / "state")


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


def _assert_same(a, b) -> None:
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _final_state(out: Path, name: str) -> list[np.ndarray]:
    return _leaves(_restored(out, name))


def test_progressive_run_writes_the_run_folder(straight, teacher):
    out, metrics = straight
    for name in (
        "config.json", "metrics.json", "report.md", "samples.png", "samples_teacher.npy",
        "samples_student_2.npy", "samples_student_1.npy", "metrics_round_002.jsonl",
        "metrics_round_001.jsonl",
    ):  # fmt: skip
        assert (out / name).is_file(), name
    assert metrics["rounds"] == [2, 1] and metrics["train_steps_total"] == 6
    for name in ("teacher", "student_2", "student_1"):
        x = np.load(out / f"samples_{name}.npy")
        assert x.shape == (6, 8, 8, 1) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    assert [r["step"] for r in read_metrics(out / "metrics_round_001.jsonl")] == [1, 2, 3]
    for name in ("round_002", "round_001"):
        assert sorted(p.name for p in (out / "checkpoints" / name).iterdir()) == ["2", "3"]
    assert json.loads((out / "config.json").read_text())["experiment"] == "experiments.distill"
    # The teacher sub-tree is frozen to the bit: round 1 keeps the teacher run's EMA parameters,
    # round 2 the EMA student of round 1.
    first, second = (_restored(out, name) for name in ("round_002", "round_001"))
    teacher_ckpt = ocp.StandardCheckpointer().restore(teacher / "checkpoints" / "1" / "state")
    _assert_same(first["params"]["teacher"], teacher_ckpt["ema_params"])
    _assert_same(second["params"]["teacher"], first["ema_params"]["student"])
    student, frozen = (_leaves(first["params"][k]) for k in ("student", "teacher"))
    assert not all(np.array_equal(a, b) for a, b in zip(student, frozen, strict=True))
    assert "samples.png" in (out / "report.md").read_text()


def test_interrupted_and_resumed_equals_straight_through(straight, teacher, tmp_path, monkeypatch):
    """SIGINT in the second round (after its step 1) stops the run with step 2 saved; --resume
    finishes it: the final states, the losses and the samples equal the straight run's."""
    out = tmp_path / "stopped"
    argv = [*TINY, "--teacher", str(teacher), "--out", str(out)]
    calls = []

    def fit_with_a_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second round: a Ctrl-C after its first step
            stop = lambda step, state: step == 1 and os.kill(os.getpid(), signal.SIGINT)
            kwargs["hooks"] = [*kwargs.get("hooks", ()), (1, stop)]
        return fit(*args, **kwargs)

    monkeypatch.setattr(distill_main, "fit", fit_with_a_stop)
    with pytest.raises(TrainingInterrupted):
        main(parse_config(DistillConfig, argv))
    assert sorted(p.name for p in (out / "checkpoints" / "round_001").iterdir()) == ["1", "2"]
    assert not (out / "metrics.json").exists()
    monkeypatch.undo()
    main(parse_config(DistillConfig, [*argv, "--resume"]))

    reference = straight[0]
    for name in ("round_002", "round_001"):
        for a, b in zip(_final_state(reference, name), _final_state(out, name), strict=True):
            np.testing.assert_array_equal(a, b)
        ref, got = (read_metrics(d / f"metrics_{name}.jsonl") for d in (reference, out))
        assert [r["loss"] for r in got] == [r["loss"] for r in ref]
    for name in ("teacher", "student_2", "student_1"):
        np.testing.assert_array_equal(
            np.load(out / f"samples_{name}.npy"), np.load(reference / f"samples_{name}.npy")
        )


def test_consistency_run_samples_at_one_two_and_four_steps(teacher, tmp_path):
    out = tmp_path / "cd"
    argv = [
        "--method", "consistency", "--num-times", "6", "--ode-solver", "heun",
        "--teacher-steps", "4", "--train-steps", "2", "--steps-per-call", "1",
        "--checkpoint-every", "0", "--num-samples", "6", "--batch-size", "8", "--no-evaluate",
        "--no-progress",
        "--teacher", str(teacher), "--out", str(out),
    ]  # fmt: skip
    metrics = main(parse_config(DistillConfig, argv))
    assert metrics["rounds"] == [1]
    for name in ("teacher", "student_4", "student_2", "student_1"):
        x = np.load(out / f"samples_{name}.npy")
        assert x.shape == (6, 8, 8, 1) and np.isfinite(x).all()
    assert [r["step"] for r in read_metrics(out / "metrics_consistency.jsonl")] == [1, 2]


def _bad(tmp_path, capsys, *argv) -> str:
    out = tmp_path / "out"
    try:
        code = run_main(DistillConfig, main, [*argv, "--out", str(out)], prog=PROG)
    except SystemExit as e:  # argparse: a bad flag value
        code = e.code
    assert code == 2
    assert not out.exists()
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


def test_bad_teachers_and_step_counts_are_one_line_errors(tmp_path, capsys):
    assert "no such folder" in _bad(tmp_path, capsys, "--teacher", str(tmp_path / "nothing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no config.json" in _bad(tmp_path, capsys, "--teacher", str(empty))
    toy = tmp_path / "toy"
    prepare_run_dir(toy, {"seed": 0}, resume=False, overwrite=False, experiment="experiments.toy2d")
    assert "model_spec" in _bad(tmp_path, capsys, "--teacher", str(toy))
    other = _teacher(tmp_path / "other", experiment="experiments.toy2d")
    msg = _bad(tmp_path, capsys, "--teacher", str(other))
    assert "is a run of experiments.toy2d" in msg and "experiments.mnist" in msg
    short = _teacher(tmp_path / "short", train_steps=4, saved=2)
    assert "incomplete: its newest checkpoint is step 2 of 4" in _bad(
        tmp_path, capsys, "--teacher", str(short)
    )
    no_ckpt = tmp_path / "no_ckpt"
    prepare_run_dir(
        no_ckpt, json.loads((short / "config.json").read_text()), resume=False, overwrite=False,
        experiment="experiments.digits",
    )  # fmt: skip
    assert "no checkpoint" in _bad(tmp_path, capsys, "--teacher", str(no_ckpt))
    msg = _bad(tmp_path, capsys, "--teacher", str(short), "--teacher-steps", "12")
    assert "--teacher-steps 12 is not a power of two" in msg and "8 or 16" in msg
    assert "--student-steps 3 is not a power of two" in _bad(
        tmp_path, capsys, "--teacher", str(short), "--student-steps", "3"
    )


def test_help_shows_a_real_default_for_every_flag():
    text = build_parser(DistillConfig, prog=PROG).format_help()
    assert "(default: None)" not in text
    for name in ("--teacher", "--method", "--teacher-steps", "--num-times", "--resume"):
        assert name in text
