"""Tests for what jaxdiff.checkpoint leaves to orbax (save interval, retention) and for the
write probe it shares with jaxdiff.outputs.

tests/test_checkpoint.py covers exact resume, corruption handling and save errors.
"""

from __future__ import annotations

import errno
import os

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.checkpoint import Checkpointer, probe_writable
from jaxdiff.outputs import probe_writable as probe_output_dir

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _state(step: int) -> dict:
    return {"w": jnp.full((8, 8), float(step)), "step": jnp.int32(step)}


# ----------------------------------------------------------------------------------------------
# orbax's save decision and preservation policies
# ----------------------------------------------------------------------------------------------


def test_orbax_save_interval_skips_off_interval_steps_and_force_saves(tmp_path):
    with Checkpointer(tmp_path / "ckpt", save_every=5, max_to_keep=None, async_save=False) as ckpt:
        # Not even the first save of a fresh directory is written off the interval.
        assert not ckpt.should_save(1)
        assert not ckpt.save(1, _state(1))
        assert ckpt.all_steps() == []
        assert ckpt.should_save(5)
        assert ckpt.save(5, _state(5))
        assert not ckpt.should_save(5)  # already saved
        assert [ckpt.save(s, _state(s)) for s in (6, 7, 8, 9)] == [False] * 4
        assert ckpt.save(7, _state(7), force=True)  # force writes off the interval
        assert not ckpt.save(7, _state(70), force=True)  # but never over an existing step
        assert ckpt.should_save(10) and not ckpt.should_save(11)
        assert ckpt.save(10, _state(10))
        assert ckpt.all_steps() == [5, 7, 10]
        state, _ = ckpt.restore(_state(0), step=7)
    np.testing.assert_array_equal(np.asarray(state["w"]), np.full((8, 8), 7.0))
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["10", "5", "7"]


def test_every_step_without_save_every_and_latest_n_retention(tmp_path):
    with Checkpointer(tmp_path / "ckpt", max_to_keep=2) as ckpt:  # asynchronous
        assert all(ckpt.save(s, _state(s)) for s in (1, 2, 3))
        ckpt.wait()
        assert ckpt.all_steps() == [2, 3]
    with Checkpointer(tmp_path / "ckpt", read_only=True) as ckpt:
        assert not ckpt.should_save(4)  # a read-only checkpointer never saves


def test_a_due_or_not_save_below_a_newer_step_is_an_error(tmp_path):
    with Checkpointer(tmp_path / "ckpt", save_every=10, async_save=False) as ckpt:
        assert ckpt.save(20, _state(20))
        for step in (10, 11):  # due or not: the run's checkpoints would be ignored
            with pytest.raises(ValueError, match=r"newer step\(s\) \[20\]"):
                ckpt.save(step, _state(step))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="save_every must be >= 1"):
        Checkpointer("/nonexistent", save_every=0)
    with pytest.raises(ValueError, match="max_to_keep must be >= 1"):
        Checkpointer("/nonexistent", max_to_keep=0)


# ----------------------------------------------------------------------------------------------
# the write probe (jaxdiff.outputs.probe_writable, shared by the checkpoint directory)
# ----------------------------------------------------------------------------------------------


def test_one_write_probe_with_two_messages(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="cannot write to output directory") as out_error:
        probe_output_dir(blocker / "run")
    with pytest.raises(PermissionError, match=r"checkpoint directory .* is not writable") as error:
        probe_writable(blocker / "run")
    assert out_error.value.errno == error.value.errno == errno.ENOTDIR
    with pytest.raises(PermissionError, match=r"\(exists and is not a directory\)"):
        probe_writable(blocker)
    probe_output_dir(tmp_path / "new" / "run")
    assert os.listdir(tmp_path / "new" / "run") == []
