"""The training batches of ``python -m experiments.toy2d``, streamed from the host."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def host_batches(
    points: np.ndarray,
    batch_size: int,
    seed: int,
    start: int,
    num_steps: int,
    chunk: int,
    boundaries: Sequence[int] = (),
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Stacks ``{"x": (K, B, D)}`` of the batches of steps ``start, start + 1, ...``.

    Each epoch is a fresh permutation of the points (``default_rng([seed, epoch])``), cut into
    full batches (the tutorial's ``torch.randperm`` loop, remainder dropped). Batch ``n`` depends
    only on ``(seed, n)``, so a resumed run sees exactly the batches it would have seen. Stacks
    end at multiples of ``chunk`` and of every ``boundaries`` entry (checkpoint intervals), and
    at ``num_steps``; the generator stops there. In a multi-process run each process gets its
    slice of every global batch, rows ``[p * B / P, (p + 1) * B / P)`` (``(K, B / P, D)``), which
    is where the data-parallel step puts them.
    """
    n = points.shape[0]
    share = batch_size // process_count
    rows = slice(process_index * share, (process_index + 1) * share)
    spe = n // batch_size
    perms: dict[int, np.ndarray] = {}
    step = start
    while step < num_steps:
        stop = min(num_steps, (step // chunk + 1) * chunk)
        for every in boundaries:
            stop = min(stop, (step // every + 1) * every)
        idx = []
        for s in range(step, stop):
            epoch, pos = divmod(s, spe)
            if epoch not in perms:
                perms = {epoch: np.random.default_rng([seed, epoch]).permutation(n)}
            idx.append(perms[epoch][pos * batch_size : (pos + 1) * batch_size])
        yield {"x": points[np.stack(idx)[:, rows]]}
        step = stop
