"""The training loop: :func:`fit` drives a :class:`jaxdiff.train.Trainer` from ``state.step`` to
``num_steps`` in compiled calls of up to K steps, and handles the events between calls.

How a call advances the state (:func:`_advancer`): on a dataset that lives on the devices (batch
indices drawn inside the compiled call), or on stacked host batches from an iterator. When
something happens between calls (:class:`_Events`): checkpoints every ``save_every`` steps,
hooks every ``every`` steps, both at the end, and a stop request (SIGINT or SIGTERM, see
:mod:`jaxdiff.loop.stop`). On the devices, calls on the data path are cut so that every event
falls exactly on its step.

The host never makes the devices wait: a call's metrics are fetched (one transfer) after the
next call has been dispatched, one call behind, except where an event needs the state, which
then waits for the call it follows. Every loss is checked (:mod:`jaxdiff.loop.health`) before a
state that includes it is saved, shown to a hook or kept on a stop, so a diverged state is never
checkpointed. Only the main process shows the bar and writes the log; every process runs the
calls, the checkpoint calls (orbax synchronises them) and the hooks (which guard their own file
writes with :func:`jaxdiff.sharding.is_main_process`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxdiff.loop.health import DivergenceError, DivergenceRule, Health, check_health
from jaxdiff.loop.stop import StopRequests, TrainingInterrupted
from jaxdiff.loop.watchdog import Watchdog
from jaxdiff.sharding import is_main_process
from jaxdiff.train import Trainer, TrainState

__all__ = ["Hook", "fit", "steps_per_second"]

Hook = tuple[int, Callable[[int, TrainState], None]]
"""``(every, fn)``: ``fn(step, state)`` runs after step ``step`` whenever ``step % every == 0``
(and after the last step). ``state`` must not be kept: the next call donates it."""

STALL_TIMEOUT = 120.0
"""Seconds a process of a multi-process run waits for its devices before it counts its peers
as lost (:class:`jaxdiff.loop.watchdog.Watchdog`)."""

Call = tuple[int, int, Any]  # (first step, number of steps, the call's metrics on the devices)


def _advancer(trainer: Trainer, data, batch_size: int) -> Callable[..., tuple]:
    """``advance(state, step, n) -> (state, metrics, steps done)`` from ``step``, for either kind
    of ``data`` (``n`` is the length wanted; a host stack brings its own)."""
    if isinstance(data, Mapping):
        return lambda state, step, n: (*trainer.steps_on_data(state, data, batch_size, n), n)

    def advance(state: TrainState, step: int, n: int):
        try:
            batches = next(data)
        except StopIteration:
            raise ValueError(
                f"the batch iterator ran out at step {step}; give an iterator that cycles over "
                "epochs (or fewer training steps)"
            ) from None
        state, metrics = trainer.steps(state, batches)
        return state, metrics, int(jax.tree_util.tree_leaves(batches)[0].shape[0])

    return advance


class _Events:
    """Which events fall on a step: hooks, checkpoints, the end."""

    def __init__(self, hooks: Sequence[Hook], save_every: int | None, num_steps: int):
        self.hooks = list(hooks)
        self.save_every = save_every
        self.num_steps = num_steps
        self.everies = [e for e, _ in self.hooks] + ([save_every] if save_every else [])

    def call_length(self, step: int, k: int) -> int:
        """Steps in the next call from ``step``: at most ``k``, ending on the next event."""
        n = min(k, self.num_steps - step)
        if self.everies:
            n = min(n, min((step // e + 1) * e for e in self.everies) - step)
        return n

    def hooks_at(self, step: int) -> list[Callable]:
        return [fn for e, fn in self.hooks if step % e == 0 or step == self.num_steps]

    def save_at(self, step: int) -> bool:
        return step == self.num_steps or (
            self.save_every is not None and step % self.save_every == 0
        )


class _Monitor:
    """Reads a call's metrics: one transfer, the health check, the records, the log, the bar."""

    def __init__(self, rule: DivergenceRule, metrics_log, bar, batch_size: int, watchdog):
        self.rule, self.metrics_log, self.bar = rule, metrics_log, bar
        self.batch_size, self.watchdog = batch_size, watchdog
        self.health = Health()
        self.records: list[dict[str, float]] = []
        self.main = is_main_process()
        self.t0 = self.last = time.perf_counter()
        self.smoothed: float | None = None

    def read(self, call: Call, on_bad: Callable[[int, str], None]) -> None:
        first, n, metrics = call
        with self.watchdog.waiting(f"the steps after step {first}"):
            host = {k: np.asarray(v, np.float64) for k, v in jax.device_get(metrics).items()}
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        self.health, bad, why = check_health(
            self.rule, self.health, host["loss"], host.get("grad_norm")
        )
        if bad is not None:
            on_bad(first + bad + 1, why)
        for i in range(n):
            record = {"step": first + i + 1, **{k: float(v[i]) for k, v in host.items()}}
            record["time"] = round(now - self.t0, 3)
            self.records.append(record)
            if self.metrics_log is not None and self.main:
                self.metrics_log.write(record)
        loss = float(host["loss"].mean())
        self.smoothed = loss if self.smoothed is None else 0.9 * self.smoothed + 0.1 * loss
        self.bar.update(n)
        self.bar.set_postfix(
            loss=f"{self.smoothed:.4f}",
            steps_s=f"{n / seconds:.2f}",
            img_s=f"{n * self.batch_size / seconds:.0f}",
            refresh=False,
        )


