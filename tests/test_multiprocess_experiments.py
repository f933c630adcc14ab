"""An experiment run as 2 processes equals the same run as 1 process with 2 devices.

``python -m experiments.toy2d --distributed`` is started twice, as processes 0 and 1 of a
``jax.distributed`` run on this machine (one CPU device each, gloo collectives), for 20 steps and
then resumed to 30 the same way; the reference is one uninterrupted process with 2 forced host
devices and the same global batch. The per-step losses and the samples must agree: each process
feeds its half of every batch, process 0 alone writes files, the others wait until the run folder
is ready, the checkpoint written by the two processes resumes exactly, and the final samples are
split over both processes' devices. ``python -m experiments.mnist --distributed`` (the small CNN,
6 steps with checkpoints and progress grids) is checked the same way.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# 6 steps of 8 with progress grids and checkpoints. The small CNN, not the tiny U-Net: the
# multi-process path is the same for every model, and the U-Net's training step takes ~3x as
# long to compile (three compiles here). Guided sampling over 2 processes: tests/test_sharding.py.
MNIST = [
    "experiments.mnist", "--model", "cnn", "--train-steps", "6", "--batch-size", "8",
    "--train-limit", "64", "--num-samples", "10", "--sample-every", "3",
    "--checkpoint-every", "3", "--sample-steps", "4", "--num-timesteps", "40",
    "--steps-per-call", "3", "--no-evaluate", "--no-progress",
]  # fmt: skip
TOY2D = [
    "experiments.toy2d", "--num-points", "256", "--batch-size", "32", "--hidden", "16",
    "--num-timesteps", "20", "--beta-end", "0.5", "--num-samples", "64", "--steps-per-call", "10",
    "--checkpoint-every", "10", "--gif-frames", "2", "--no-evaluate", "--no-progress",
]  # fmt: skip
TOY2D_STEPS = 3000  # long enough that a signal sent after step 100 lands mid-training


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


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``python -m experiments.NAME ...`` (``args[0]`` is the module) in the background."""
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT
        )


def _launch_two(tmp: Path, args: list[str], tag: str, outs=None) -> list[subprocess.Popen]:
    """Processes 0 and 1 of one ``jax.distributed`` run of ``args`` (module and flags;
    ``outs``: a different ``--out`` for each process, else ``args`` names it)."""
    port = _free_port()
    coordinator = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2"}
    return [
        _start(
            [*args, "--distributed", *(["--out", str(outs[i])] if outs else [])],
            _env(tmp, 1, JAX_PROCESS_ID=str(i), **coordinator),
            tmp / f"{tag}-{i}.log",
        )
        for i in range(2)
    ]


def _run_two_processes(tmp: Path, args: list[str], tag: str) -> None:
    for i, proc in enumerate(_launch_two(tmp, args, tag)):
        assert proc.wait(timeout=600) == 0, (tmp / f"{tag}-{i}.log").read_text()[-3000:]


def _run_one_process(tmp: Path, args: list[str], tag: str) -> None:
    proc = _start(args, _env(tmp, 2), tmp / f"{tag}.log")
    assert proc.wait(timeout=600) == 0, (tmp / f"{tag}.log").read_text()[-3000:]


def _losses(run: Path) -> np.ndarray:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return np.array([json.loads(line)["loss"] for line in lines])


