"""Tests for jaxdiff.checkpoint: exact resume, retention, corruption handling and save errors.

Corruption is simulated on the files orbax (OCDBT + zarr) writes for one step ``<dir>/<step>/``:
``state/_METADATA`` (tree structure, shapes, dtypes), ``state/manifest.ocdbt`` and the b-tree
nodes ``state/d/*``, the array bytes ``state/ocdbt.process_0/d/*`` (arrays of a few KiB or more;
smaller ones are stored inline in the b-tree nodes), ``metadata/metadata`` (our JSON) and the
commit marker ``commit_success.txt``.

An unwritable directory cannot be made with ``chmod`` when the tests run as root, so the save
error tests use paths no one can write to (a regular file in place of the directory, ``/sys``),
a file-size limit (``RLIMIT_FSIZE``: a real I/O error inside tensorstore's writes, like a full
disk) and, for non-root users only, a ``chmod 0o555`` directory.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdiff.checkpoint import (
    CheckpointCorruptionWarning,
    Checkpointer,
    CheckpointSaveError,
    CorruptCheckpointError,
    UnverifiedCheckpointWarning,
    abstract_state,
    probe_writable,
    tree_fingerprints,
)

# A failed orbax read can leave a tensorstore callback that fires after orbax's event loop has
# closed ("RuntimeError: Event loop is closed"); it is harmless and reported as unraisable.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class TrainState(NamedTuple):
    step: jax.Array
    params: dict
    opt_state: optax.OptState
    ema: dict
    key: jax.Array


def make_state(seed: int) -> TrainState:
    """A small train state; ``params/dense/w`` (64, 64) float32 is large enough to be stored in
    its own OCDBT data file rather than inline. Built with NumPy to keep the tests fast."""
    w = np.random.default_rng(seed).standard_normal((64, 64), dtype=np.float32)
    params = {
        "dense": {"w": jnp.asarray(w), "b": jnp.asarray(np.full(64, seed, np.float32))},
        "count": jnp.asarray(np.arange(5, dtype=np.int32) + seed),
    }
    return TrainState(
        step=jnp.asarray(seed, jnp.int32),
        params=params,
        opt_state=optax.adam(1e-3).init(params),
        ema={"dense": {"w": jnp.asarray(w * 0.5)}},
        key=jax.random.key(1000 + seed),
    )


ABSTRACT = jax.eval_shape(lambda: make_state(0))


def host_view(x):
    """(dtype string, bytes) of a leaf; typed PRNG keys as (impl, key_data bytes)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return str(x.dtype), np.asarray(jax.random.key_data(x)).tobytes()
    return str(np.asarray(x).dtype), np.asarray(x).tobytes()


def assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
    for (path, x), y in zip(flat_a, jax.tree.leaves(b), strict=True):
        assert np.shape(x) == np.shape(y), jax.tree_util.keystr(path)
        assert host_view(x) == host_view(y), jax.tree_util.keystr(path)


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory) -> Path:
    """A directory with committed steps 1 and 2 (states make_state(1), make_state(2))."""
    directory = tmp_path_factory.mktemp("ckpt") / "run"
    with Checkpointer(directory, async_save=False) as ckpt:
        for step in (1, 2):
            ckpt.save(step, make_state(step), metadata={"config": {"lr": 1e-3}, "step": step})
    return directory


@pytest.fixture
def run_dir(two_steps, tmp_path) -> Path:
    """A private copy of ``two_steps`` that a test may damage."""
    return Path(shutil.copytree(two_steps, tmp_path / "run"))


# ----------------------------------------------------------------------------------------------
# exact resume
# ----------------------------------------------------------------------------------------------


def test_round_trip_is_bitwise_exact_and_survives_donation(tmp_path):
    state = make_state(3)
    expected = jax.tree.map(lambda x: x, make_state(3))  # an independent copy
    with Checkpointer(tmp_path / "ckpt") as ckpt:  # asynchronous by default
        assert ckpt.save(7, state, metadata={"note": "hi"})
        # `save` returned: the arrays are already copied off the device, so a train step may
        # donate (delete) them while the write goes on in the background.
        for leaf in jax.tree.leaves(state):
            leaf.delete()
        ckpt.wait()
        restored, meta = ckpt.restore(ABSTRACT)
    assert meta == {"note": "hi"}
    assert_bitwise_equal(restored, expected)
    assert isinstance(restored, TrainState)
    assert isinstance(restored.opt_state[0], optax.ScaleByAdamState)
    assert restored.key.dtype == expected.key.dtype  # a typed threefry key, not raw uint32


