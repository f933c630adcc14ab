"""Is a saved step intact? Leaf fingerprints recorded at save time and checked after restore.

Orbax's OCDBT/zarr files carry no checksum of the array chunks, so a flipped bit in a data file
restores without an error. Each step therefore holds a ``checksums`` item with a 64-bit
fingerprint of every leaf (:func:`tree_fingerprints`), and :func:`verify` compares the restored
state with it. The commit marker check (:func:`check_committed`) catches a step directory whose
write never finished.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.checkpoint.errors import StepCorrupt
from jaxdiff.checkpoint.trees import is_prng_key, leaves_by_name

__all__ = [
    "COMMIT_MARKER",
    "check_committed",
    "checksums_item",
    "tree_fingerprints",
    "verify",
]

COMMIT_MARKER = "commit_success.txt"  # written by orbax just before the commit rename
FORMAT = "jaxdiff-weighted-sum-v2"
_MOD = 1 << 64
_CHUNK = 1 << 20  # longest axis summed in one NumPy pass (bounds the temporaries to 8 MiB)


def _words(block: np.ndarray) -> tuple[np.ndarray, int]:
    """The bits of ``block`` as an unsigned array of shape ``block.shape + (per,)`` and ``per``,
    the words per element (32-bit words for 4/8/16-byte dtypes, bytes/halfwords for 1/2-byte
    ones)."""
    a = np.asarray(block, order="C")  # (np.ascontiguousarray makes 0-d arrays 1-d)
    size = a.dtype.itemsize
    if size % 4 == 0:
        per = size // 4
        return a.reshape(-1).view(np.uint32).reshape(*a.shape, per), per
    return a.reshape(-1).view(np.uint8 if size == 1 else np.uint16).reshape(*a.shape, 1), 1


def _weighted_sum(words: np.ndarray, starts: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """``sum (2 i + 1) w mod 2**64`` over the words ``w`` of a block whose axis ``k`` starts at
    global index ``starts[k]`` and moves ``strides[k]`` global words per step (``i`` is a word's
    global position).

    Computed from one sum per axis: with ``i = sum_k (starts[k] + j_k) strides[k]`` the total is
    ``T + 2 sum_k strides[k] (starts[k] T + sum_j j M_k[j])``, where ``T`` is the plain sum and
    ``M_k`` the sums over every axis but ``k``. Axes longer than ``_CHUNK`` are split.
    """
    longest = int(np.argmax(words.shape))
    n = words.shape[longest]
    if n > _CHUNK:
        total = 0
        for lo in range(0, n, _CHUNK):
            index = (slice(None),) * longest + (slice(lo, lo + _CHUNK),)
            sub = list(starts)
            sub[longest] += lo
            total += _weighted_sum(words[index], tuple(sub), strides)
        return total % _MOD
    axes = range(words.ndim)
    marginals = {
        k: words.sum(axis=tuple(a for a in axes if a != k), dtype=np.uint64)
        for k in axes
        if words.shape[k] > 1
    }
    plain = next(iter(marginals.values()), words).sum(dtype=np.uint64)
    total = int(plain)
    for k in axes:
        moment = 0
        if k in marginals:
            moment = int(np.dot(np.arange(words.shape[k], dtype=np.uint64), marginals[k]))
        total += 2 * strides[k] * (starts[k] * int(plain) + moment)
    return total % _MOD


def _block_hash(block: np.ndarray, starts: tuple[int, ...], shape: tuple[int, ...]) -> int:
    """The fingerprint part of ``block``, the part of a global array of ``shape`` that starts at
    ``starts``. Blocks (shards) are hashed separately and added modulo ``2**64``."""
    words, per = _words(block)
    strides = [per * int(np.prod(shape[k + 1 :], dtype=np.int64)) for k in range(len(shape))]
    return _weighted_sum(words, (*starts, 0), (*strides, 1))


def _array_hash(x: jax.Array) -> tuple[int, bool]:
    """(hash, complete): the hash of the shards this process can address; ``complete`` is False
    when other processes hold parts of ``x`` (their partial hashes must be added)."""
    if is_prng_key(x.dtype):
        x = jax.random.key_data(x)
    shape = tuple(x.shape)
    size = int(np.prod(shape, dtype=np.int64))
    distinct = {}
    for shard in x.addressable_shards:
        key = tuple(sl.indices(d)[:2] for sl, d in zip(shard.index, shape, strict=True))
        distinct.setdefault(key, shard)
    covered = sum(int(np.prod([b - a for a, b in key], dtype=np.int64)) for key in distinct)
    complete = covered == size
    total = 0
    for key, shard in distinct.items():
        if not complete and shard.replica_id != 0:
            continue  # each index is counted once over all processes: by its replica 0
        total += _block_hash(np.asarray(shard.data), tuple(a for a, _ in key), shape)
    return total % _MOD, complete


def tree_fingerprints(tree: Any) -> dict[str, str]:
    """A 64-bit content fingerprint (16 hex digits) of every array leaf of ``tree``, by leaf path.

    The fingerprint of an array is ``sum_i (2 i + 1) w_i mod 2**64`` over its bits viewed as
    words ``w_i`` (uint32 for 4/8-byte dtypes, bytes/halfwords for 1/2-byte ones; typed PRNG keys
    via ``key_data``) at global word positions ``i``: a handful of vectorised NumPy sums, about
    1 ms per MB on one CPU core. The weights are odd, so any change to a single word (a flipped
    bit) always changes the fingerprint; larger damage (zeroed, shifted or swapped blocks) goes
    unseen only if its changes happen to cancel in the weighted sum: a checksum against
    accidents, not a cryptographic hash. It depends on every bit and its position and not on
    the shape split or the sharding, so a state restored with other shardings than it was saved
    with still matches. Computed on the host shard by shard (one device-to-host copy of the
    state, no compilation); in a multi-process run the partial sums of arrays no process holds
    entirely are added with one ``process_allgather``, so every process must call this
    together.

    Args:
        tree: any pytree; ``jax.Array``, NumPy array (of numbers or bools) and Python number
            leaves are hashed, other leaves (strings, ...) are left out.

    Returns:
        ``{"params/w": "0123456789abcdef", ...}``.
    """
    result: dict[str, int] = {}
    incomplete: list[str] = []
    for name, x in leaves_by_name(tree):
        if isinstance(x, jax.Array):
            result[name], complete = _array_hash(x)
            if not complete:
                incomplete.append(name)
        elif isinstance(x, np.ndarray | np.generic | int | float | complex):
            arr = np.asarray(x)
            # Numbers (bfloat16 and other ml_dtypes included) and bools; not object arrays
            # (e.g. ints beyond 64 bits) or strings.
            if jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == np.bool_:
                result[name] = _block_hash(arr, (0,) * arr.ndim, arr.shape)
    if incomplete:
        from jax.experimental import multihost_utils

        halves = np.array(
            [[result[n] >> 32, result[n] & 0xFFFFFFFF] for n in incomplete], dtype=np.uint32
        )
        gathered = np.asarray(multihost_utils.process_allgather(halves))  # (processes, n, 2)
        for j, name in enumerate(incomplete):
            parts = gathered[:, j, :].astype(np.uint64)
            result[name] = sum((int(h) << 32) | int(lo) for h, lo in parts) % _MOD
    return {name: f"{value:016x}" for name, value in result.items()}


def checksums_item(state: Any) -> dict:
    """The JSON object saved as a step's ``checksums`` item: the format and every leaf's
    fingerprint (see :func:`tree_fingerprints`)."""
    return {"format": FORMAT, "leaves": tree_fingerprints(state)}


def check_committed(step_dir) -> None:
    """Raise :class:`StepCorrupt` unless orbax finished writing ``step_dir`` (an
    ``etils.epath.Path`` or ``pathlib.Path``): its commit marker must exist."""
    if not (step_dir / COMMIT_MARKER).exists():
        raise StepCorrupt(f"{COMMIT_MARKER} is missing, so its write never finished")


def verify(state: Any, checksums: Any) -> None:
    """Check a restored ``state`` against the ``checksums`` item saved with it.

    Args:
        state: the restored pytree.
        checksums: the restored ``checksums`` item (see :func:`checksums_item`).

    Raises:
        StepCorrupt: a leaf differs from its recorded fingerprint (the message names the leaf),
            or the item is not a JSON object of a known format.
    """
    fmt = checksums.get("format") if isinstance(checksums, dict) else None
    if fmt != FORMAT:
        raise StepCorrupt("its checksums item is unreadable or of an unknown format")
    expected = checksums.get("leaves", {})
    for name, value in tree_fingerprints(state).items():
        if name in expected and expected[name] != value:
            raise StepCorrupt(
                f"leaf '{name}' does not match the fingerprint recorded when it was saved "
                f"(the data files were modified or damaged)"
            )
