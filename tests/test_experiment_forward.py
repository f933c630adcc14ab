"""Smoke test of `python -m experiments.forward`: tiny settings, output contract, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import forward
from experiments._cli import parse_config
from jaxdiff.outputs import read_metrics

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--num-timesteps", "50", "--num-digits", "2", "--chains", "8", "--mixture-samples", "500",
    "--gif-frames", "3",
]  # fmt: skip


def test_forward_smoke_output_contract(mnist_data_dir, tmp_path):
    out = tmp_path / "run"
    argv = [*TINY, "--out", str(out), "--data-dir", str(mnist_data_dir)]
    metrics = forward.main(parse_config(forward.ForwardConfig, argv))

    for name in (
        "config.json", "metrics.jsonl", "metrics.json", "samples.npy", "noisy_digits.npy",
        "report.md", "iterative_vs_closed_form.png", "forward_linear.png", "forward_cosine.png",
        "forward_process.gif", "schedules.png", "mixture_density.png", "mixture_convergence.png",
    ):  # fmt: skip
        assert (out / name).is_file(), name
    ts = forward.show_timesteps(50)
    assert ts[0] == 0 and ts[-1] == 49 and metrics["timesteps"] == ts
    samples = np.load(out / "samples.npy")
    assert samples.shape == (500, 1) and samples.dtype == np.float32
    assert np.load(out / "noisy_digits.npy").shape == (len(ts), 2, 28, 28, 1)
    records = read_metrics(out / "metrics.jsonl")
    assert [r["t"] for r in records if r["demo"] == "mixture"] == ts
    assert [r["t"] for r in records if r["demo"] == "iterative_vs_closed_form"] == ts
    # The padded, compiled chain is the chain: its spread matches the closed form's.
    for r in records:
        if r["demo"] == "iterative_vs_closed_form" and r["t"] > 0:
            assert r["iterative_std"] == pytest.approx(r["exact_std"], rel=0.2)
    saved = json.loads((out / "metrics.json").read_text())
    assert (
        saved["mixture"]["final"]["tv_exact_vs_normal"]
        < saved["mixture"]["per_timestep"][0]["tv_exact_vs_normal"]
    )
    report = (out / "report.md").read_text()
    for figure in ("iterative_vs_closed_form.png", "mixture_density.png", "forward_process.gif"):
        assert figure in report

    with pytest.raises(FileExistsError, match="--overwrite"):
        forward.main(parse_config(forward.ForwardConfig, argv))


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.forward", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_forward_bad_flag_exits_2_with_one_clear_line():
    result = _cli("--chains", "0")
    assert result.returncode == 2, result.stderr
    assert "--chains must be >= 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr and "usage:" in result.stderr


def test_forward_missing_data_says_what_to_pass(tmp_path):
    result = _cli("--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "--data-dir" in result.stderr or "TFDS_DATA_DIR" in result.stderr
    assert not (tmp_path / "o").exists()