def test_round_trip_nnx_state(tmp_path):
    model = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    rngs = nnx.Rngs(dropout=5)
    _, params = nnx.split(model)
    _, rng_state = nnx.split(rngs)
    state = {"params": params, "rngs": rng_state}
    with Checkpointer(tmp_path / "ckpt", async_save=False) as ckpt:
        ckpt.save(0, state)
        graphdef, fresh = nnx.split(nnx.Linear(3, 4, rngs=nnx.Rngs(1)))
        _, fresh_rngs = nnx.split(nnx.Rngs(dropout=0))
        restored, _ = ckpt.restore({"params": fresh, "rngs": fresh_rngs})
    assert_bitwise_equal(restored, state)
    x = jnp.ones((2, 3))
    np.testing.assert_array_equal(nnx.merge(graphdef, restored["params"])(x), model(x))


def test_typed_and_raw_keys_and_scalars(tmp_path):
    state = {
        "typed": jax.random.split(jax.random.key(1), 4),
        "raw": jax.random.PRNGKey(2),  # legacy uint32 (2,) key
        "bf16": jnp.linspace(0, 1, 7, dtype=jnp.bfloat16),
        "flag": jnp.array([True, False]),
        "host": np.arange(3, dtype=np.float32),
    }
    with Checkpointer(tmp_path / "ckpt", async_save=False) as ckpt:
        ckpt.save(0, state)
        restored, _ = ckpt.restore(state)
    assert_bitwise_equal(restored, state)
    assert restored["typed"].shape == (4,)


# ----------------------------------------------------------------------------------------------
# retention, save_every, steps
# ----------------------------------------------------------------------------------------------


def test_save_every_keep_last_k_and_specific_step(tmp_path):
    with Checkpointer(tmp_path / "ckpt", max_to_keep=2, save_every=3) as ckpt:
        saved = [ckpt.save(step, make_state(step)) for step in range(10)]
        assert saved == [step % 3 == 0 for step in range(10)]
        ckpt.wait()
        assert ckpt.all_steps() == [6, 9]
        assert ckpt.latest_step() == 9
        state, _ = ckpt.restore(ABSTRACT, step=6)
        assert_bitwise_equal(state, make_state(6))
        assert ckpt.last_restored_step == 6
        assert not ckpt.save(9, make_state(9), force=True)  # never overwrites a valid step
        assert ckpt.save(10, make_state(10), force=True)  # force ignores save_every
        ckpt.wait()
        assert ckpt.all_steps() == [9, 10]
        state, _ = ckpt.restore(ABSTRACT)
        assert_bitwise_equal(state, make_state(10))
        with pytest.raises(ValueError, match=r"newer step\(s\) \[9, 10\]"):
            ckpt.save(8, make_state(8), force=True)
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["10", "9"]


def test_save_every_none_saves_every_call(tmp_path):
    with Checkpointer(tmp_path / "ckpt", max_to_keep=None, async_save=False) as ckpt:
        assert all(ckpt.save(step, {"x": jnp.float32(step)}) for step in (1, 2, 5))
        assert ckpt.all_steps() == [1, 2, 5]


def test_missing_checkpoints_are_clear_errors(tmp_path, run_dir):
    with Checkpointer(tmp_path / "empty") as ckpt:
        assert ckpt.latest_step() is None
        with pytest.raises(FileNotFoundError, match="no committed checkpoint"):
            ckpt.restore(ABSTRACT)
    with Checkpointer(run_dir, read_only=True) as ckpt:
        with pytest.raises(FileNotFoundError, match=r"step 5 .*committed steps: \[1, 2\]"):
            ckpt.restore(ABSTRACT, step=5)
        with pytest.raises(ValueError, match="read_only"):
            ckpt.save(3, make_state(3))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Checkpointer(tmp_path / "nowhere", read_only=True)
    with pytest.raises(ValueError, match="closed"):
        ckpt.latest_step()


# ----------------------------------------------------------------------------------------------
# configuration mismatch
# ----------------------------------------------------------------------------------------------


def _with_params(**params):
    def build():
        state = make_state(0)
        return state._replace(params={**state.params, **params})

    return jax.eval_shape(build)


