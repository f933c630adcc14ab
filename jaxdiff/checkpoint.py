"""Orbax checkpoints of a training state, with exact resume and corruption checks.

This is the only module of jaxdiff that imports orbax. It wraps
``orbax.checkpoint.CheckpointManager`` in a small :class:`Checkpointer` that the training loop
uses as::

    with Checkpointer(out / "checkpoints", max_to_keep=3, save_every=1000) as ckpt:
        if ckpt.latest_step() is not None:
            if ckpt.read_metadata()["config"] != config_dict:
                raise ValueError("this directory belongs to a run with another config")
            state, meta = ckpt.restore(jax.eval_shape(init_state, key))  # newest valid step
        for step in range(int(state.step), num_steps):
            state, metrics = train_step(state, batch)       # may donate `state`
            ckpt.save(step + 1, state, metadata={"config": config_dict})
        ckpt.save(num_steps, state, force=True)             # no-op if already saved

What a checkpoint holds
-----------------------
Each saved step is a directory ``<directory>/<step>/`` with three orbax items:

- ``state/``: the state pytree, written with ``StandardSave`` (OCDBT + zarr). ``state/_METADATA``
  holds the tree structure with every leaf's shape and dtype; the array bytes live in
  ``state/ocdbt.process_<i>/d/<hash>`` (per-process data files) referenced from
  ``state/manifest.ocdbt`` and the b-tree nodes in ``state/d/<hash>`` (small arrays are stored
  inline in those b-tree nodes).
- ``metadata/``: a JSON object given by the caller (e.g. the run config), see
  :meth:`Checkpointer.read_metadata`.
- ``checksums/``: a JSON object with a 64-bit fingerprint of every leaf, computed at save time
  (see :func:`tree_fingerprints`).

The state may be any pytree: NamedTuples, dicts, lists, ``flax.nnx.State`` (from ``nnx.split``),
optax states. Leaves are ``jax.Array`` (any sharding), NumPy arrays or Python scalars. Typed PRNG
key arrays (``jax.random.key(0)``) are saved directly: orbax stores their ``key_data`` (uint32,
shape ``(*batch, 2)`` for threefry) together with the key implementation, and restores a typed key
array of the same implementation, so no ``key_data``/``wrap_key_data`` conversion is needed.

Reliability guarantees
----------------------
- **Atomic commit.** Orbax writes a step into ``<step>.orbax-checkpoint-tmp-<time>/`` and renames
  it to ``<step>/`` only after every file is written (and a ``commit_success.txt`` marker). A save
  that was interrupted leaves only the temporary directory: it is never listed or restored, and a
  writable :class:`Checkpointer` deletes such leftovers (in the background, finished before its
  first save). A step directory without ``commit_success.txt`` is also treated as uncommitted.
- **Corruption is detected on restore.** A step is used only if its tree metadata can be read,
  orbax can read every array, and every leaf matches the fingerprint recorded at save time
  (this catches bit flips that OCDBT does not, since array chunks carry no checksum; a step
  without a ``checksums`` item, e.g. saved with ``verify=False``, is restored without this last
  check). A deleted, truncated or damaged file (``state/_METADATA``, ``state/manifest.ocdbt``,
  ``state/d/*``, ``state/ocdbt.process_*/d/*``, ``metadata/metadata``, ...) makes one of these
  checks fail. A corrupt or truncated step is skipped with a
  :class:`CheckpointCorruptionWarning` that names it, and the next older step is tried; if none
  is valid, :class:`CorruptCheckpointError` lists every step and why it was rejected.
- **Configuration mismatch is an error, not corruption.** Before orbax reads any array, the saved
  tree structure, shapes and dtypes are compared with the restore target; the first difference
  raises ``ValueError`` naming the leaf path and both shapes/dtypes.
- **Save errors are loud and harmless to older steps.** Writes go to the temporary directory, and
  orbax deletes steps beyond ``max_to_keep`` only after the new step has committed, so a failed
  save (read-only or full disk) leaves every earlier checkpoint intact. The failure is raised as
  :class:`CheckpointSaveError` (an ``OSError``) naming the directory and the step, from
  :meth:`Checkpointer.save` or, for an asynchronous save, from the next ``save``/``wait``/``close``.
  :func:`probe_writable` (run by the constructor) catches an unwritable directory before training.
- **Multi-process runs.** Every process must call ``save``/``restore``/``wait``/``close`` with the
  same arguments: orbax synchronises the processes, each process writes the shards it owns, and
  only the primary process (process 0) writes the metadata files, renames the temporary directory
  and deletes old steps. Do not guard these calls with ``if jax.process_index() == 0``: that
  deadlocks the other processes at orbax's barriers.
"""

