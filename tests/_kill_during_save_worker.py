"""Subprocess for tests/test_reliability.py: start a checkpoint write and hang inside it.

    python tests/_kill_during_save_worker.py DIR

Saves step 1 (completely), then starts saving step 2 with orbax's commit (the atomic rename of
the temporary directory) replaced by a function that prints ``IN_SAVE`` and sleeps: the array
data of step 2 is on disk but not committed, the moment a ``kill -9`` does the most harm. The
test kills this process when it reads ``IN_SAVE``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax.numpy as jnp
from orbax.checkpoint._src.path import atomicity

from jaxdiff.checkpoint import Checkpointer


def state(step: int) -> dict:
    return {"params": {"w": jnp.full((256, 256), float(step)), "b": jnp.arange(7.0) * step}}


async def _hang(self, *args, **kwargs):
    print("IN_SAVE", flush=True)
    while True:
        time.sleep(1)


def main(directory: str) -> None:
    with Checkpointer(directory, async_save=False) as ckpt:
        ckpt.save(1, state(1))
    atomicity.AtomicRenameTemporaryPath.finalize = _hang
    atomicity.CommitFileTemporaryPath.finalize = _hang
    ckpt = Checkpointer(directory)
    ckpt.save(2, state(2))
    ckpt.wait()
    print("SAVE_FINISHED", flush=True)  # never reached: the test kills us inside the save


if __name__ == "__main__":
    main(sys.argv[1])