def _wait_for_lines(path: Path, n: int, procs: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + 300
    while not path.exists() or path.read_bytes().count(b"\n") < n:
        for proc, log in zip(procs, logs, strict=True):
            assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "training did not start within 300 s"
        time.sleep(0.01)


def test_toy2d_as_two_processes_stops_together_on_sigterm_and_resumes_exactly(tmp_path):
    """SIGTERM to process 1 alone (a preemption notice) stops both processes after the same
    call: both save that step and exit 143; the resumed run then equals one process with two
    devices, loss for loss and sample for sample."""
    two, one = tmp_path / "two", tmp_path / "one"
    run = [*TOY2D, "--train-steps", str(TOY2D_STEPS), "--checkpoint-every", "1000"]
    procs = _launch_two(tmp_path, [*run, "--out", str(two)], "two")
    logs = [tmp_path / f"two-{i}.log" for i in range(2)]
    try:
        _wait_for_lines(two / "metrics.jsonl", 100, procs, logs)
        procs[1].send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert codes == [143, 143], [log.read_text()[-3000:] for log in logs]
    saved = sorted(int(p.name) for p in (two / "checkpoints").iterdir() if p.name.isdigit())
    assert len(saved) == 1 and 100 <= saved[0] < TOY2D_STEPS, saved
    for log in logs:
        assert f"step {saved[0]} is saved" in log.read_text(), log.read_text()[-3000:]

    _run_two_processes(tmp_path, [*run, "--resume", "--out", str(two)], "two-resumed")
    # The reference also checks that --deterministic (XLA's GPU flag) runs, unchanged, on a CPU.
    _run_one_process(tmp_path, [*run, "--deterministic", "--out", str(one)], "one")
    losses = _losses(two)
    assert len(losses) == TOY2D_STEPS  # every step logged once, by process 0 only
    np.testing.assert_allclose(losses, _losses(one), rtol=1e-6)
    np.testing.assert_allclose(
        np.load(two / "samples.npy"), np.load(one / "samples.npy"), atol=1e-5
    )
    resumed = f"resumed from the checkpoint at step {saved[0]}"
    assert resumed in (tmp_path / "two-resumed-0.log").read_text()


def test_a_hung_process_stops_the_other_within_the_stall_timeout(tmp_path):
    """Process 1 hangs (SIGSTOP) mid-training: process 0, waiting in a collective that cannot
    finish, stops with one error line after --stall-timeout instead of gloo's 30 minutes."""
    out = tmp_path / "run"
    run = [*TOY2D, "--train-steps", str(TOY2D_STEPS), "--checkpoint-every", "1000"]
    procs = _launch_two(tmp_path, [*run, "--stall-timeout", "10", "--out", str(out)], "hung")
    logs = [tmp_path / f"hung-{i}.log" for i in range(2)]
    try:
        _wait_for_lines(out / "metrics.jsonl", 100, procs, logs)
        procs[1].send_signal(signal.SIGSTOP)
        start = time.monotonic()
        code = procs[0].wait(timeout=240)
        waited = time.monotonic() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    log = logs[0].read_text()
    assert code == 1 and 10 <= waited < 120, (code, waited, log[-3000:])
    assert "another process of this run has stopped or hangs" in log, log[-3000:]
    assert "Traceback" not in log


def test_an_out_folder_one_process_cannot_see_stops_every_process(tmp_path):
    """Two processes given different --out folders stand for hosts without a shared file
    system: both stop before training, with the same one-line error naming the blind process."""
    outs = [tmp_path / "host0", tmp_path / "host1"]
    procs = _launch_two(tmp_path, [*TOY2D, "--train-steps", "10"], "blind", outs=outs)
    for i, proc in enumerate(procs):
        assert proc.wait(timeout=600) == 2, (tmp_path / f"blind-{i}.log").read_text()[-3000:]
        log = (tmp_path / f"blind-{i}.log").read_text()
        assert "is not visible from process(es) [1]" in log and "Traceback" not in log
    assert not (tmp_path / "host0" / "checkpoints").exists()


def test_mnist_as_two_processes_equals_one_process(tmp_path, mnist_data_dir):
    two, one = tmp_path / "two", tmp_path / "one"
    mnist = [*MNIST, "--data-dir", str(mnist_data_dir)]
    _run_two_processes(tmp_path, [*mnist, "--out", str(two)], "mnist-two")
    _run_one_process(tmp_path, [*mnist, "--out", str(one)], "mnist-one")
    losses = _losses(two)
    assert len(losses) == 6
    np.testing.assert_allclose(losses, _losses(one), rtol=1e-6)
    # The final samples, split over both processes' devices.
    np.testing.assert_allclose(
        np.load(two / "samples.npy"), np.load(one / "samples.npy"), atol=1e-5
    )
    grids = sorted(p.name for p in (two / "progress").iterdir())
    assert grids == sorted(p.name for p in (one / "progress").iterdir()) and len(grids) == 2