from __future__ import annotations

import errno
import json
import operator
import os
import uuid
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "CheckpointCorruptionWarning",
    "CheckpointSaveError",
    "Checkpointer",
    "CorruptCheckpointError",
    "abstract_state",
    "probe_writable",
    "tree_fingerprints",
]

# Orbax item names inside one step directory.
_STATE = "state"
_METADATA = "metadata"
_CHECKSUMS = "checksums"
_COMMIT_MARKER = "commit_success.txt"  # written by orbax just before the commit rename
_CHECKSUM_FORMAT = "jaxdiff-splitmix64-sum-v1"
_MAX_REASON_CHARS = 300


class CheckpointCorruptionWarning(UserWarning):
    """A checkpoint step was found corrupt or incomplete and was skipped."""


class CorruptCheckpointError(RuntimeError):
    """No valid checkpoint could be restored (every candidate step is corrupt or incomplete)."""


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed (read-only directory, full disk, ...).

    Earlier checkpoints are left intact; the error message names the directory and the step.
    """


class _CorruptStep(Exception):
    """Internal: one step failed an integrity check (the message is the reason)."""


# --------------------------------------------------------------------------------------------
# Paths and probes
# --------------------------------------------------------------------------------------------


def _normalize_directory(directory: str | os.PathLike) -> epath.Path:
    text = os.fspath(directory)
    if "://" in text:  # gs://, s3://, ... : leave remote paths alone
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def probe_writable(directory: str | os.PathLike) -> None:
    """Check that checkpoints can be written to ``directory``, before training starts.

    Creates ``directory`` (and its parents) if needed, writes a small probe file into it, reads it
    back and removes it. Run by every process in a multi-process run (each probe file has a unique
    name), so a directory that is not writable from one host is caught early on that host.

    Args:
        directory: local path or a path orbax understands (e.g. ``gs://bucket/run/checkpoints``).

    Raises:
        OSError: (``PermissionError``, ``FileExistsError``, ``NotADirectoryError``, ... by errno)
            with a message naming ``directory`` and saying how to fix it.
    """
    path = _normalize_directory(directory)
    probe = path / f".jaxdiff-write-probe-{jax.process_index()}-{uuid.uuid4().hex}"
    payload = b"jaxdiff checkpoint write probe\n"
    try:
        if path.exists() and not path.is_dir():
            raise OSError(errno.EEXIST, "exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(payload)
        if probe.read_bytes() != payload:
            raise OSError(errno.EIO, "a probe file read back different bytes than were written")
    except OSError as e:
        reason = e.strerror or str(e)
        raise OSError(
            e.errno,
            f"checkpoint directory {path} is not writable ({reason}). Choose a writable "
            f"directory (e.g. another --out), fix its permissions, or free disk space",
            str(path),
        ) from e
    finally:
        try:
            if probe.exists():
                probe.unlink()
        except OSError:
            pass


# --------------------------------------------------------------------------------------------
# Pytree helpers: leaf paths, abstract targets, fingerprints
# --------------------------------------------------------------------------------------------


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SequenceKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _path_str(path) -> str:
    """A key path as ``"params/w"``: the same string for a NamedTuple field, a dict key or the
    ``.value`` of an ``nnx.Variable``, matching the nested dicts of orbax's tree metadata."""
    return "/".join(_key_name(k) for k in path) or "<root>"


def _is_prng_key(dtype) -> bool:
    return jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _default_sharding() -> NamedSharding:
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    return NamedSharding(mesh, PartitionSpec())


def abstract_state(state_like: Any) -> Any:
    """The restore target for ``state_like``: its tree with every array leaf replaced by a
    ``jax.ShapeDtypeStruct`` of the same shape, dtype and sharding.

    Args:
        state_like: a concrete state (its arrays are not read, only their shape, dtype and
            ``.sharding``; deleted/donated arrays are fine) or an abstract one, e.g.
            ``jax.eval_shape(init_state, key)`` or ``nnx.eval_shape(...)`` followed by
            ``nnx.split``. A ``ShapeDtypeStruct`` without a sharding gets a replicated
            ``NamedSharding`` over all devices (mesh axis ``data``), the placement jaxdiff uses
            for parameters; give explicit shardings for anything sharded.

    Returns:
        The same tree with ``ShapeDtypeStruct`` leaves (typed PRNG keys keep their key dtype).
        NumPy arrays become unsharded ``ShapeDtypeStruct`` (orbax restores them as NumPy) and
        Python scalars are kept as they are.
    """
    default = None

    def leaf(x):
        nonlocal default
        if isinstance(x, jax.Array | jax.ShapeDtypeStruct):
            sharding = getattr(x, "sharding", None)
            if sharding is None:
                default = default or _default_sharding()
                sharding = default
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
        if isinstance(x, np.ndarray | np.generic):
            return jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)
        return x

    return jax.tree.map(leaf, state_like)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_CHUNK = 1 << 20  # elements hashed per NumPy pass (bounds the temporaries to a few MiB)
