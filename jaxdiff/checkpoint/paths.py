"""The checkpoint directory and step numbers: normalised paths, a write probe, step checks."""

from __future__ import annotations

import operator
import os

import jax
import numpy as np
from etils import epath

from jaxdiff.outputs import probe_writable as _probe_writable

__all__ = ["as_step", "normalize_directory", "probe_writable"]

_UNWRITABLE = (
    "checkpoint directory {path} is not writable ({reason}). Choose a writable directory (e.g. "
    "another --out), fix its permissions, or free disk space"
)


def normalize_directory(directory: str | os.PathLike) -> epath.Path:
    """``directory`` as an absolute ``etils.epath.Path`` (``~`` expanded); remote paths such as
    ``gs://bucket/run`` are kept as they are."""
    text = os.fspath(directory)
    if "://" in text:  # gs://, s3://, ... : leave remote paths alone
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def probe_writable(directory: str | os.PathLike) -> None:
    """Check that checkpoints can be written to ``directory``, before training starts.

    :func:`jaxdiff.outputs.probe_writable` (create the directory, write, read back and delete a
    probe file) with a message about the checkpoint directory. Every process of a multi-process
    run calls it (each probe file has a unique name), so a directory that is not writable from
    one host is caught early on that host.

    Args:
        directory: local path or a path orbax understands (e.g. ``gs://bucket/run/checkpoints``).

    Raises:
        PermissionError: (an ``OSError``, with the original ``errno``) naming the absolute
            ``directory`` and saying how to fix it.
    """
    _probe_writable(normalize_directory(directory), message=_UNWRITABLE)


def as_step(step) -> int:
    """``step`` (a Python or NumPy integer, or a scalar integer array) as an ``int``.

    Raises:
        TypeError: ``step`` is not an integer.
        ValueError: ``step`` is negative.
    """
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
