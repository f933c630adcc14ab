"""Smoke test of `python -m experiments.toy2d`: tiny settings, output contract, resume, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import toy2d
from experiments._cli import parse_config
from jaxdiff.outputs import read_metrics

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--num-points", "256", "--batch-size", "32", "--train-steps", "20", "--hidden", "16",
    "--num-timesteps", "20", "--beta-end", "0.5", "--num-samples", "64",
    "--steps-per-call", "10", "--checkpoint-every", "10", "--gif-frames", "2", "--no-progress",
]  # fmt: skip


def _run(argv):
    return toy2d.main(parse_config(toy2d.Toy2dConfig, argv))


@pytest.mark.filterwarnings("ignore:only 64 samples")
def test_toy2d_smoke_output_contract_and_resume(tmp_path):
    out = tmp_path / "run"
    common = [*TINY, "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    metrics = _run(common)

    for name in (
        "config.json", "metrics.jsonl", "metrics.json", "samples.npy", "report.md",
        "forward_scatter.png", "reverse_scatter.png", "forward_reverse.gif",
        "samples_vs_data.png", "schedules.png", "terminal_distribution.png", "loss_curves.png",
    ):  # fmt: skip
        assert (out / name).is_file(), name
    samples = np.load(out / "samples.npy")
    assert samples.shape == (64, 2) and samples.dtype == np.float32
    assert np.isfinite(samples).all()
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 21))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["train_steps"] == 20 and saved["sample_steps"] == 20
    assert metrics["parameters"] == saved["parameters"] > 0
    assert set(saved["evaluation"]["metrics"]) == {"mmd2_rbf", "sliced_wasserstein"}
    # Both schedules are compared; the tutorial's keeps 78% of the signal at its last step.
    terminal = saved["terminal"]
    assert len(terminal) == 3  # this run, the tutorial's, the default
    assert terminal["tutorial: sigmoid 1e-5..5e-3"]["alphas_cumprod_last"] == pytest.approx(
        0.778, abs=1e-3
    )
    config = json.loads((out / "config.json").read_text())
    assert config["beta_end"] == 0.5 and config["train_steps"] == 20
    report = (out / "report.md").read_text()
    for figure in ("samples_vs_data.png", "forward_reverse.gif", "terminal_distribution.png"):
        assert figure in report
    assert "alphas_cumprod[-1] = 0.778" in report
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == [
        "10", "20",
    ]  # fmt: skip

    with pytest.raises(FileExistsError, match="--resume"):
        _run(common)
    _run([*common, "--resume", "--train-steps", "30", "--no-evaluate"])
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 31))
    assert json.loads((out / "metrics.json").read_text())["train_steps"] == 30


def test_toy2d_3d_swiss_roll_with_the_tutorial_schedule(tmp_path):
    out = tmp_path / "roll"
    argv = [
        "--num-points", "256", "--batch-size", "32", "--train-steps", "10", "--hidden", "16",
        "--num-samples", "64", "--steps-per-call", "10", "--gif-frames", "2", "--no-progress",
        "--no-evaluate",
        "--dataset", "swiss_roll_3d", "--tutorial-schedule", "--out", str(out),
    ]  # fmt: skip
    with pytest.warns(UserWarning, match="alphas_cumprod"):
        _run(argv)
    assert np.load(out / "samples.npy").shape == (64, 3)
    config = json.loads((out / "config.json").read_text())
    assert config["beta_end"] == 5e-3 and config["num_timesteps"] == 100
    report = (out / "report.md").read_text()
    assert "(tutorial schedule)" in report and "biased by construction" in report
    assert (out / "samples_vs_data_3d.png").is_file() and "samples_vs_data_3d.png" in report


def test_host_batches_are_a_function_of_the_step():
    points = np.arange(50, dtype=np.float32)[:, None]
    full = list(toy2d.host_batches(points, 8, 0, 0, 20, chunk=4, boundaries=(6,)))
    # Stacks end at multiples of the chunk (4) and of the checkpoint interval (6).
    assert [len(b["x"]) for b in full] == [4, 2, 2, 4, 4, 2, 2]
    flat = np.concatenate([b["x"] for b in full])
    assert flat.shape == (20, 8, 1)
    # An epoch (6 batches of 8) uses distinct points; the next one is a new permutation.
    assert len(np.unique(flat[:6])) == 48 and not np.array_equal(flat[:6], flat[6:12])
    resumed = np.concatenate([b["x"] for b in toy2d.host_batches(points, 8, 0, 9, 20, chunk=4)])
    np.testing.assert_array_equal(resumed, flat[9:])


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.toy2d", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_toy2d_bad_flag_exits_2_with_one_clear_line():
    result = _cli("--dataset", "circles")
    assert result.returncode == 2, result.stderr
    assert "invalid choice: 'circles'" in result.stderr
    assert "Traceback" not in result.stderr and "usage:" in result.stderr


def test_toy2d_tutorial_schedule_conflicts_with_other_schedule_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(toy2d.Toy2dConfig, ["--tutorial-schedule", "--beta-end", "0.2"])
    assert exit_info.value.code == 2
    assert "--tutorial-schedule fixes the schedule" in capsys.readouterr().err


def test_toy2d_defaults_are_the_tutorial_recipe_with_a_destroying_schedule():
    config = toy2d.resolve(toy2d.Toy2dConfig())
    assert config.dataset == "moons" and config.num_points == 10_000
    assert config.train_steps == 1000 * (10_000 // 128)  # 1000 epochs
    assert (config.batch_size, config.learning_rate, config.grad_clip) == (128, 1e-3, 1.0)
    assert config.ema_decay == 0.9 and config.antithetic
    assert (config.schedule, config.num_timesteps, config.beta_start) == ("sigmoid", 100, 1e-5)
    assert config.beta_end == 0.1
    assert toy2d.build_schedule(config).final_alpha_bar < 0.01
    tutorial = toy2d.resolve(toy2d.Toy2dConfig(tutorial_schedule=True))
    assert toy2d.build_schedule(tutorial).final_alpha_bar == pytest.approx(0.778, abs=1e-3)
