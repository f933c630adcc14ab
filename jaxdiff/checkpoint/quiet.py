"""Orbax's own reports of a failed save or read, kept off the terminal: jaxdiff reports each one.

When a write fails (a full disk) or a read fails (a damaged file), orbax logs the error with its
traceback from every thread that saw it (through absl's logger), asyncio reports every task and
future whose exception nobody retrieved, and tensorstore's callbacks run into the event loop
orbax has already closed (``RuntimeError: Event loop is closed``, reported as unraisable), as
does every read coroutine orbax abandoned when one array of a damaged checkpoint failed:
hundreds to tens of thousands of stderr lines for one problem that
:class:`~jaxdiff.checkpoint.Checkpointer` already raises or warns about in one line.
:func:`install` drops exactly those reports for the rest of the process; everything else (other
libraries' records, orbax's INFO and DEBUG records) passes. ``JAXDIFF_DEBUG=1`` keeps them all.
"""

from __future__ import annotations

import logging
import os
import sys
from types import TracebackType
from typing import Any

__all__ = ["install"]

_PACKAGES = (f"{os.sep}orbax{os.sep}", f"{os.sep}tensorstore{os.sep}")
_installed = False


def _in_orbax(filename: str) -> bool:
    return any(package in filename for package in _PACKAGES)


def _raised_in_orbax(tb: TracebackType | None) -> bool:
    while tb is not None:
        if _in_orbax(tb.tb_frame.f_code.co_filename):
            return True
        tb = tb.tb_next
    return False


class _OrbaxReports(logging.Filter):
    """Drops WARNING and worse records logged by orbax or carrying an exception raised in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        tb = record.exc_info[2] if record.exc_info else None
        return not (_in_orbax(record.pathname) or _raised_in_orbax(tb))


def _is_closed_loop_callback(unraisable: Any) -> bool:
    """A tensorstore callback that reached an event loop orbax had closed."""
    exc = unraisable.exc_value
    return (
        unraisable.object is None
        and isinstance(exc, RuntimeError)
        and str(exc) == "Event loop is closed"
    )


def _is_abandoned_orbax_coroutine(unraisable: Any) -> bool:
    """A coroutine of orbax's that raised after the read it served had already failed (orbax
    stops awaiting the other arrays' reads; when they are collected, Python reports each one)."""
    return _raised_in_orbax(unraisable.exc_traceback)


def _quiet_unraisable_hook(hook):
    def quiet(unraisable: Any) -> None:
        if not (_is_closed_loop_callback(unraisable) or _is_abandoned_orbax_coroutine(unraisable)):
            hook(unraisable)

    return quiet


def install() -> None:
    """Filter orbax's, asyncio's and tensorstore's reports of checkpoint failures (see the
    module doc) from now on; idempotent, and a no-op with ``JAXDIFF_DEBUG`` set."""
    global _installed
    if _installed or os.environ.get("JAXDIFF_DEBUG"):
        return
    _installed = True
    for name in ("absl", "asyncio"):  # orbax logs through absl
        logging.getLogger(name).addFilter(_OrbaxReports())
    sys.unraisablehook = _quiet_unraisable_hook(sys.unraisablehook)
