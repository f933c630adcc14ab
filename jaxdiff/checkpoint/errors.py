"""The errors and warnings of :mod:`jaxdiff.checkpoint`, and the short reasons they quote."""

from __future__ import annotations

import errno

__all__ = [
    "CheckpointCorruptionWarning",
    "CheckpointSaveError",
    "CorruptCheckpointError",
    "StepCorrupt",
    "UnverifiedCheckpointWarning",
    "save_error",
    "short",
]

_MAX_REASON_CHARS = 300


class CheckpointCorruptionWarning(UserWarning):
    """A checkpoint step was found corrupt or incomplete and was skipped."""


class UnverifiedCheckpointWarning(UserWarning):
    """A step was restored without the fingerprint check (no fingerprints, or fingerprints of
    an earlier format)."""


class CorruptCheckpointError(RuntimeError):
    """No valid checkpoint could be restored (every candidate step is corrupt or incomplete)."""


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed (read-only directory, full disk, ...).

    Earlier checkpoints are left intact; the error message names the directory and the step.
    """


class StepCorrupt(Exception):
    """Internal: one step failed an integrity check; the message says which and why."""


def short(e: BaseException) -> str:
    """``"ExceptionType: message"`` on one line, cut to a few hundred characters (orbax's and
    tensorstore's errors can run to pages)."""
    text = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    return text if len(text) <= _MAX_REASON_CHARS else text[:_MAX_REASON_CHARS] + " ..."


def save_error(directory, step: int | None, e: BaseException) -> CheckpointSaveError:
    """The :class:`CheckpointSaveError` for a failed save of ``step`` (``None``: not known) into
    ``directory``, quoting ``e`` and keeping its ``errno`` (``EIO`` if it has none)."""
    what = f"checkpoint step {step}" if step is not None else "a checkpoint"
    return CheckpointSaveError(
        getattr(e, "errno", None) or errno.EIO,
        f"could not write {what} to {directory} ({short(e)}). Earlier checkpoints there are "
        f"intact. Check free disk space and write permission "
        f"(jaxdiff.checkpoint.probe_writable) and restart from the latest checkpoint",
    )