@pytest.mark.parametrize(
    ("target", "pattern"),
    [
        (
            _with_params(dense={"w": jnp.zeros((32, 64)), "b": jnp.zeros(64)}),
            r"leaf 'params/dense/w': the checkpoint has shape \(64, 64\) float32, "
            r"the target has shape \(32, 64\) float32",
        ),
        (
            _with_params(count=jnp.zeros(5, jnp.float32)),
            r"leaf 'params/count': .*\(5,\) int32.*\(5,\) float32",
        ),
        (
            _with_params(extra=jnp.zeros(3)),
            r"leaf 'params/extra' \(shape \(3,\) float32\) is in the target but not in the "
            r"checkpoint",
        ),
        (
            jax.eval_shape(lambda: make_state(0)._replace(ema={})),
            r"leaf 'ema/dense/w' \(shape \(64, 64\) float32\) is in the checkpoint but not in",
        ),
        (
            jax.eval_shape(lambda: make_state(0)._replace(key=jax.random.key(0, impl="rbg"))),
            r"leaf 'key': the checkpoint has shape \(2,\) uint32, the target has shape \(4,\)",
        ),
    ],
    ids=["shape", "dtype", "missing-in-checkpoint", "missing-in-target", "key-impl"],
)
def test_mismatched_configuration_raises_naming_leaf(run_dir, target, pattern):
    with Checkpointer(run_dir, read_only=True) as ckpt:
        with warnings.catch_warnings():
            warnings.simplefilter("error", CheckpointCorruptionWarning)  # not treated as corrupt
            with pytest.raises(ValueError, match=pattern) as info:
                ckpt.restore(target)
    assert "step 2" in str(info.value) and "different model" in str(info.value)


# ----------------------------------------------------------------------------------------------
# corruption and interrupted writes
# ----------------------------------------------------------------------------------------------


def _data_file(step_dir: Path) -> Path:
    return Path(max(glob.glob(f"{step_dir}/state/ocdbt.process_*/d/*"), key=os.path.getsize))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "delete-data-file": lambda d: _data_file(d).unlink(),
    "truncate-data-file": lambda d: _truncate(_data_file(d)),
    "bit-flip-in-data-file": lambda d: _flip_bit(_data_file(d)),  # caught by the fingerprints
    "truncate-manifest": lambda d: _truncate(d / "state" / "manifest.ocdbt"),
    "delete-btree-nodes": lambda d: [Path(f).unlink() for f in glob.glob(f"{d}/state/d/*")],
    "delete-tree-metadata": lambda d: (d / "state" / "_METADATA").unlink(),
    "truncate-tree-metadata": lambda d: _truncate(d / "state" / "_METADATA"),
    "truncate-json-metadata": lambda d: _truncate(d / "metadata" / "metadata"),
    "delete-commit-marker": lambda d: (d / "commit_success.txt").unlink(),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_latest_is_skipped_with_warning(run_dir, corrupt):
    corrupt(run_dir / "2")
    with Checkpointer(run_dir, read_only=True) as ckpt:
        with pytest.warns(CheckpointCorruptionWarning, match=r"step 2 in .*run/2 is corrupt"):
            state, meta = ckpt.restore(ABSTRACT)
        assert ckpt.last_restored_step == 1
        assert ckpt.latest_step() == 1  # the corrupt step is no longer reported
    assert_bitwise_equal(state, make_state(1))
    assert meta == {"config": {"lr": 1e-3}, "step": 1}


def test_a_step_without_checksums_restores_with_one_warning(run_dir):
    shutil.rmtree(run_dir / "2" / "checksums")  # e.g. lost in a copy: a flipped bit would pass
    with Checkpointer(run_dir, read_only=True) as ckpt:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            state, _ = ckpt.restore(ABSTRACT)
        assert ckpt.last_restored_step == 2
    assert [w.category for w in record] == [UnverifiedCheckpointWarning]
    message = str(record[0].message)
    assert f"checkpoint step 2 in {run_dir}" in message and "cannot be verified" in message
    assert "\n" not in message
    assert_bitwise_equal(state, make_state(2))
    # verify=False asks for no check: no warning
    with Checkpointer(run_dir, read_only=True, verify=False) as ckpt, warnings.catch_warnings():
        warnings.simplefilter("error")
        ckpt.restore(ABSTRACT)


def test_corrupt_explicit_step_and_all_corrupt_raise(run_dir):
    CORRUPTIONS["truncate-data-file"](run_dir / "2")
    with Checkpointer(run_dir, read_only=True) as ckpt:
        with pytest.raises(CorruptCheckpointError, match=r"step 2 in .*run/2 is corrupt"):
            ckpt.restore(ABSTRACT, step=2)  # an explicit step never falls back silently
    CORRUPTIONS["bit-flip-in-data-file"](run_dir / "1")
    with Checkpointer(run_dir, read_only=True) as ckpt:
        with pytest.warns(CheckpointCorruptionWarning) as record:
            with pytest.raises(CorruptCheckpointError, match=r"step 2: .*; step 1: .*leaf"):
                ckpt.restore(ABSTRACT)
    assert [str(w.message).split(" is corrupt")[0][-6:] for w in record] == ["/run/2", "/run/1"]
    assert "no older step is left" in str(record[1].message)