_MOD = 1 << 64


def _splitmix64_(x: np.ndarray) -> np.ndarray:
    # SplitMix64 finaliser, in place: a bijective avalanche mix of uint64 words (wrapping).
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


def _words(block: np.ndarray) -> tuple[np.ndarray, int]:
    """The bits of ``block`` as a flat unsigned vector and the number of words per element
    (32-bit words for 4- and 8-byte dtypes, the raw bytes/halfwords for 1- and 2-byte ones)."""
    a = np.ascontiguousarray(block).reshape(-1)
    size = a.dtype.itemsize
    if size % 4 == 0:
        return a.view(np.uint32), size // 4
    return a.view(np.uint8 if size == 1 else np.uint16), 1


def _partial_hash(block: np.ndarray, starts: tuple[int, ...], shape: tuple[int, ...]) -> int:
    """Sum over the elements of ``block`` (the part of a global array of ``shape`` that starts at
    ``starts``) of ``splitmix64(word + golden * global_word_index)``, modulo 2**64.

    A modular sum of per-position terms: blocks (shards) can be hashed separately and added, so
    the fingerprint does not depend on the sharding. A change to any one word changes exactly one
    term, and the mix is a bijection, so a single corrupted word always changes the sum.
    """
    words, per = _words(block)
    local_shape = block.shape
    n = int(np.prod(local_shape, dtype=np.int64))
    strides = [int(np.prod(shape[k + 1 :], dtype=np.int64)) for k in range(len(shape))]
    whole = tuple(local_shape) == tuple(shape)
    offsets = np.arange(per, dtype=np.uint64)
    total = 0
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        if whole:  # global word positions are simply lo*per .. hi*per-1
            index = np.arange(lo * per, hi * per, dtype=np.uint64)
        else:
            local = np.unravel_index(np.arange(lo, hi, dtype=np.int64), local_shape)
            element = np.zeros(hi - lo, np.uint64)
            for k, (pos, start) in enumerate(zip(local, starts, strict=True)):
                element += (pos + start).astype(np.uint64) * np.uint64(strides[k])
            index = (element[:, None] * np.uint64(per) + offsets).reshape(-1)
        index *= _GOLDEN
        index += words[lo * per : hi * per]
        total += int(np.sum(_splitmix64_(index), dtype=np.uint64))
    return total % _MOD


def _array_hash(x: jax.Array) -> tuple[int, bool]:
    """(hash, complete): the hash of the shards this process can address; ``complete`` is False
    when other processes hold parts of ``x`` (their partial hashes must be added)."""
    if _is_prng_key(x.dtype):
        x = jax.random.key_data(x)
    shape = tuple(x.shape)
    size = int(np.prod(shape, dtype=np.int64))
    distinct = {}
    for shard in x.addressable_shards:
        key = tuple(sl.indices(d)[:2] for sl, d in zip(shard.index, shape, strict=True))
        distinct.setdefault(key, shard)
    covered = sum(int(np.prod([b - a for a, b in key], dtype=np.int64)) for key in distinct)
    complete = covered == size
    total = 0
    for key, shard in distinct.items():
        if not complete and shard.replica_id != 0:
            continue  # each index is counted once over all processes: by its replica 0
        starts = tuple(a for a, _ in key)
        total += _partial_hash(np.asarray(shard.data), starts, shape)
    return total % _MOD, complete


