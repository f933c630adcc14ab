"""Smoke test of `python -m experiments.digits`: tiny settings, output contract, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import digits
from experiments._cli import parse_config
from jaxdiff.outputs import read_metrics

ROOT = Path(__file__).resolve().parents[1]

# One-level U-Net, one step per compiled call and 2 sampler steps: XLA:CPU compile time is what
# this test spends.
TINY = [
    "--model", "tiny", "--train-steps", "4", "--steps-per-call", "1", "--num-samples", "48",
    "--sample-steps", "2", "--checkpoint-every", "2", "--num-timesteps", "50",
    "--schedule", "cosine", "--no-evaluate", "--no-progress",
]  # fmt: skip


def test_digits_smoke_output_contract(tmp_path):
    out = tmp_path / "run"
    argv = [*TINY, "--out", str(out)]
    metrics = digits.main(parse_config(digits.DigitsConfig, argv))

    for name in (
        "config.json", "metrics.jsonl", "metrics.json", "samples.npy", "report.md",
        "schedules.png", "forward_process.png", "loss_curves.png", "samples_grid.png",
        "samples_vs_real.png", "reverse_process.png", "histogram_evolution.png",
        "reverse_process.gif",
    ):  # fmt: skip
        assert (out / name).is_file(), name
    samples = np.load(out / "samples.npy")
    assert samples.shape == (48, 8, 8, 1) and samples.dtype == np.float32
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["train_steps"] == 4 and saved["sample_steps"] == 2
    assert metrics["parameters"] == saved["parameters"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "tiny" and config["batch_size"] == 32
    assert config["learning_rate"] == 2e-4 and config["weight_decay"] == 0.01
    report = (out / "report.md").read_text()
    for figure in ("samples_grid.png", "reverse_process.gif", "histogram_evolution.png"):
        assert figure in report
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == [
        "2", "4",
    ]  # fmt: skip
    with pytest.raises(FileExistsError, match="--resume"):
        digits.main(parse_config(digits.DigitsConfig, argv))


def test_digits_defaults_are_the_tutorial_recipe():
    config = digits.resolve(digits.DigitsConfig())
    assert config.model == "improved" and config.schedule == "linear"
    assert config.num_timesteps == 1000 and config.batch_size == 32
    assert config.learning_rate == 2e-4 and config.weight_decay == 0.01
    assert config.grad_clip == 1.0
    assert config.train_steps == 50 * (1797 // 32)  # 50 epochs


def test_digits_bad_flag_exits_2_with_one_clear_line():
    result = subprocess.run(
        [sys.executable, "-m", "experiments.digits", "--model", "huge"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "invalid choice: 'huge'" in result.stderr
    assert "Traceback" not in result.stderr and "usage:" in result.stderr
