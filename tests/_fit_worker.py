"""Train a small MLP with ``jaxdiff.loop.fit`` until done or stopped by a signal (for
tests/test_interrupts.py). ``python tests/_fit_worker.py {device,host} OUT NUM_STEPS``: resumes
from ``OUT/ckpt`` when it holds a checkpoint; exits with ``TrainingInterrupted.exit_code``
after SIGINT or SIGTERM. A hook sleeps 2 ms every 10 steps, so that a run lasts a few seconds
and a signal lands in the middle of it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from flax import nnx

from jaxdiff.checkpoint import Checkpointer
from jaxdiff.loop import TrainingInterrupted, fit
from jaxdiff.models import SinusoidalMLP, split_model
from jaxdiff.outputs import MetricsLog
from jaxdiff.schedules import make_schedule
from jaxdiff.train import TrainConfig, Trainer

BATCH, K, SAVE_EVERY = 16, 5, 500


def host_batches(x: np.ndarray, start: int, num_steps: int):
    """Stacks of K batches; batch n depends only on n, so a resumed run sees the same ones."""
    for first in range(start, num_steps, K):
        rows = [np.random.default_rng(n).choice(len(x), BATCH) for n in range(first, first + K)]
        yield {"x": x[np.stack(rows)]}


def main(mode: str, out: Path, num_steps: int) -> int:
    _, params, apply = split_model(
        SinusoidalMLP(2, hidden=32, depth=2, time_dim=8, rngs=nnx.Rngs(0))
    )
    config = TrainConfig(learning_rate=1e-3, ema_decay=0.99, steps_per_call=K, unroll=1)
    trainer = Trainer(apply, make_schedule("linear", num_steps=50), config)
    x = np.random.default_rng(0).normal(size=(512, 2)).astype(np.float32)
    with Checkpointer(out / "ckpt", save_every=SAVE_EVERY) as ckpt:
        state = trainer.init_state(params, 0)
        restored = None
        if ckpt.latest_step() is not None:
            state, _ = ckpt.restore(state)
            restored = int(state.step)
        start = restored or 0
        data = trainer.put_data({"x": x}) if mode == "device" else host_batches(x, start, num_steps)
        with MetricsLog(out / "metrics.jsonl", truncate_after=restored) as log:
            try:
                fit(
                    trainer, state, data, num_steps=num_steps, batch_size=BATCH,
                    checkpointer=ckpt, metrics_log=log, progress=False,
                    hooks=[(10, lambda step, state: time.sleep(0.002))],
                )  # fmt: skip
            except TrainingInterrupted as e:
                print(e, flush=True)
                return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])))
