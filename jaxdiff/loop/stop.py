"""Stopping training cleanly: SIGINT and SIGTERM become a request that the loop honours between
compiled calls, and in a multi-process run every process agrees on the call to stop after.

A signal never interrupts a compiled call or a save, so the state the loop holds when it stops
is always consistent and can be checkpointed. One process: SIGINT (Ctrl-C) and SIGTERM (a
scheduler's or a cloud's preemption notice) set a flag; a second Ctrl-C raises
``KeyboardInterrupt`` at once, for a user who will not wait. Several processes
(``jax.distributed``): JAX's preemption service owns SIGTERM and, once any process got it,
makes ``reached_preemption_sync_point`` true on every process at the same call; a Ctrl-C in one
process is passed to that service as a SIGTERM to itself, so it reaches the others the same way.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import jax

__all__ = ["StopRequests", "TrainingInterrupted"]


class TrainingInterrupted(Exception):
    """Training stopped on a signal. ``signum`` is the signal (SIGINT or SIGTERM); ``step`` the
    step whose state was checkpointed (``None`` when the loop had no checkpointer);
    ``exit_code`` is 128 + the signal number, as a shell reports it."""

    def __init__(self, signum: int, step: int | None):
        self.signum = signum
        self.step = step
        self.exit_code = 128 + int(signum)
        name = signal.Signals(signum).name
        saved = f"the state at step {step} is saved" if step is not None else "nothing was saved"
        super().__init__(f"{name} received: training stopped between steps; {saved}")


def _preemption_service() -> bool:
    """Whether JAX's preemption service runs (a ``jax.distributed`` run that started it)."""
    from jax._src import distributed

    state = distributed.global_state
    return state.client is not None and getattr(state, "preemption_sync_manager", None) is not None


class StopRequests:
    """The signal handlers of one training run, as a context manager; :meth:`due` says whether
    to stop after the call just made (every process gets the same answer)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._calls = 0
        self._previous: dict[int, Any] = {}
        self._shared = jax.process_count() > 1 and _preemption_service()

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is not threading.main_thread():
            return self  # Python delivers signals to the main thread only
        ours = [signal.SIGINT] if self._shared else [signal.SIGINT, signal.SIGTERM]
        for signum in ours:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without a save
        first = self.signum is None
        self.signum = self.signum or signum
        if first and self._shared:
            os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption service, for everyone

    def due(self) -> bool:
        """Whether to stop now; call once after every compiled call, on every process."""
        self._calls += 1
        if not self._shared:
            return self.signum is not None
        from jax.experimental import multihost_utils

        if multihost_utils.reached_preemption_sync_point(self._calls):
            self.signum = self.signum or signal.SIGTERM
            return True
        return False
