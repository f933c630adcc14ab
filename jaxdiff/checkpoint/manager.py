""":class:`Checkpointer`: orbax's ``CheckpointManager`` with integrity checks and clear errors.

Orbax decides when a step is saved (its save decision policy: every ``save_every`` steps; a
preemption is the training loop's to detect, :mod:`jaxdiff.loop.stop`), which steps are kept
(its preservation policy: the newest ``max_to_keep``), writes asynchronously, commits
atomically and removes leftover temporary directories. This wrapper adds what orbax lacks: every
leaf's fingerprint saved beside the state and checked after a restore, a fallback to the newest
intact step, errors that name the leaf of a mismatched configuration, and save errors that name
the directory and the step. It reports each failure in one line, so orbax's own reports of it
are filtered (:mod:`.quiet`).
"""

from __future__ import annotations

import errno
import json
import os
import warnings
from collections.abc import Mapping
from typing import Any

import orbax.checkpoint as ocp
from etils import epath

from jaxdiff.checkpoint import quiet, steps
from jaxdiff.checkpoint.errors import (
    CheckpointCorruptionWarning,
    CorruptCheckpointError,
    StepCorrupt,
    save_error,
)
from jaxdiff.checkpoint.paths import as_step, normalize_directory, probe_writable
from jaxdiff.checkpoint.trees import abstract_state

__all__ = ["Checkpointer"]


def _save_decision_policy(save_every: int | None) -> ocp.checkpoint_managers.FixedIntervalPolicy:
    """Every ``save_every``-th step (every step for ``None``). Not orbax's preemption policy:
    JAX's preemption sync point must be polled with consecutive ids on every process, and the
    training loop does that once per compiled call (:mod:`jaxdiff.loop.stop`), then saves with
    ``force=True``; orbax polling it too with step numbers would break the sequence."""
    return ocp.checkpoint_managers.FixedIntervalPolicy(save_every or 1)


class Checkpointer:
    """Save and restore a training-state pytree in one directory, one sub-directory per step.

    Args:
        directory: where the step directories go (created if missing; local or ``gs://...``).
        max_to_keep: keep only this many newest steps (older ones are deleted after a newer one
            has committed); ``None`` keeps all.
        save_every: :meth:`save` writes only when ``step % save_every == 0`` (or ``force``);
            ``None`` means every call to :meth:`save` writes. Orbax's save decision policy
            applies it, see :meth:`should_save`.
        async_save: write in a background thread. ``save`` returns once the arrays have been
            copied off the accelerator, so the state may then be donated to the next train step.
        verify: record a fingerprint of every leaf at save time and check it after restore
            (costs one extra device-to-host copy and a NumPy pass over the state per save and
            per restore: about 1 ms per MB on a CPU core); a step saved without fingerprints
            then restores with an ``UnverifiedCheckpointWarning``.
        read_only: open an existing directory for :meth:`restore`/:meth:`read_metadata` only
            (e.g. for evaluation while training runs); nothing is created or deleted.

    Raises:
        ValueError: ``max_to_keep`` or ``save_every`` is below 1.
        PermissionError: the directory cannot be written (from :func:`probe_writable`).
        FileNotFoundError: for ``read_only``, the directory does not exist.
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
        self.directory = normalize_directory(directory)
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
        self._name_format = ocp.step.standard_name_format()
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=_save_decision_policy(save_every),
            preservation_policy=ocp.checkpoint_managers.LatestN(
                n=None if read_only else max_to_keep
            ),
            step_name_format=self._name_format,
            enable_async_checkpointing=async_save,
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
            # orbax warns when a read-only manager keeps its default interval of 1
            save_interval_steps=0 if read_only else 1,
        )
        quiet.install()  # every failure is raised or warned about here, in one line
        try:
            self._mngr = ocp.CheckpointManager(
                self.directory,
                item_handlers=steps.item_handlers(),
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

    def should_save(self, step: int) -> bool:
        """Whether :meth:`save` would write ``step`` without ``force``: orbax's answer (``step``
        is a multiple of ``save_every``, and ``step`` is newer than
        every saved step). Always ``False`` when ``read_only``. Every process of a
        multi-process run gets the same answer."""
        self._check_open()
        return self._mngr.should_save(as_step(step))

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

        A save is due when ``force`` is true or :meth:`should_save` says so (``save_every`` is
        ``None``, or ``step % save_every == 0``). A step that already has a checkpoint is never
        overwritten (``save`` returns ``False``), except a step that :meth:`restore` found
        corrupt, which is deleted (with a warning) and written again.

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
                restoring an older step explicitly; raised whether or not the save is due, so
                such a run stops at its first save); delete those steps or use a new directory.
        """
        self._check_open()
        if self.read_only:
            raise ValueError(f"Checkpointer({self.directory}) was opened read_only; cannot save")
        step = as_step(step)
        if not self._make_room_for(step):
            return False
        if not force and not self._mngr.should_save(step):
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
        args = steps.save_args(state, meta, self.verify)
        try:
            started = self._mngr.save(step, args=args, force=force)
        except Exception as e:
            self._resync()
            raise save_error(self.directory, step, e) from e
        if started:
            self._pending_step = step
        return bool(started)

    def _make_room_for(self, step: int) -> bool:
        """Delete known-corrupt steps >= ``step`` (orbax would not save below them); return
        False if ``step`` already exists; raise ValueError if a valid newer step exists."""
        corrupt = [s for s in self._mngr.all_steps() if s >= step and s in self._invalid_steps]
        if corrupt:
            self.wait()
        for s in corrupt:
            warnings.warn(
                f"deleting corrupt checkpoint step {s} in {self.directory}, to be replaced by "
                f"this run's checkpoints from step {step} on",
                CheckpointCorruptionWarning,
                stacklevel=3,
            )
            self._mngr.delete(s)
            self._invalid_steps.discard(s)
        valid = self.all_steps()
        if step in valid:
            return False
        newer = [s for s in valid if s > step]
        if newer:
            raise ValueError(
                f"cannot save checkpoint step {step} in {self.directory}: it already holds newer "
                f"step(s) {newer}, which restore() would pick instead of this run's "
                f"checkpoints. Resume from the latest step, delete the newer step directories, "
                f"or use a new checkpoint directory"
            )
        return True

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
            raise save_error(self.directory, step, e) from e

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
        return ocp.step.build_step_path(self.directory, self._name_format, step)

    def _where(self, step: int) -> str:
        return f"checkpoint step {step} in {self.directory}"

    def _candidates(self, step: int | None) -> tuple[list[int], bool]:
        self.wait()
        self._mngr.reload()
        on_disk = sorted(self._mngr.all_steps())
        if step is not None:
            step = as_step(step)
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
                state, meta = steps.read_state(
                    self._mngr, s, self._step_path(s), target, self.verify, self._where(s)
                )
            except StepCorrupt as e:
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
            try:
                return steps.read_metadata(self._mngr, s, self._step_path(s))
            except StepCorrupt as e:
                failures.append(f"step {s}: {e}")
                self._reject(s, str(e), explicit, candidates[i + 1 :])
        raise CorruptCheckpointError(
            f"no readable checkpoint metadata in {self.directory}: "
            + ("; ".join(failures) or "every committed step was found corrupt by restore()")
        )
