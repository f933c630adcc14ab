"""Orbax checkpoints of a training state, with exact resume and corruption checks.

This is the only package of jaxdiff that imports orbax. :class:`Checkpointer` wraps
``orbax.checkpoint.CheckpointManager``, and the training loop uses it as::

    with Checkpointer(out / "checkpoints", max_to_keep=3, save_every=1000) as ckpt:
        if ckpt.latest_step() is not None:
            if ckpt.read_metadata()["config"] != config_dict:
                raise ValueError("this directory belongs to a run with another config")
            state, meta = ckpt.restore(jax.eval_shape(init_state, key))  # newest valid step
        for step in range(int(state.step), num_steps):
            state, metrics = train_step(state, batch)       # may donate `state`
            ckpt.save(step + 1, state, metadata={"config": config_dict})
        ckpt.save(num_steps, state, force=True)             # no-op if already saved

Modules: :mod:`~jaxdiff.checkpoint.manager` (the :class:`Checkpointer`),
:mod:`~jaxdiff.checkpoint.integrity` (leaf fingerprints and the checks that a step is intact),
:mod:`~jaxdiff.checkpoint.compat` (does a step fit the restore target),
:mod:`~jaxdiff.checkpoint.trees` (leaf names, :func:`abstract_state`) and
:mod:`~jaxdiff.checkpoint.errors`.

What orbax does and what jaxdiff adds
-------------------------------------
Orbax's ``CheckpointManager`` decides which calls to ``save`` write (its save decision policy:
every ``save_every``-th step; ``force=True`` overrides it, as the training loop does on a
preemption), keeps the newest ``max_to_keep`` steps (its preservation policy), writes in a
background thread, commits atomically and deletes leftover temporary directories. jaxdiff adds
a fingerprint of every leaf and a check of it after restore, the fallback to the newest intact
step, errors that name the leaf of a mismatched configuration, and save errors that name the
directory and the step.

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
  (see :func:`tree_fingerprints`; format ``jaxdiff-weighted-sum-v2``; an item of any other
  format makes the step corrupt).

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
  check, with an :class:`UnverifiedCheckpointWarning` that names it). A deleted, truncated or
  damaged file (``state/_METADATA``, ``state/manifest.ocdbt``, ``state/d/*``,
  ``state/ocdbt.process_*/d/*``, ``metadata/metadata``, ...) makes one of these checks fail. A
  corrupt or truncated step is skipped with a :class:`CheckpointCorruptionWarning` that names
  it, and the next older step is tried; if none is valid, :class:`CorruptCheckpointError` lists
  every step and why it was rejected.
- **One line per problem.** Orbax, asyncio and tensorstore report a failed save or read again,
  with tracebacks from every thread (hundreds to thousands of stderr lines); the first
  :class:`Checkpointer` filters those reports for the rest of the process
  (:mod:`~jaxdiff.checkpoint.quiet`; ``JAXDIFF_DEBUG=1`` keeps them).
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

from jaxdiff.checkpoint.errors import (
    CheckpointCorruptionWarning,
    CheckpointSaveError,
    CorruptCheckpointError,
    UnverifiedCheckpointWarning,
)
from jaxdiff.checkpoint.integrity import tree_fingerprints
from jaxdiff.checkpoint.manager import Checkpointer, probe_writable
from jaxdiff.checkpoint.trees import abstract_state

__all__ = [
    "CheckpointCorruptionWarning",
    "CheckpointSaveError",
    "Checkpointer",
    "CorruptCheckpointError",
    "UnverifiedCheckpointWarning",
    "abstract_state",
    "probe_writable",
    "tree_fingerprints",
]
