"""Crashes and stops never lose work: ``kill -9`` in the middle of training and in the middle
of a save, SIGINT and SIGTERM mid-training, and a diverging run.

The tests stop a real process (SIGKILL: no handler runs, nothing is flushed; SIGINT/SIGTERM:
the training loop saves first) and then check what a user would do next. Failing and
unwritable saves, corrupt or truncated checkpoints and a resume with a different configuration
are covered beside the code they test (tests/test_checkpoint.py, tests/test_outputs.py and the
experiment tests).
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
import pytest

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


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted run that interrupted ones are compared with. It also shows that an
    experiment writes only under --out and --cache-dir: it starts in an empty folder with an
    empty HOME (matplotlib's own font cache goes to MPLCONFIGDIR)."""
    tmp = tmp_path_factory.mktemp("straight")
    sandbox = tmp / "sandbox"
    for name in ("cwd", "home", "mpl"):
        (sandbox / name).mkdir(parents=True)
    _finish(
        _toy2d(
            tmp / "run",
            "--evaluate",
            "--cache-dir",
            str(sandbox / "cache"),
            cwd=sandbox / "cwd",
            HOME=str(sandbox / "home"),
            MPLCONFIGDIR=str(sandbox / "mpl"),
            XDG_CACHE_HOME=str(sandbox / "home" / ".cache"),
        )
    )
    written = {p.relative_to(sandbox).parts[0] for p in sandbox.rglob("*") if p.is_file()}
    assert written <= {"cache", "mpl"}, sorted(written)
    return tmp / "run"


def _wait_for(predicate, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 240
    while not predicate():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, f"{what} did not happen within 240 s"
        time.sleep(0.005)


def _logged(out: Path) -> int:
    path = out / "metrics.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _assert_resumed_equals(straight: Path, resumed: Path) -> None:
    a_tree, b_tree = _final_state(straight), _final_state(resumed)
    leaves = jax.tree_util.tree_leaves_with_path(a_tree)
    assert len(leaves) == len(jax.tree_util.tree_leaves(b_tree)) > 0
    for (path, a), b in zip(leaves, jax.tree_util.tree_leaves(b_tree), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))
    np.testing.assert_array_equal(
        np.load(straight / "samples.npy"), np.load(resumed / "samples.npy")
    )
    # metrics.jsonl holds every step exactly once: the lines written after the last checkpoint
    # by the stopped process were dropped on resume and written again.
    steps = [r["step"] for r in read_metrics(resumed / "metrics.jsonl")]
    assert steps == list(range(1, TRAIN_STEPS + 1))


def test_kill_9_mid_training_then_resume_equals_an_uninterrupted_run(straight, tmp_path):
    victim = _toy2d(tmp_path / "killed")
    try:
        _wait_for(lambda: _committed(tmp_path / "killed"), victim, "a checkpoint")
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    before = _committed(tmp_path / "killed")
    assert before and max(before) < TRAIN_STEPS  # killed in the middle of training
    assert not (tmp_path / "killed" / "samples.npy").exists()

    output = _finish(_toy2d(tmp_path / "killed", "--resume"))
    assert f"resumed from the checkpoint at step {max(before)}" in output, output
    _assert_resumed_equals(straight, tmp_path / "killed")


def test_sigint_and_sigterm_mid_training_then_resume_equals_a_straight_run(straight, tmp_path):
    """Ctrl-C and a preemption notice on the host-batch path with no periodic checkpoints (all
    that is saved is what the interrupt saves): one line, exit 130 / 143, and the resumed run
    ends bit for bit where the straight one does."""
    points = {signal.SIGINT: 333, signal.SIGTERM: 1111}  # metrics lines seen before sending
    victims = {s: _toy2d(tmp_path / s.name, "--checkpoint-every", "0") for s in points}
    try:
        for signum, proc in victims.items():
            out = tmp_path / signum.name
            _wait_for(lambda out=out, n=points[signum]: _logged(out) >= n, proc, "training")
            proc.send_signal(signum)
        outputs = {s: proc.communicate(timeout=120)[0] for s, proc in victims.items()}
    finally:
        for proc in victims.values():
            if proc.poll() is None:
                proc.kill()
    for signum, proc in victims.items():
        out, output = tmp_path / signum.name, outputs[signum]
        assert proc.returncode == 128 + signum, output
        saved = _committed(out)
        assert len(saved) == 1 and points[signum] <= saved[0] < TRAIN_STEPS, (saved, output)
        line = (
            f"python -m experiments.toy2d: {signum.name} received: training stopped between "
            f"steps; the state at step {saved[0]} is saved; rerun the same command with "
            "--resume to continue"
        )
        assert line in output.splitlines() and "Traceback" not in output, output
        assert not (out / "samples.npy").exists()
        output = _finish(_toy2d(out, "--checkpoint-every", "0", "--resume"))
        assert f"resumed from the checkpoint at step {saved[0]}" in output, output
        _assert_resumed_equals(straight, out)


def test_divergence_stops_with_one_line_and_resume_accepts_a_lower_learning_rate(tmp_path):
    """A learning rate of 1 makes toy2d's loss jump from ~1 to ~5e5 at step 2 (it used to train
    on to a 9.7e21 loss, checkpoint diverged states and write non-finite samples). Training
    stops there, exit 1, one error line naming the step; nothing diverged is saved; --resume
    with a lower learning rate is accepted with a warning."""
    out = tmp_path / "run"
    proc = _toy2d(out, "--learning-rate", "1", "--checkpoint-every", "1")
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, output
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1 and "training diverged at step 2: the loss" in errors[0], output
    assert "over 100 times its running mean" in errors[0] and "Traceback" not in output
    assert "the last healthy checkpoint (step 1" in errors[0], output
    assert _committed(out) == [1] and not (out / "samples.npy").exists()

    output = _finish(
        _toy2d(out, "--learning-rate", "1e-3", "--checkpoint-every", "1000", "--resume")
    )
    assert (
        "learning_rate: 1.0 -> 0.001" in output
        and "resumed from the checkpoint at step 1" in output
    ), output
    assert np.isfinite(np.load(out / "samples.npy")).all()


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