def fit(
    trainer: Trainer,
    state: TrainState,
    data: Mapping[str, jax.Array] | Iterator[Mapping[str, Any]],
    *,
    num_steps: int,
    batch_size: int,
    checkpointer=None,
    checkpoint_metadata: Mapping[str, Any] | None = None,
    metrics_log=None,
    hooks: Sequence[Hook] = (),
    progress: bool = True,
    divergence: DivergenceRule = DivergenceRule(),
    stall_timeout: float | None = STALL_TIMEOUT,
) -> tuple[TrainState, list[dict[str, float]]]:
    """Train from ``state.step`` up to ``num_steps``; return the final state and the new records.

    Args:
      trainer: the compiled step (:class:`jaxdiff.train.Trainer`).
      state: the starting state (fresh, or restored for ``--resume``); it is donated.
      data: either the dataset on the devices, ``trainer.put_data({"x": (N, ...), "labels":
        (N,)})``, sampled inside the compiled calls; or an iterator of stacked host batches
        ``{"x": (K, B, ...), ...}`` (streaming; the iterator decides each call's length, so its
        stacks should end on the checkpoint and hook multiples).
      num_steps: the total number of steps the run should reach (>= 1).
      batch_size: global batch size (for the on-device path and the images/s figure).
      checkpointer: a :class:`jaxdiff.checkpoint.Checkpointer` or ``None``; its ``save_every``
        sets the checkpoint interval, and the final step is always saved.
      checkpoint_metadata: JSON-serialisable dict stored with every checkpoint (the config).
      metrics_log: a :class:`jaxdiff.outputs.MetricsLog` or ``None``; gets one record per step:
        ``step`` (1-based count of steps done), ``loss``, ``grad_norm``, ``learning_rate``,
        ``ema_decay``, ``time`` (seconds since the loop started).
      hooks: ``(every, fn)`` pairs, see :data:`Hook` (e.g. a sample grid every N steps).
      progress: show the tqdm bar (main process only).
      divergence: when training counts as diverged (:class:`DivergenceRule`).
      stall_timeout: in a multi-process run, the seconds to wait for the devices before the
        other processes count as lost (:class:`jaxdiff.loop.watchdog.Watchdog`); ``None``: wait
        forever. One process never times out.

    Returns:
      ``(state, records)``: the state after ``num_steps`` and the per-step records of this call.

    Raises:
      DivergenceError: a step's loss or gradient norm is not finite, or the loss exploded;
        nothing from that step on is saved.
      TrainingInterrupted: SIGINT or SIGTERM arrived; the newest state was saved first.
    """
    if min(num_steps, batch_size, *(every for every, _ in hooks)) < 1:
        raise ValueError(
            f"num_steps, batch_size and hook intervals must be >= 1, got {num_steps}, "
            f"{batch_size}, {[every for every, _ in hooks]}"
        )
    start = int(jax.device_get(state.step))
    if start > num_steps:
        raise ValueError(
            f"the state is already at step {start}, beyond num_steps={num_steps}; "
            "pass a larger number of training steps to continue this run"
        )
    events = _Events(hooks, getattr(checkpointer, "save_every", None), num_steps)
    advance = _advancer(trainer, data, batch_size)
    watchdog = Watchdog(stall_timeout if jax.process_count() > 1 else None)
    bar = tqdm(
        total=num_steps, initial=start, desc="train", unit="step",
        disable=not (progress and is_main_process()), dynamic_ncols=True,
    )  # fmt: skip
    monitor = _Monitor(divergence, metrics_log, bar, batch_size, watchdog)

    def diverged(step: int, why: str) -> None:
        last = None
        if checkpointer is not None:
            checkpointer.wait()
            last = checkpointer.latest_step()
        raise DivergenceError(step, why, last, getattr(checkpointer, "directory", None))

    def save(step: int, force: bool) -> bool:
        return checkpointer is not None and checkpointer.save(
            step, state, metadata=checkpoint_metadata, force=force
        )

    step, pending = start, None
    with StopRequests() as stop, bar:
        while step < num_steps:
            n = events.call_length(step, trainer.steps_per_call)
            state, metrics, n = advance(state, step, n)
            if pending is not None:  # the previous call's metrics, while this call runs
                monitor.read(pending, diverged)
            pending, step = (step, n, metrics), step + n
            stopping = stop.due()
            due = events.hooks_at(step)
            if due or stopping or events.save_at(step):
                monitor.read(pending, diverged)  # never keep or show an unchecked state
                pending = None
                saved = save(step, force=stopping or step == num_steps)
                if stopping:
                    if checkpointer is not None:
                        checkpointer.wait()
                    raise TrainingInterrupted(stop.signum, step if saved else None)
                for fn in due:
                    fn(step, state)
    if checkpointer is not None:
        checkpointer.wait()
    return state, monitor.records


def steps_per_second(records: Sequence[Mapping[str, float]]) -> float:
    """Training speed from the ``time`` field of per-step records, excluding the first call
    (compilation). NaN when there are too few records."""
    times = sorted({r["time"] for r in records})
    if len(times) < 3:
        return math.nan
    first = times[0]
    later = [r for r in records if r["time"] > first]
    return len(later) / (times[-1] - first)
