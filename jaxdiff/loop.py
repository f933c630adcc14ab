"""The training loop: compiled K-step calls, progress bar, metrics log, checkpoints, hooks.

:func:`fit` drives a :class:`jaxdiff.train.Trainer` from ``state.step`` to ``num_steps``:

- each call runs up to K steps (``trainer.steps_per_call``) in one compiled ``lax.scan``, either
  on a dataset that lives on the devices (batch indices drawn inside the compiled function) or on
  stacked host batches from an iterator (streaming);
  calls are shortened so that checkpoints and hooks fall exactly on their step multiples;
- the host never makes the devices wait: each call's metrics come back in one transfer, fetched
  after the next call has been dispatched (one call behind), except where a checkpoint or a hook
  needs the state, which waits for the call it follows;
- a tqdm bar shows loss, steps/s, images/s and the ETA;
- every step's metrics are appended to ``metrics.jsonl`` (:class:`jaxdiff.outputs.MetricsLog`);
- a non-finite loss stops training with :class:`NonFiniteLossError` naming the first bad step;
  the bad state is never saved, so the last good checkpoint is what ``--resume`` finds;
- checkpoints every ``save_every`` steps (the :class:`jaxdiff.checkpoint.Checkpointer`'s own
  rule), at the end, and on ``KeyboardInterrupt`` (so Ctrl-C loses no work).

Only the main process shows the bar and writes the log; every process runs the compiled calls,
the checkpoint calls (orbax synchronises them) and the hooks (which must guard their own file
writes with :func:`jaxdiff.sharding.is_main_process`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxdiff.sharding import is_main_process
from jaxdiff.train import Trainer, TrainState

__all__ = ["Hook", "NonFiniteLossError", "fit", "steps_per_second"]

Hook = tuple[int, Callable[[int, TrainState], None]]
"""``(every, fn)``: ``fn(step, state)`` runs after step ``step`` whenever ``step % every == 0``
(and after the last step). ``state`` must not be kept: the next call donates it."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; ``step`` is the first bad step (1-based)."""

    def __init__(self, step: int, last_checkpoint: int | None, directory: str | None):
        self.step = step
        self.last_checkpoint = last_checkpoint
        where = (
            f"the last good checkpoint (step {last_checkpoint}) is kept in {directory}; "
            "lower --learning-rate or tighten gradient clipping and rerun with --resume"
            if last_checkpoint is not None
            else "no checkpoint was written before it; lower the learning rate and start again"
        )
        super().__init__(f"loss is not finite at step {step}; training stopped; {where}")


