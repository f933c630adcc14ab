"""A stuck peer becomes an error: a timer around the host's waits for the devices.

In a multi-process run every compiled call contains collectives; if another process died or
hangs, this process waits inside the collective library, where no Python exception reaches it
(gloo's own timeout is 30 minutes). :class:`Watchdog` arms a timer around each such wait; if
the wait outlasts its limit, it prints one line and ends the process with exit code 1 (the last
committed checkpoint stays; nothing newer could be saved without the other processes).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator

__all__ = ["Watchdog"]

EXIT_CODE = 1


class Watchdog:
    """Time the waits of one training run.

    Args:
      timeout: the shortest limit for one wait, in seconds; a wait may take up to ten times
        the longest wait seen so far, if that is longer (calls differ in length). ``None``
        turns the watchdog off (the default for one process, where nothing can hang).
      what: names the run in the message.
    """

    def __init__(self, timeout: float | None, what: str = "training"):
        self.timeout = timeout
        self.what = what
        self._longest = 0.0

    @contextlib.contextmanager
    def waiting(self, for_what: str) -> Iterator[None]:
        """Run the body (a blocking wait for ``for_what``) under the timer."""
        if self.timeout is None:
            yield
            return
        limit = max(self.timeout, 10 * self._longest)
        done = threading.Event()
        timer = threading.Thread(
            target=self._expire, args=(done, limit, for_what), daemon=True, name="jaxdiff-watchdog"
        )
        start = time.monotonic()
        timer.start()
        try:
            yield
        finally:
            done.set()
            self._longest = max(self._longest, time.monotonic() - start)

    def _expire(self, done: threading.Event, limit: float, for_what: str) -> None:
        if done.wait(limit):
            return
        message = (
            f"jaxdiff: {self.what} waited {limit:.0f} s for {for_what} without an answer: another "
            "process of this run has stopped or hangs in a collective. Stopping this process "
            "too; restart every process with --resume (raise the limit with --stall-timeout)\n"
        )
        os.write(sys.stderr.fileno(), message.encode())
        os._exit(EXIT_CODE)
