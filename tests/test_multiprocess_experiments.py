"""An experiment run as 2 processes equals the same run as 1 process with 2 devices.

``python -m experiments.toy2d --distributed`` is started twice, as processes 0 and 1 of a
``jax.distributed`` run on this machine (one CPU device each, gloo collectives), for 20 steps and
then resumed to 30 the same way; the reference is one uninterrupted process with 2 forced host
devices and the same global batch. The per-step losses and the samples must agree: each process
feeds its half of every batch, process 0 alone writes files, the others wait until the run folder
is ready, and the checkpoint written by the two processes resumes exactly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--num-points", "256", "--batch-size", "32", "--hidden", "16", "--num-timesteps", "20",
    "--beta-end", "0.5", "--num-samples", "64", "--steps-per-call", "10",
    "--checkpoint-every", "10", "--gif-frames", "2", "--no-evaluate", "--no-progress",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: Path, devices: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        JAXDIFF_CACHE_DIR=str(tmp / "cache"),
        **extra,
    )
    return env


def _toy2d(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "experiments.toy2d", *TINY, *args],
            cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _launch_two(tmp: Path, args: list[str], tag: str, outs=None) -> list[subprocess.Popen]:
    """Processes 0 and 1 of one ``jax.distributed`` run of ``experiments.toy2d`` (``outs``:
    a different ``--out`` for each process, else ``args`` names it)."""
    port = _free_port()
    coordinator = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2"}
    return [
        _toy2d(
            ["--distributed", *args, *(["--out", str(outs[i])] if outs else [])],
            _env(tmp, 1, JAX_PROCESS_ID=str(i), **coordinator),
            tmp / f"{tag}-{i}.log",
        )
        for i in range(2)
    ]


def _run_two_processes(tmp: Path, args: list[str], tag: str) -> None:
    for i, proc in enumerate(_launch_two(tmp, args, tag)):
        assert proc.wait(timeout=600) == 0, (tmp / f"{tag}-{i}.log").read_text()[-3000:]


def _run_one_process(tmp: Path, args: list[str], tag: str) -> None:
    proc = _toy2d(args, _env(tmp, 2), tmp / f"{tag}.log")
    assert proc.wait(timeout=600) == 0, (tmp / f"{tag}.log").read_text()[-3000:]


def _losses(run: Path) -> np.ndarray:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return np.array([json.loads(line)["loss"] for line in lines])


def test_toy2d_as_two_processes_equals_one_process_and_resumes(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    _run_two_processes(tmp_path, ["--train-steps", "20", "--out", str(two)], "two-20")
    _run_two_processes(tmp_path, ["--train-steps", "30", "--resume", "--out", str(two)], "two-30")
    _run_one_process(tmp_path, ["--train-steps", "30", "--out", str(one)], "one-30")
    losses = _losses(two)
    assert len(losses) == 30  # every step logged once, by process 0 only, across the resume
    np.testing.assert_allclose(losses, _losses(one), rtol=1e-6)
    np.testing.assert_allclose(
        np.load(two / "samples.npy"), np.load(one / "samples.npy"), atol=1e-5
    )
    assert sorted(p.name for p in (two / "checkpoints").iterdir() if p.name.isdigit()) == [
        "10", "20", "30",
    ]  # fmt: skip
    assert "resumed from the checkpoint at step 20" in (tmp_path / "two-30-0.log").read_text()


def test_an_out_folder_one_process_cannot_see_stops_every_process(tmp_path):
    """Two processes given different --out folders stand for hosts without a shared file
    system: both stop before training, with the same one-line error naming the blind process."""
    outs = [tmp_path / "host0", tmp_path / "host1"]
    procs = _launch_two(tmp_path, ["--train-steps", "10"], "blind", outs=outs)
    for i, proc in enumerate(procs):
        assert proc.wait(timeout=600) == 2, (tmp_path / f"blind-{i}.log").read_text()[-3000:]
        log = (tmp_path / f"blind-{i}.log").read_text()
        assert "is not visible from process(es) [1]" in log and "Traceback" not in log
    assert not (tmp_path / "host0" / "checkpoints").exists()