def _check_positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _next_event(step: int, everies: Sequence[int]) -> int:
    """The smallest multiple of any ``every`` that is > ``step``."""
    return min(((step // e) + 1) * e for e in everies)


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
    description: str = "train",
) -> tuple[TrainState, list[dict[str, float]]]:
    """Train from ``state.step`` up to ``num_steps``; return the final state and the new records.

    Args:
      trainer: the compiled step (:class:`jaxdiff.train.Trainer`).
      state: the starting state (fresh, or restored for ``--resume``); it is donated.
      data: either the dataset on the devices, ``trainer.put_data({"x": (N, ...), "labels":
        (N,)})``, sampled inside the compiled calls; or an iterator of stacked host batches
        ``{"x": (K, B, ...), ...}`` with K = ``trainer.steps_per_call`` (streaming; every call
        then runs exactly K steps, so checkpoint and hook intervals should be multiples of K).
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
      description: the bar's label.

    Returns:
      ``(state, records)``: the state after ``num_steps`` and the per-step records of this call.

    Raises:
      NonFiniteLossError: a step produced a NaN/inf loss (nothing after it is saved).
    """
    num_steps = _check_positive(num_steps, "num_steps")
    batch_size = _check_positive(batch_size, "batch_size")
    hooks = [(_check_positive(every, "hook interval"), fn) for every, fn in hooks]
    on_device = isinstance(data, Mapping)
    k = trainer.steps_per_call
    start = int(jax.device_get(state.step))
    if start > num_steps:
        raise ValueError(
            f"the state is already at step {start}, beyond num_steps={num_steps}; "
            "pass a larger number of training steps to continue this run"
        )
    save_every = getattr(checkpointer, "save_every", None)
    everies = [e for e, _ in hooks] + ([save_every] if save_every else [])
    main = is_main_process()
    records: list[dict[str, float]] = []
    bar = tqdm(
        total=num_steps,
        initial=start,
        desc=description,
        unit="step",
        disable=not (progress and main),
        dynamic_ncols=True,
    )
    t0 = time.perf_counter()
    smoothed: float | None = None
    step = start
    last_saved = checkpointer.latest_step() if checkpointer is not None else None

    def save(force: bool) -> None:
        nonlocal last_saved
        if checkpointer is not None and checkpointer.save(
            step, state, metadata=checkpoint_metadata, force=force
        ):
            last_saved = step

    pending = None  # (first step, steps, device metrics) of the call whose metrics are unread
    checked = start  # every loss up to this step was read and is finite
    last_read = time.perf_counter()

    def read(call) -> None:
        """Fetch one call's metrics (one transfer), log them, stop on a non-finite loss."""
        nonlocal smoothed, last_read, checked
        first, n, metrics = call
        host = {k: np.asarray(v, np.float64) for k, v in jax.device_get(metrics).items()}
        now = time.perf_counter()
        call_time, last_read = now - last_read, now
        losses = host["loss"]
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            if checkpointer is not None:
                checkpointer.wait()
            raise NonFiniteLossError(
                first + int(bad[0]) + 1,
                last_saved,
                str(checkpointer.directory) if checkpointer is not None else None,
            )
        for i in range(n):
            record = {"step": first + i + 1}
            record.update({name: float(v[i]) for name, v in host.items()})
            record["time"] = round(now - t0, 3)
            records.append(record)
            if metrics_log is not None and main:
                metrics_log.write(record)
        checked = first + n
        mean_loss = float(losses.mean())
        smoothed = mean_loss if smoothed is None else 0.9 * smoothed + 0.1 * mean_loss
        bar.update(n)
        bar.set_postfix(
            loss=f"{smoothed:.4f}",
            steps_s=f"{n / call_time:.2f}",
            img_s=f"{n * batch_size / call_time:.0f}",
            refresh=False,
        )

    try:
        while step < num_steps:
            n = min(k, num_steps - step)
            if on_device:
                if everies:
                    n = min(n, _next_event(step, everies) - step)
                state, metrics = trainer.steps_on_data(state, data, batch_size, n)
            else:
                try:
                    batches = next(data)
                except StopIteration:
                    raise ValueError(
                        f"the batch iterator ran out at step {step} of {num_steps}; give an "
                        "iterator that cycles over epochs (or fewer training steps)"
                    ) from None
                state, metrics = trainer.steps(state, batches)
                n = int(jax.tree_util.tree_leaves(batches)[0].shape[0])
            if pending is not None:  # the previous call's metrics, while this call runs
                read(pending)
            pending = (step, n, metrics)
            step += n
            due = [fn for every, fn in hooks if step % every == 0 or step == num_steps]
            save_due = checkpointer is not None and (not save_every or step % save_every == 0)
            if due or save_due or step == num_steps:
                read(pending)  # never save or show a state whose loss was not checked
                pending = None
                save(force=False)
                for fn in due:
                    fn(step, state)
        if pending is not None:
            read(pending)
        save(force=True)
    except KeyboardInterrupt:
        # Keep the newest valid state, then let the caller stop. The interrupt may land after a
        # call returned but before ``step`` advanced, so the state's own step names the
        # checkpoint; if it landed inside the call, ``state`` was donated and cannot be saved
        # (the last periodic checkpoint then stands). A state is saved only once every loss up
        # to its step has been read and found finite.
        if pending is not None and pending[0] == checked:  # unread, and not half-read
            read(pending)
        if checkpointer is not None:
            try:
                step = int(jax.device_get(state.step))
                if step > start and step == checked:
                    save(force=True)
                    checkpointer.wait()
            except (RuntimeError, ValueError) as e:
                warnings.warn(
                    f"could not save the state on interrupt ({e}); resume uses the last "
                    f"checkpoint (step {last_saved})",
                    stacklevel=2,
                )
        raise
    finally:
        bar.close()
    if checkpointer is not None:
        checkpointer.wait()
    return state, records


def steps_per_second(records: Sequence[Mapping[str, float]]) -> float:
    """Training speed from the ``time`` field of per-step records, excluding the first call
    (compilation). NaN when there are too few records."""
    times = sorted({r["time"] for r in records})
    if len(times) < 3:
        return math.nan
    first = times[0]
    later = [r for r in records if r["time"] > first]
    return len(later) / (times[-1] - first)
