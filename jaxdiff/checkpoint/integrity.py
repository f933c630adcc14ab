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
FORMAT = "jaxdiff-splitmix64-sum-v1"


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_CHUNK = 1 << 20  # elements hashed per NumPy pass (bounds the temporaries to a few MiB)
_MOD = 1 << 64


def _splitmix64_(x: np.ndarray) -> np.ndarray:
    # SplitMix64 finaliser, in place: a bijective avalanche mix of uint64 words (wrapping).
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


def _words(block: np.ndarray) -> tuple[np.ndarray, int]:
    """The bits of ``block`` as a flat unsigned vector and the number of words per element
    (32-bit words for 4- and 8-byte dtypes, the raw bytes/halfwords for 1- and 2-byte ones)."""
    a = np.ascontiguousarray(block).reshape(-1)
    size = a.dtype.itemsize
    if size % 4 == 0:
        return a.view(np.uint32), size // 4
    return a.view(np.uint8 if size == 1 else np.uint16), 1


def _partial_hash(block: np.ndarray, starts: tuple[int, ...], shape: tuple[int, ...]) -> int:
    """Sum over the elements of ``block`` (the part of a global array of ``shape`` that starts at
    ``starts``) of ``splitmix64(word + golden * global_word_index)``, modulo 2**64.

    A modular sum of per-position terms: blocks (shards) can be hashed separately and added, so
    the fingerprint does not depend on the sharding. A change to any one word changes exactly one
    term, and the mix is a bijection, so a single corrupted word always changes the sum.
    """
    words, per = _words(block)
    local_shape = block.shape
    n = int(np.prod(local_shape, dtype=np.int64))
    strides = [int(np.prod(shape[k + 1 :], dtype=np.int64)) for k in range(len(shape))]
    whole = tuple(local_shape) == tuple(shape)
    offsets = np.arange(per, dtype=np.uint64)
    total = 0
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        if whole:  # global word positions are simply lo*per .. hi*per-1
            index = np.arange(lo * per, hi * per, dtype=np.uint64)
        else:
            local = np.unravel_index(np.arange(lo, hi, dtype=np.int64), local_shape)
            element = np.zeros(hi - lo, np.uint64)
            for k, (pos, start) in enumerate(zip(local, starts, strict=True)):
                element += (pos + start).astype(np.uint64) * np.uint64(strides[k])
            index = (element[:, None] * np.uint64(per) + offsets).reshape(-1)
        index *= _GOLDEN
        index += words[lo * per : hi * per]
        total += int(np.sum(_splitmix64_(index), dtype=np.uint64))
    return total % _MOD


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
        starts = tuple(a for a, _ in key)
        total += _partial_hash(np.asarray(shard.data), starts, shape)
    return total % _MOD, complete


def tree_fingerprints(tree: Any) -> dict[str, str]:
    """A 64-bit content fingerprint (16 hex digits) of every array leaf of ``tree``, by leaf path.

    The fingerprint of an array of any shape is ``sum_i splitmix64(w_i + phi * i) mod 2**64`` over
    its bits viewed as words ``w_i`` (uint32 for 4/8-byte dtypes, bytes/halfwords for 1/2-byte
    ones; typed PRNG keys via ``key_data``) at global word positions ``i``. It depends on every
    bit and its position and not on the shape split or the sharding, so a state restored with
    other shardings than it was saved with still matches. Computed on the host shard by shard
    (one device-to-host copy of the state, no compilation); in a multi-process run the partial
    sums of arrays no process holds entirely are added with one ``process_allgather``, so every
    process must call this together.

    Args:
        tree: any pytree; ``jax.Array``, NumPy array and Python number leaves are hashed, other
            leaves (strings, ...) are left out.

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
            if arr.dtype.kind in "biufc":  # not object arrays (e.g. ints beyond 64 bits)
                result[name] = _partial_hash(arr, (0,) * arr.ndim, arr.shape)
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


def verify(state: Any, checksums: Any, where: str) -> None:
    """Check a restored ``state`` against the ``checksums`` item saved with it.

    Args:
        state: the restored pytree.
        checksums: the restored ``checksums`` item (see :func:`checksums_item`).
        where: names the step in a warning, e.g. ``"checkpoint step 2 in /runs/a/ckpt"``.

    Raises:
        StepCorrupt: a leaf differs from its recorded fingerprint (the message names the leaf),
            or the item is not a JSON object of a known format.
    """
    if not isinstance(checksums, dict) or checksums.get("format") != FORMAT:
        raise StepCorrupt("its checksums item is unreadable or of an unknown format")
    expected = checksums.get("leaves", {})
    for name, value in tree_fingerprints(state).items():
        if name in expected and expected[name] != value:
            raise StepCorrupt(
                f"leaf '{name}' does not match the fingerprint recorded when it was saved "
                f"(the data files were modified or damaged)"
            )