def tree_fingerprints(tree: Any) -> dict[str, str]:
    """A 64-bit content fingerprint (16 hex digits) of every array leaf of ``tree``, by leaf path.

    The fingerprint of an array of any shape is ``sum_i splitmix64(w_i + phi * i) mod 2**64`` over
    its bits viewed as words ``w_i`` (uint32 for 4/8-byte dtypes, bytes/halfwords for 1/2-byte
    ones; typed PRNG keys via ``key_data``) at global word positions ``i``. It depends on every
    bit and its position and not on the shape split or the sharding, so a state restored with
    other shardings than it was saved with still matches. Computed on the host shard by shard
    (one device-to-host copy of the state, no compilation); in a multi-process run the partial
    sums of arrays no process holds entirely are added with one ``process_allgather``, so every
    process must call this together.

    Args:
        tree: any pytree; ``jax.Array``, NumPy array and Python number leaves are hashed, other
            leaves (strings, ...) are left out.

    Returns:
        ``{"params/w": "0123456789abcdef", ...}``.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    result: dict[str, int] = {}
    incomplete: list[str] = []
    for path, x in flat:
        name = _path_str(path)
        if isinstance(x, jax.Array):
            result[name], complete = _array_hash(x)
            if not complete:
                incomplete.append(name)
        elif isinstance(x, np.ndarray | np.generic | int | float | complex):
            arr = np.asarray(x)
            if arr.dtype.kind in "biufc":  # not object arrays (e.g. ints beyond 64 bits)
                result[name] = _partial_hash(arr, (0,) * arr.ndim, arr.shape)
    if incomplete:
        from jax.experimental import multihost_utils

        halves = np.array(
            [[result[n] >> 32, result[n] & 0xFFFFFFFF] for n in incomplete], dtype=np.uint32
        )
        gathered = np.asarray(multihost_utils.process_allgather(halves))  # (processes, n, 2)
        for j, name in enumerate(incomplete):
            parts = gathered[:, j, :].astype(np.uint64)
            result[name] = sum((int(h) << 32) | int(lo) for h, lo in parts) % _MOD
    return {name: f"{value:016x}" for name, value in result.items()}


def _target_signature(leaf) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) that orbax records for a target leaf; typed keys are stored as key_data."""
    if isinstance(leaf, jax.ShapeDtypeStruct | jax.Array):
        if _is_prng_key(leaf.dtype):
            data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
            return tuple(data.shape), np.dtype(data.dtype)
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    if isinstance(leaf, np.ndarray | np.generic):
        return tuple(np.shape(leaf)), np.asarray(leaf).dtype
    return None  # Python scalars and other leaves: presence is checked, not shape/dtype


def _describe(sig) -> str:
    return "a non-array value" if sig is None else f"shape {sig[0]} {sig[1]}"


def _check_compatible(saved_tree: Any, target: Any, step: int, directory: epath.Path) -> None:
    """Raise ``ValueError`` at the first leaf where the saved tree and ``target`` disagree."""
    saved = {_path_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(saved_tree)[0]}
    fix = (
        "The checkpoint was written for a different model/optimizer configuration: restore with "
        "the configuration it was saved with (see Checkpointer.read_metadata()) or use a new "
        "checkpoint directory"
    )
    where = f"checkpoint step {step} in {directory}"
    target_names = set()
    for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]:
        name = _path_str(path)
        target_names.add(name)
        want = _target_signature(leaf)
        if name not in saved:
            raise ValueError(
                f"{where} does not match the restore target: leaf '{name}' ({_describe(want)}) "
                f"is in the target but not in the checkpoint. {fix}"
            )
        meta = saved[name]
        shape, dtype = getattr(meta, "shape", None), getattr(meta, "dtype", None)
        if want is None or shape is None:
            continue
        have = (tuple(shape), np.dtype(dtype) if dtype is not None else None)
        # Python scalars are recorded as ScalarMetadata with a 64-bit dtype: compare shape only.
        check_dtype = isinstance(meta, ocp.metadata.ArrayMetadata) and have[1] is not None
        if have[0] != want[0] or (check_dtype and have[1] != want[1]):
            raise ValueError(
                f"{where} does not match the restore target at leaf '{name}': the checkpoint "
                f"has shape {have[0]} {have[1]}, the target has shape {want[0]} {want[1]}. {fix}"
            )
    for name in saved:
        if name not in target_names:
            meta = saved[name]
            sig = (tuple(meta.shape), meta.dtype) if hasattr(meta, "shape") else None
            raise ValueError(
                f"{where} does not match the restore target: leaf '{name}' ({_describe(sig)}) "
                f"is in the checkpoint but not in the target. {fix}"
            )


