"""Tests for what jaxdiff.checkpoint leaves to orbax (save interval, retention) and for its
fingerprints: the definition, shard independence, older formats, and the one write probe.

tests/test_checkpoint.py covers exact resume, corruption handling and save errors.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxdiff.checkpoint import (
    Checkpointer,
    CorruptCheckpointError,
    integrity,
    probe_writable,
    tree_fingerprints,
)
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
# fingerprints
# ----------------------------------------------------------------------------------------------


def _reference(x: np.ndarray) -> str:
    """sum_i (2 i + 1) w_i mod 2**64 with Python integers, over the words of ``x``."""
    a = np.asarray(x, order="C")
    size = a.dtype.itemsize
    word = np.uint32 if size % 4 == 0 else (np.uint8 if size == 1 else np.uint16)
    words = a.reshape(-1).view(word).tolist()
    return f"{sum((2 * i + 1) * w for i, w in enumerate(words)) % (1 << 64):016x}"


@pytest.mark.parametrize(
    "dtype",
    [np.float32, np.float64, np.int8, np.uint16, np.bool_, np.complex64, ml_dtypes.bfloat16],
)
@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (2, 3, 4)])
def test_fingerprint_is_the_documented_weighted_sum(dtype, shape):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 100).astype(dtype)
    expected = _reference(x)
    assert tree_fingerprints({"x": x})["x"] == expected
    if dtype is not np.float64:  # JAX keeps 32-bit types by default
        assert tree_fingerprints({"x": jnp.asarray(x)})["x"] == expected


def test_fingerprint_blocks_add_up_and_long_axes_are_split(monkeypatch):
    x = np.random.default_rng(1).standard_normal((6, 10)).astype(np.float64)
    whole = integrity._block_hash(x, (0, 0), x.shape)
    parts = sum(
        integrity._block_hash(x[r : r + 3, c : c + 5], (r, c), x.shape)
        for r in (0, 3)
        for c in (0, 5)
    )
    assert parts % (1 << 64) == whole  # shards are hashed separately and added
    monkeypatch.setattr(integrity, "_CHUNK", 4)
    assert integrity._block_hash(x, (0, 0), x.shape) == whole
    assert f"{whole:016x}" == _reference(x)


def test_fingerprint_catches_a_bit_flip_anywhere():
    x = np.random.default_rng(2).standard_normal(257).astype(np.float32)
    base = _reference(x)
    for i in range(x.size):
        for bit in (0, 17, 31):
            y = x.copy()
            y.view(np.uint32)[i] ^= np.uint32(1 << bit)
            assert tree_fingerprints({"x": y})["x"] != base, (i, bit)


def _rewrite_checksums(step_dir: Path, fmt: str) -> None:
    path = step_dir / "checksums" / "metadata"
    item = json.loads(path.read_text())
    item["format"] = fmt
    path.write_text(json.dumps(item))


def test_fingerprints_of_an_unknown_format_are_refused(tmp_path):
    """One fingerprint format: a step whose checksums item names another (including the
    splitmix64 format of the development versions before 0.1.0) is corrupt, not restored."""
    with Checkpointer(tmp_path / "ckpt", async_save=False) as ckpt:
        ckpt.save(1, _state(1))
    for fmt in ("jaxdiff-splitmix64-sum-v1", "something-else"):
        _rewrite_checksums(tmp_path / "ckpt" / "1", fmt)
        with Checkpointer(tmp_path / "ckpt", read_only=True) as ckpt:
            with pytest.raises(CorruptCheckpointError, match="unknown format"):
                ckpt.restore(_state(0), step=1)


# ----------------------------------------------------------------------------------------------
# the write probe (jaxdiff.outputs.probe_writable, also used for the checkpoint directory)
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