def test_saving_after_fallback_replaces_the_corrupt_step(run_dir):
    CORRUPTIONS["delete-data-file"](run_dir / "2")
    with Checkpointer(run_dir, async_save=False) as ckpt:
        with pytest.warns(CheckpointCorruptionWarning):
            ckpt.restore(ABSTRACT)
        with pytest.warns(CheckpointCorruptionWarning, match="deleting corrupt checkpoint step 2"):
            assert ckpt.save(2, make_state(20))
        state, _ = ckpt.restore(ABSTRACT)
    assert ckpt.last_restored_step == 2
    assert_bitwise_equal(state, make_state(20))


def test_uncommitted_tmp_dir_is_ignored_and_replaced(run_dir):
    # An interrupted write of step 3: orbax's temporary directory, never renamed to `3/`.
    tmp = run_dir / "3.orbax-checkpoint-tmp-1700000000"
    shutil.copytree(run_dir / "2", tmp)
    (tmp / "commit_success.txt").unlink()
    _truncate(_data_file(tmp))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointCorruptionWarning)
        with Checkpointer(run_dir, read_only=True) as ckpt:
            assert ckpt.all_steps() == [1, 2]
            state, _ = ckpt.restore(ABSTRACT)
            assert ckpt.last_restored_step == 2
        assert_bitwise_equal(state, make_state(2))
        with Checkpointer(run_dir, async_save=False) as ckpt:
            assert ckpt.save(3, make_state(3))
            state, _ = ckpt.restore(ABSTRACT)
        assert_bitwise_equal(state, make_state(3))
    assert not tmp.exists()  # leftovers are cleaned up by a writable Checkpointer


# ----------------------------------------------------------------------------------------------
# unwritable directories and failed saves
# ----------------------------------------------------------------------------------------------


def test_unwritable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where the checkpoint directory should be")
    for path in (blocker, blocker / "checkpoints"):
        with pytest.raises(OSError, match=f"checkpoint directory {path} is not writable"):
            probe_writable(path)
        with pytest.raises(OSError, match=f"checkpoint directory {path} is not writable"):
            Checkpointer(path)
    probe_writable(tmp_path / "fine" / "nested")  # creates it, leaves no probe file behind
    assert os.listdir(tmp_path / "fine" / "nested") == []


@pytest.mark.skipif(not os.path.isdir("/sys"), reason="needs a read-only /sys (Linux)")
def test_read_only_filesystem_is_a_clear_error():
    # sysfs accepts no new files, even from root.
    with pytest.raises(OSError, match="checkpoint directory /sys is not writable"):
        probe_writable("/sys")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="chmod does not stop root"
)
def test_read_only_directory_is_a_clear_error(tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=f"{directory} is not writable"):
            Checkpointer(directory)
    finally:
        directory.chmod(0o755)


def test_failed_save_raises_and_keeps_earlier_checkpoints(run_dir):
    resource = pytest.importorskip("resource")
    import signal

    if not hasattr(signal, "SIGXFSZ"):
        pytest.skip("needs SIGXFSZ")
    with Checkpointer(run_dir, max_to_keep=1) as ckpt:
        # A file-size limit makes tensorstore's writes of the (64, 64) array fail with EFBIG,
        # like a full disk, in the background thread of the asynchronous save.
        previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
        try:
            with pytest.raises(CheckpointSaveError) as info:
                ckpt.save(3, make_state(3))
                ckpt.wait()
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous_handler)
        message = str(info.value)
        assert isinstance(info.value, OSError)
        assert f"could not write checkpoint step 3 to {run_dir}" in message
        assert "Earlier checkpoints there are intact" in message
        # max_to_keep=1 would delete steps 1 and 2, but only after step 3 has committed.
        assert ckpt.all_steps() == [1, 2]
        state, _ = ckpt.restore(ABSTRACT)
        assert_bitwise_equal(state, make_state(2))
        assert ckpt.save(3, make_state(3))  # the disk is fine again: saving works
        ckpt.wait()
        assert ckpt.all_steps() == [3]


# ----------------------------------------------------------------------------------------------
# metadata
# ----------------------------------------------------------------------------------------------


