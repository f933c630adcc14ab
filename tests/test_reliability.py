"""Crashes never lose work: ``kill -9`` in the middle of training and in the middle of a save.

Both tests kill a real process (SIGKILL: no handler runs, nothing is flushed) and then check
what a user would do next. Non-finite losses, failing and unwritable saves, corrupt or truncated
checkpoints and a resume with a different configuration are covered beside the code they test
(tests/test_loop.py, tests/test_checkpoint.py, tests/test_outputs.py and the experiment tests).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxdiff.checkpoint import Checkpointer
from jaxdiff.outputs import read_metrics

ROOT = Path(__file__).resolve().parents[1]

TRAIN_STEPS = 2000
CKPT_EVERY = 100
TOY2D = [
    "--num-points", "256", "--batch-size", "32", "--hidden", "16", "--num-timesteps", "20",
    "--beta-end", "0.5", "--num-samples", "64", "--steps-per-call", "10", "--gif-frames", "2",
    "--no-progress", "--no-evaluate", "--train-steps", str(TRAIN_STEPS),
    "--checkpoint-every", str(CKPT_EVERY),
]  # fmt: skip


def _toy2d(out: Path, *extra: str, cwd: Path = ROOT, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.toy2d", *TOY2D, "--out", str(out), *extra],
        cwd=cwd,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output
    return output


def _committed(out: Path) -> list[int]:
    ckpts = out / "checkpoints"
    if not ckpts.is_dir():
        return []
    return sorted(
        int(p.name) for p in ckpts.iterdir() if p.name.isdigit() and (p / "state").is_dir()
    )


def _final_state(out: Path):
    return ocp.StandardCheckpointer().restore(out / "checkpoints" / str(TRAIN_STEPS) / "state")


def test_kill_9_mid_training_then_resume_equals_an_uninterrupted_run(tmp_path):
    # The uninterrupted run also shows that an experiment writes only under --out and
    # --cache-dir: it starts in an empty folder with an empty HOME (matplotlib's own font cache
    # goes to MPLCONFIGDIR).
    sandbox = tmp_path / "sandbox"
    for name in ("cwd", "home", "mpl"):
        (sandbox / name).mkdir(parents=True)
    reference = _toy2d(
        tmp_path / "straight", "--evaluate", "--cache-dir", str(sandbox / "cache"),
        cwd=sandbox / "cwd", HOME=str(sandbox / "home"), MPLCONFIGDIR=str(sandbox / "mpl"),
        XDG_CACHE_HOME=str(sandbox / "home" / ".cache"),
    )  # fmt: skip
    victim = _toy2d(tmp_path / "killed")
    try:
        deadline = time.monotonic() + 240
        while not _committed(tmp_path / "killed"):  # kill once a checkpoint is on disk
            assert victim.poll() is None, victim.communicate()[0]
            assert time.monotonic() < deadline, "no checkpoint appeared within 240 s"
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=60)
        assert victim.returncode == -signal.SIGKILL
        before = _committed(tmp_path / "killed")
        assert before and max(before) < TRAIN_STEPS  # killed in the middle of training
        assert not (tmp_path / "killed" / "samples.npy").exists()

        output = _finish(_toy2d(tmp_path / "killed", "--resume"))
        assert f"resumed from the checkpoint at step {max(before)}" in output, output
    finally:
        for proc in (reference, victim):
            if proc.poll() is None:
                proc.kill()
    _finish(reference)

    written = {p.relative_to(sandbox).parts[0] for p in sandbox.rglob("*") if p.is_file()}
    assert written <= {"cache", "mpl"}, sorted(written)

    straight, resumed = _final_state(tmp_path / "straight"), _final_state(tmp_path / "killed")
    leaves = jax.tree_util.tree_leaves_with_path(straight)
    assert len(leaves) == len(jax.tree_util.tree_leaves(resumed)) > 0
    for (path, a), b in zip(leaves, jax.tree_util.tree_leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))
    np.testing.assert_array_equal(
        np.load(tmp_path / "straight" / "samples.npy"),
        np.load(tmp_path / "killed" / "samples.npy"),
    )
    # metrics.jsonl holds every step exactly once: the lines written after the last checkpoint
    # by the killed process were dropped on resume and written again.
    steps = [r["step"] for r in read_metrics(tmp_path / "killed" / "metrics.jsonl")]
    assert steps == list(range(1, TRAIN_STEPS + 1))


def _state(step: int) -> dict:  # as in tests/_kill_during_save_worker.py
    return {"params": {"w": jnp.full((256, 256), float(step)), "b": jnp.arange(7.0) * step}}


def test_kill_9_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    directory = tmp_path / "ckpt"
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "_kill_during_save_worker.py"), str(directory)],
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = worker.stdout.readline()
        while line and "IN_SAVE" not in line:
            line = worker.stdout.readline()
        assert "IN_SAVE" in line, worker.communicate(timeout=60)[0]
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == -signal.SIGKILL
    leftovers = [p.name for p in directory.iterdir() if p.name.startswith("2.")]
    assert leftovers, "the kill did not land inside the save of step 2"

    # Resume sees only the committed step 1, bit for bit; the next save of step 2 succeeds.
    with Checkpointer(directory) as ckpt:
        assert ckpt.all_steps() == [1]
        state, _ = ckpt.restore(jax.tree_util.tree_map(jnp.zeros_like, _state(0)))
        assert ckpt.last_restored_step == 1
        expected = jax.tree_util.tree_leaves(_state(1))
        for a, b in zip(jax.tree_util.tree_leaves(state), expected, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert ckpt.save(2, _state(2), force=True)
        ckpt.wait()
        assert ckpt.all_steps() == [1, 2]
        state, _ = ckpt.restore(jax.tree_util.tree_map(jnp.zeros_like, _state(0)))
    np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.full((256, 256), 2.0))
    assert not [p for p in directory.iterdir() if "tmp" in p.name]


def test_no_code_executing_loader_anywhere():
    """No pickle (or eval/exec, torch.load, yaml.load) in the library or the experiments: every
    file this project reads is orbax arrays, JSON or ``.npz``/``.npy`` with allow_pickle=False."""
    forbidden = re.compile(
        r"\bimport (c?pickle|dill|cloudpickle|shelve|marshal)\b|allow_pickle\s*=\s*True|"
        r"\btorch\.load\(|\byaml\.(unsafe_)?load\(|(?<![\w.])(eval|exec)\("
    )
    offenders = []
    for folder in ("jaxdiff", "experiments"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if forbidden.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    loads = [
        f"{p.relative_to(ROOT)}: {line.strip()}"
        for folder in ("jaxdiff", "experiments")
        for p in (ROOT / folder).rglob("*.py")
        for line in p.read_text().splitlines()
        if "np.load(" in line
    ]
    assert loads and all("allow_pickle=False" in line for line in loads), loads
