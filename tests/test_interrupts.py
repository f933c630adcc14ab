"""SIGINT and SIGTERM, sent to a real training process at arbitrary points, lose nothing: the
process saves the state of the step it stopped at and exits 130 or 143 with one line, and
``--resume`` then ends bit for bit where an uninterrupted run ends, on both data paths (the
dataset on the devices, and stacked host batches). The worker is tests/_fit_worker.py; the
experiments' own handling (toy2d, one line, exit code) is in tests/test_reliability.py and the
two-process agreement in tests/test_multiprocess_experiments.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxdiff.outputs import read_metrics

ROOT = Path(__file__).resolve().parents[1]
STEPS = 1000
# (signal, metrics lines seen before it is sent): points that are no call or hook multiple
POINTS = [(signal.SIGINT, 37), (signal.SIGTERM, 444), (signal.SIGINT, 777)]


def _worker(mode: str, out: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "_fit_worker.py"), mode, str(out), str(STEPS)],
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _final(out: Path):
    restored = ocp.StandardCheckpointer().restore(out / "ckpt" / str(STEPS) / "state")
    return [np.asarray(leaf) for leaf in __import__("jax").tree_util.tree_leaves(restored)]


@pytest.mark.parametrize("mode", ["device", "host"])
def test_signals_at_arbitrary_points_then_resume_equal_a_straight_run(tmp_path, mode):
    cache = tmp_path / "xla"
    straight = _worker(mode, tmp_path / "straight", cache)
    output = straight.communicate(timeout=300)[0]
    assert straight.returncode == 0, output
    for i, (signum, after) in enumerate(POINTS):
        out = tmp_path / f"stopped-{i}"
        victim = _worker(mode, out, cache)
        try:
            deadline = time.monotonic() + 120
            while _lines(out / "metrics.jsonl") < after:
                assert victim.poll() is None, victim.communicate()[0]
                assert time.monotonic() < deadline, "training did not reach the point in 120 s"
                time.sleep(0.002)
            victim.send_signal(signum)
            output = victim.communicate(timeout=120)[0]
        finally:
            if victim.poll() is None:
                victim.kill()
        name = signal.Signals(signum).name
        assert victim.returncode == 128 + signum, output
        saved = sorted(int(p.name) for p in (out / "ckpt").iterdir() if p.name.isdigit())
        assert saved and after <= saved[-1] < STEPS, (saved, output)  # stopped mid-run
        assert f"{name} received" in output and f"step {saved[-1]} is saved" in output, output
        # every step up to the saved one was logged, none after it
        assert [r["step"] for r in read_metrics(out / "metrics.jsonl")][-1] >= saved[-1]

        resumed = _worker(mode, out, cache)
        output = resumed.communicate(timeout=300)[0]
        assert resumed.returncode == 0, output
        for a, b in zip(_final(tmp_path / "straight"), _final(out), strict=True):
            np.testing.assert_array_equal(a, b)
        steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
        assert steps == list(range(1, STEPS + 1))  # every step once, across the stop