def test_metadata_round_trip(run_dir, tmp_path):
    with Checkpointer(run_dir, read_only=True) as ckpt:
        assert ckpt.read_metadata() == {"config": {"lr": 1e-3}, "step": 2}
        assert ckpt.read_metadata(1) == {"config": {"lr": 1e-3}, "step": 1}
    _truncate(run_dir / "2" / "metadata" / "metadata")
    with Checkpointer(run_dir, read_only=True) as ckpt:
        with pytest.warns(CheckpointCorruptionWarning, match="metadata item is unreadable"):
            assert ckpt.read_metadata() == {"config": {"lr": 1e-3}, "step": 1}
    with Checkpointer(tmp_path / "other", async_save=False) as ckpt:
        ckpt.save(0, {"x": jnp.zeros(2)})
        assert ckpt.read_metadata() == {}
        with pytest.raises(TypeError, match="JSON-serialisable"):
            ckpt.save(1, {"x": jnp.zeros(2)}, metadata={"lr": np.float32(1e-3)})


# ----------------------------------------------------------------------------------------------
# shardings and fingerprints
# ----------------------------------------------------------------------------------------------


def test_restore_keeps_target_shardings(tmp_path):
    devices = jax.devices()
    mesh = Mesh(np.asarray(devices), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    state = {
        "params": jax.device_put(jnp.arange(12.0).reshape(3, 4), replicated),
        "batch": jax.device_put(jnp.ones((2 * len(devices), 3)), sharded),
        "key": jax.device_put(jax.random.key(0), replicated),
    }
    with Checkpointer(tmp_path / "ckpt", async_save=False) as ckpt:
        ckpt.save(0, state)
        target = {
            k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding) for k, v in state.items()
        }
        restored, _ = ckpt.restore(target)
        for name in state:
            assert restored[name].sharding == state[name].sharding, name
        assert_bitwise_equal(restored, state)
        # A ShapeDtypeStruct without a sharding comes back replicated over all devices.
        bare = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in state.items()}
        restored, _ = ckpt.restore(bare)
        assert all(x.sharding == replicated for x in restored.values())
    assert abstract_state(bare)["batch"].sharding == replicated


MULTI_DEVICE_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxdiff.checkpoint import Checkpointer, tree_fingerprints

    assert jax.device_count() == 4, jax.devices()
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    mesh2 = Mesh(np.asarray(jax.devices()).reshape(2, 2), ("data", "model"))
    x = jnp.arange(8 * 6, dtype=jnp.float32).reshape(8, 6)
    state = {"w": jax.device_put(x, NamedSharding(mesh, P("data"))),
             "key": jax.device_put(jax.random.key(3), NamedSharding(mesh, P()))}
    specs = (NamedSharding(mesh, P()), NamedSharding(mesh2, P("model", "data")))
    fingerprint = tree_fingerprints({"w": np.asarray(x)})
    for spec in specs + (state["w"].sharding,):
        assert tree_fingerprints({"w": jax.device_put(x, spec)}) == fingerprint, spec
    with Checkpointer(sys.argv[1], async_save=False) as ckpt:
        ckpt.save(1, state)
        for spec in specs:
            target = {"w": jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=spec),
                      "key": jax.ShapeDtypeStruct((), state["key"].dtype,
                                                  sharding=NamedSharding(mesh, P()))}
            restored, _ = ckpt.restore(target)  # fingerprints are sharding-independent
            assert restored["w"].sharding == spec
            np.testing.assert_array_equal(np.asarray(restored["w"]), np.asarray(x))
            assert restored["key"].dtype == state["key"].dtype
    print("OK")
    """
)


@pytest.mark.slow  # a fresh Python process with 4 virtual CPU devices (about 5 s)
def test_restore_reshards_across_four_devices(tmp_path):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE_SCRIPT, str(tmp_path / "ckpt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_fingerprints_see_every_bit_and_position():
    x = np.arange(1000, dtype=np.float32)
    base = tree_fingerprints({"x": jnp.asarray(x)})["x"]
    assert len(base) == 16
    assert tree_fingerprints({"x": x})["x"] == base  # NumPy and device leaves agree
    flipped = x.copy()
    flipped.view(np.uint32)[500] ^= 1  # one bit
    swapped = x.copy()
    swapped[[3, 4]] = x[[4, 3]]
    for changed in (flipped, swapped, -x, x.astype(np.float16)):
        assert tree_fingerprints({"x": changed})["x"] != base
    assert tree_fingerprints({"x": x.reshape(10, 100)})["x"] == base  # bits and order only
    mixed = {"k": jax.random.key(0), "h": np.ones(3), "n": 3, "s": "text", "b": np.bool_(True)}
    assert set(tree_fingerprints(mixed)) == {"k", "h", "n", "b"}