def _short(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    return text if len(text) <= _MAX_REASON_CHARS else text[:_MAX_REASON_CHARS] + " ..."


def _as_step(step) -> int:
    try:
        step = operator.index(step)
    except TypeError:
        if isinstance(step, jax.Array | np.ndarray) and np.ndim(step) == 0:
            step = int(step)
        else:
            raise TypeError(f"step must be a non-negative integer, got {step!r}") from None
    if step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step}")
    return step


# --------------------------------------------------------------------------------------------
# Checkpointer
# --------------------------------------------------------------------------------------------


class Checkpointer:
    """Save and restore a training-state pytree in one directory, one sub-directory per step.

    Args:
        directory: where the step directories go (created if missing; local or ``gs://...``).
        max_to_keep: keep only this many newest steps (older ones are deleted after a newer one
            has committed); ``None`` keeps all.
        save_every: :meth:`save` writes only when ``step % save_every == 0`` (or ``force``);
            ``None`` means every call to :meth:`save` writes.
        async_save: write in a background thread. ``save`` returns once the arrays have been
            copied off the accelerator, so the state may then be donated to the next train step.
        verify: record a fingerprint of every leaf at save time and check it after restore
            (costs one extra device-to-host copy and a NumPy pass over the state per save and
            per restore: some tens of ns per element on a CPU core).
        read_only: open an existing directory for :meth:`restore`/:meth:`read_metadata` only
            (e.g. for evaluation while training runs); nothing is created or deleted.

    Raises:
        OSError: the directory cannot be written (from :func:`probe_writable`); for
            ``read_only``, ``FileNotFoundError`` if it does not exist.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int | None = 3,
        save_every: int | None = None,
        async_save: bool = True,
        verify: bool = True,
        read_only: bool = False,
    ):
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None (keep all), got {max_to_keep}")
        if save_every is not None and save_every < 1:
            raise ValueError(
                f"save_every must be >= 1 or None (save on every call), got {save_every}"
            )
        self.directory = _normalize_directory(directory)
        self.save_every = save_every
        self.read_only = read_only
        self.verify = verify
        if read_only:
            if not self.directory.is_dir():
                raise FileNotFoundError(
                    errno.ENOENT,
                    f"checkpoint directory {self.directory} does not exist (or is not a "
                    "directory): check the path, or train first to create checkpoints",
                    str(self.directory),
                )
        else:
            probe_writable(self.directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else max_to_keep,
            save_interval_steps=0 if read_only else 1,  # save() decides itself; see `save_every`
            enable_async_checkpointing=async_save,
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
        )
        try:
            self._mngr = ocp.CheckpointManager(
                self.directory,
                item_handlers={
                    _STATE: ocp.StandardCheckpointHandler(),
                    _METADATA: ocp.JsonCheckpointHandler(),
                    _CHECKSUMS: ocp.JsonCheckpointHandler(),
                },
                options=options,
            )
        except OSError as e:
            raise OSError(e.errno, f"cannot open checkpoint directory {self.directory}: {e}") from e
        self._closed = False
        self._pending_step: int | None = None  # an asynchronous save not yet waited for
        self._invalid_steps: set[int] = set()  # committed steps that restore() found corrupt
        self.last_restored_step: int | None = None
        """The step the last successful :meth:`restore` returned (may be older than
        :meth:`latest_step` was before the restore, if newer steps were corrupt)."""

    # -- context manager ------------------------------------------------------------------------

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Checkpointer({str(self.directory)!r}, save_every={self.save_every}, "
            f"read_only={self.read_only}, steps={self.all_steps() if not self._closed else '?'})"
        )

    # -- queries --------------------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        """Committed steps in increasing order (plus an asynchronous save still in flight; call
        :meth:`wait` first to see only finished ones). Steps that :meth:`restore` found corrupt
        are left out; uncommitted temporary directories never appear."""
        self._check_open()
        return sorted(s for s in self._mngr.all_steps() if s not in self._invalid_steps)

    def latest_step(self) -> int | None:
        """The newest step of :meth:`all_steps`, or ``None`` if there is none. Restoring it may
        still fall back to an older step if its files turn out corrupt."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    # -- saving ---------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        state: Any,
        *,
        metadata: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Save ``state`` (any pytree of arrays) as checkpoint ``step`` if it is due.

        A save is due when ``force`` is true, ``save_every`` is ``None``, or
        ``step % save_every == 0``. A step that already has a checkpoint is never overwritten
        (``save`` returns ``False``), except a step that :meth:`restore` found corrupt, which is
        deleted (with a warning) and written again.

        Args:
            step: the training step (a non-negative integer) that names the checkpoint.
            state: the pytree to save; all processes pass their (global) arrays.
            metadata: a JSON-serialisable dict saved beside the state (e.g. the run config as
                ``dataclasses.asdict(config)``); read back with :meth:`read_metadata`.
            force: save even if ``step`` is not a multiple of ``save_every``.

        Returns:
            Whether a checkpoint was started. With ``async_save`` it is written in the
            background; errors surface from the next ``save``, :meth:`wait` or :meth:`close`.

        Raises:
            CheckpointSaveError: this or the previous asynchronous save failed (directory named).
            TypeError: ``metadata`` is not JSON-serialisable.
            ValueError: the directory already holds a valid step newer than ``step`` (e.g. after
                restoring an older step explicitly); delete those steps or use a new directory.
        """
        self._check_open()
        if self.read_only:
            raise ValueError(f"Checkpointer({self.directory}) was opened read_only; cannot save")
        step = _as_step(step)
        if not force and self.save_every is not None and step % self.save_every:
            return False
        try:  # a JSON copy: validates now, and later changes by the caller cannot leak in
            meta = json.loads(json.dumps({} if metadata is None else dict(metadata)))
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"checkpoint metadata must be JSON-serialisable (dicts, lists, str, numbers, "
                f"bools, None); convert configs with dataclasses.asdict and arrays with "
                f".tolist(): {e}"
            ) from e
        self.wait()  # surface an earlier asynchronous failure before starting a new save
        if not self._make_room_for(step):
            return False
        args = {_STATE: ocp.args.StandardSave(state), _METADATA: ocp.args.JsonSave(meta)}
        if self.verify:
            checksums = {"format": _CHECKSUM_FORMAT, "leaves": tree_fingerprints(state)}
            args[_CHECKSUMS] = ocp.args.JsonSave(checksums)
        try:
            started = self._mngr.save(step, args=ocp.args.Composite(**args), force=True)
        except Exception as e:
            self._resync()
            raise self._save_error(step, e) from e
        if started:
            self._pending_step = step
        return bool(started)

    def _make_room_for(self, step: int) -> bool:
        """Delete known-corrupt steps >= ``step``; return False if ``step`` already exists."""
        existing = self._mngr.all_steps()
        for s in sorted(existing):
            if s >= step and s in self._invalid_steps:
                warnings.warn(
                    f"deleting corrupt checkpoint step {s} in {self.directory} before saving "
                    f"step {step}",
                    CheckpointCorruptionWarning,
                    stacklevel=3,
                )
                self._mngr.delete(s)
                self._invalid_steps.discard(s)
        valid = [s for s in self._mngr.all_steps() if s not in self._invalid_steps]
        if step in valid:
            return False
        newer = [s for s in valid if s > step]
        if newer:
            raise ValueError(
                f"cannot save checkpoint step {step} in {self.directory}: it already holds newer "
                f"step(s) {sorted(newer)}, which restore() would pick instead of this run's "
                f"checkpoints. Resume from the latest step, delete the newer step directories, "
                f"or use a new checkpoint directory"
            )
        return True

    def _save_error(self, step: int | None, e: BaseException) -> CheckpointSaveError:
        what = f"checkpoint step {step}" if step is not None else "a checkpoint"
        err = CheckpointSaveError(
            getattr(e, "errno", None) or errno.EIO,
            f"could not write {what} to {self.directory} ({_short(e)}). Earlier checkpoints "
            f"there are intact. Check free disk space and write permission "
            f"(jaxdiff.checkpoint.probe_writable) and restart from the latest checkpoint",
        )
        return err

    def _resync(self) -> None:
        try:
            self._mngr.reload()
        except Exception:  # the directory itself may be gone; the save error says enough
            pass

    def wait(self) -> None:
        """Block until an asynchronous save has committed.

        Raises:
            CheckpointSaveError: the save failed (the directory and step are named).
        """
        self._check_open()
        step, self._pending_step = self._pending_step, None
        try:
            self._mngr.wait_until_finished()
        except Exception as e:
            self._resync()
            raise self._save_error(step, e) from e

    def close(self) -> None:
        """Wait for a pending save (raising its error, if any) and release orbax's resources.
        Closing twice is a no-op."""
        if self._closed:
            return
        try:
            self.wait()
        finally:
            self._closed = True
            self._mngr.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"Checkpointer({self.directory}) is closed")

    # -- restoring ------------------------------------------------------------------------------

    def _step_path(self, step: int) -> epath.Path:
        return ocp.step.build_step_path(self.directory, ocp.step.standard_name_format(), step)

    def _candidates(self, step: int | None) -> tuple[list[int], bool]:
        self.wait()
        self._mngr.reload()
        on_disk = sorted(self._mngr.all_steps())
        if step is not None:
            step = _as_step(step)
            if step not in on_disk:
                raise FileNotFoundError(
                    f"no committed checkpoint for step {step} in {self.directory}; committed "
                    f"steps: {on_disk or 'none'}"
                )
            return [step], True
        if not on_disk:
            raise FileNotFoundError(
                f"no committed checkpoint in {self.directory} (check the path; start training "
                f"from scratch if this is a new run)"
            )
        return on_disk[::-1], False

    def _reject(self, step: int, reason: str, explicit: bool, remaining: list[int]) -> None:
        self._invalid_steps.add(step)
        where = f"checkpoint step {step} in {self._step_path(step)}"
        if explicit:
            raise CorruptCheckpointError(
                f"{where} is corrupt or incomplete: {reason}. Restore another step "
                f"(committed steps: {sorted(self._mngr.all_steps())}) or step=None for the "
                f"newest valid one"
            )
        then = f"trying step {remaining[0]}" if remaining else "no older step is left"
        warnings.warn(
            f"{where} is corrupt or incomplete and is skipped ({reason}); {then}",
            CheckpointCorruptionWarning,
            stacklevel=3,
        )

    def restore(self, state_like: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore a checkpoint into the structure, shapes, dtypes and shardings of
        ``state_like``.

        Args:
            state_like: a state of the same structure, concrete or abstract (see
                :func:`abstract_state`); pass ``jax.eval_shape(init_fn, ...)`` with shardings to
                avoid allocating the state twice. Each restored ``jax.Array`` leaf gets the
                sharding of the corresponding leaf (replicated/sharded ``NamedSharding``s are
                kept, so the state is ready for the compiled train step).
            step: the step to restore; ``None`` picks the newest *valid* step, skipping (with a
                :class:`CheckpointCorruptionWarning`) any newer step that is uncommitted, corrupt
                or truncated.

        Returns:
            ``(state, metadata)``: the restored pytree (bitwise equal to what was saved) and the
            metadata dict saved with it. :attr:`last_restored_step` says which step it was.

        Raises:
            FileNotFoundError: no committed checkpoint (or not the requested ``step``).
            ValueError: the checkpoint's tree structure, a leaf shape or dtype differs from
                ``state_like`` (a different model configuration); names the first such leaf.
            CorruptCheckpointError: the requested ``step``, or every step, failed the checks.
        """
        self._check_open()
        target = abstract_state(state_like)
        candidates, explicit = self._candidates(step)
        failures = []
        for i, s in enumerate(candidates):
            try:
                state, meta = self._restore_step(s, target)
            except _CorruptStep as e:
                failures.append(f"step {s}: {e}")
                self._reject(s, str(e), explicit, candidates[i + 1 :])
                continue
            self.last_restored_step = s
            return state, meta
        raise CorruptCheckpointError(
            f"no valid checkpoint in {self.directory}; every committed step was rejected: "
            + "; ".join(failures)
            + ". Restore from a backup or start training from scratch in a new directory"
        )

    def _restore_step(self, step: int, target: Any) -> tuple[Any, dict]:
        path = self._step_path(step)
        if not (path / _COMMIT_MARKER).exists():
            raise _CorruptStep(f"{_COMMIT_MARKER} is missing, so its write never finished")
        try:
            tree_meta = self._mngr.item_metadata(step)[_STATE]
        except Exception as e:
            raise _CorruptStep(
                f"its tree metadata ({_STATE}/_METADATA) is unreadable: {_short(e)}"
            ) from e
        if tree_meta is None or getattr(tree_meta, "tree", None) is None:
            raise _CorruptStep(f"its tree metadata ({_STATE}/_METADATA) is missing")
        _check_compatible(tree_meta.tree, target, step, self.directory)

        args = {_STATE: ocp.args.StandardRestore(target)}
        has_meta = (path / _METADATA).exists()
        has_sums = self.verify and (path / _CHECKSUMS).exists()
        if has_meta:
            args[_METADATA] = ocp.args.JsonRestore()
        if has_sums:
            args[_CHECKSUMS] = ocp.args.JsonRestore()
        try:
            restored = self._mngr.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:
            raise _CorruptStep(f"reading it failed: {_short(e)}") from e
        state = restored[_STATE]
        meta = dict(restored[_METADATA] or {}) if has_meta else {}
        if has_sums:
            self._verify(state, restored[_CHECKSUMS])
        return state, meta

    def _verify(self, state: Any, checksums: Any) -> None:
        if not isinstance(checksums, dict) or checksums.get("format") != _CHECKSUM_FORMAT:
            raise _CorruptStep(f"its {_CHECKSUMS} item is unreadable or of an unknown format")
        expected = checksums.get("leaves", {})
        actual = tree_fingerprints(state)
        for name, value in actual.items():
            if name in expected and expected[name] != value:
                raise _CorruptStep(
                    f"leaf '{name}' does not match the fingerprint recorded when it was saved "
                    f"(the data files were modified or damaged)"
                )

    def read_metadata(self, step: int | None = None) -> dict:
        """The JSON metadata saved with a step (``{}`` if none was given).

        Used before :meth:`restore` to refuse resuming with a different configuration.

        Args:
            step: the step; ``None`` reads the newest committed step whose metadata is readable
                (an unreadable one is skipped with a :class:`CheckpointCorruptionWarning`).

        Raises:
            FileNotFoundError: no committed checkpoint (or not the requested ``step``).
            CorruptCheckpointError: the metadata of ``step`` (or of every step) is unreadable.
        """
        self._check_open()
        candidates, explicit = self._candidates(step)
        candidates = [s for s in candidates if explicit or s not in self._invalid_steps]
        failures = []
        for i, s in enumerate(candidates):
            path = self._step_path(s)
            try:
                if not (path / _COMMIT_MARKER).exists():
                    raise _CorruptStep(f"{_COMMIT_MARKER} is missing, so its write never finished")
                if not (path / _METADATA).exists():
                    return {}
                try:
                    restored = self._mngr.restore(
                        s, args=ocp.args.Composite(**{_METADATA: ocp.args.JsonRestore()})
                    )
                except Exception as e:
                    raise _CorruptStep(f"its {_METADATA} item is unreadable: {_short(e)}") from e
                meta = restored[_METADATA]
                if not isinstance(meta, dict):
                    raise _CorruptStep(f"its {_METADATA} item is not a JSON object")
                return meta
            except _CorruptStep as e:
                failures.append(f"step {s}: {e}")
                self._reject(s, str(e), explicit, candidates[i + 1 :])
        raise CorruptCheckpointError(
            f"no readable checkpoint metadata in {self.directory}: "
            + ("; ".join(failures) or "every committed step was found corrupt by restore()")
        )
