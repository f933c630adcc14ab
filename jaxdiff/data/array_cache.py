"""The decoded-array cache of a data set: one ``.npz`` per data set and split, written
atomically (a temporary file beside it, renamed over it), read back with every failure taken as
"rebuild it" (the cache is derived data), and temporaries of killed runs swept by the next
writer (a live writer holds a lock on its own)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from jaxdiff.data.download import DataNotFoundError

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks, so leftover temporaries go by age alone
    fcntl = None

__all__ = ["DataCacheWarning", "commit_cache_file", "discard", "open_cache_file", "read_cache"]


class DataCacheWarning(UserWarning):
    """A cached decoded data set could not be read (truncated, damaged) and is being rebuilt."""


def read_cache(
    path: Path, n_expected: int | None, rebuild: str
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """``(images, labels, origin)`` from a cache file; ``None`` if it is absent or unreadable.

    An unreadable file (truncated, bit-flipped, foreign) is derived data: the caller rebuilds it
    from its source, named by ``rebuild`` in the one-line :class:`DataCacheWarning`.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels, origin = z["images"], z["labels"], str(z["origin"])
        if images.dtype != np.uint8 or images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"it holds images {images.shape} {images.dtype}, labels {labels.shape}"
            )
        if n_expected is not None and images.shape[0] != n_expected:
            raise ValueError(f"it holds {images.shape[0]} images, expected {n_expected}")
    except Exception as err:  # zipfile.BadZipFile, zlib.error, EOFError, ...: all mean rebuild
        reason = " ".join(f"{type(err).__name__}: {err}".split())  # one line
        warnings.warn(
            f"the decoded data cache {path} is unreadable ({reason}); rebuilding it from "
            f"{rebuild}.",
            DataCacheWarning,
            stacklevel=4,
        )
        return None
    return images, labels, origin


def open_cache_file(path: Path, title: str) -> tuple[int, str]:
    """Create ``path``'s folder and a temporary file beside it (fails before any download).

    The file is locked while this process lives, so :func:`_abandoned` tells it from one that a
    killed run left behind.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as err:
        raise DataNotFoundError(
            f"cannot write the {title} cache folder {path.parent} "
            f"({err.strerror or err}). Set JAXDIFF_CACHE_DIR to a folder you can write to."
        ) from None
    if fcntl is not None:
        with contextlib.suppress(OSError):  # a file system without locks: swept by age alone
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd, tmp


def discard(fd: int, tmp: str) -> None:
    """Close and delete an unfinished temporary file."""
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _abandoned(part: Path) -> bool:
    """Whether the temporary file ``part`` was left by a run that died (killed mid-download or
    mid-write): no live process holds its lock. A file touched in the last few seconds is never
    taken (its writer may be between creating and locking it, or closing and renaming it); where
    locks are unavailable, only a file over an hour old is."""
    age = time.time() - part.stat().st_mtime
    if fcntl is None or age < 5:
        return age > 3600
    with open(part, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live writer holds it
            return False
        except OSError:  # no locks on this file system
            return age > 3600
    return True


def commit_cache_file(
    fd: int, tmp: str, path: Path, images: np.ndarray, labels: np.ndarray, origin: str
) -> None:
    """Write the arrays into ``tmp`` and rename it over ``path`` (atomic: readers see the old
    file or the new one, never half of one; concurrent writers of the same data both succeed).
    If anything fails, even an interrupt, ``tmp`` is deleted; then the temporaries of runs that
    died are."""
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, labels=labels, origin=np.str_(origin))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    for part in path.parent.glob(".*.part"):
        with contextlib.suppress(OSError):  # gone already, or not ours to read
            if _abandoned(part):
                part.unlink()
