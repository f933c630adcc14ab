"""Does a saved step fit the restore target? The first leaf that differs, named in the error.

Orbax would fail deep inside tensorstore (or silently broadcast) when a checkpoint of another
model configuration is restored; :func:`check_compatible` compares the saved tree metadata with
the target before any array is read.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxdiff.checkpoint.trees import is_prng_key, leaves_by_name

__all__ = ["check_compatible"]

_FIX = (
    "The checkpoint was written for a different model/optimizer configuration: restore with "
    "the configuration it was saved with (see Checkpointer.read_metadata()) or use a new "
    "checkpoint directory"
)


def _target_signature(leaf) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) that orbax records for a target leaf; typed keys are stored as key_data.
    ``None`` for Python scalars and other leaves, whose presence alone is checked."""
    if isinstance(leaf, jax.ShapeDtypeStruct | jax.Array):
        if is_prng_key(leaf.dtype):
            data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
            return tuple(data.shape), np.dtype(data.dtype)
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    if isinstance(leaf, np.ndarray | np.generic):
        return tuple(np.shape(leaf)), np.asarray(leaf).dtype
    return None


def _describe(sig) -> str:
    return "a non-array value" if sig is None else f"shape {sig[0]} {sig[1]}"


def check_compatible(saved_tree: Any, target: Any, where: str) -> None:
    """Raise ``ValueError`` at the first leaf where the saved tree and ``target`` disagree.

    Args:
        saved_tree: the ``.tree`` of orbax's item metadata for the saved state (nested dicts of
            ``ArrayMetadata``/``ScalarMetadata``).
        target: the restore target (see :func:`jaxdiff.checkpoint.abstract_state`).
        where: names the step in the message, e.g. ``"checkpoint step 2 in /runs/a/ckpt"``.

    Raises:
        ValueError: a leaf is missing on one side, or its shape or dtype differs; the message
            names the leaf path (``'params/dense/w'``), both shapes/dtypes and how to fix it.
    """
    saved = dict(leaves_by_name(saved_tree))
    target_names = set()
    for name, leaf in leaves_by_name(target):
        target_names.add(name)
        want = _target_signature(leaf)
        if name not in saved:
            raise ValueError(
                f"{where} does not match the restore target: leaf '{name}' ({_describe(want)}) "
                f"is in the target but not in the checkpoint. {_FIX}"
            )
        meta = saved[name]
        shape, dtype = getattr(meta, "shape", None), getattr(meta, "dtype", None)
        if want is None or shape is None:
            continue
        have = (tuple(shape), np.dtype(dtype) if dtype is not None else None)
        # Python scalars are recorded as ScalarMetadata with a 64-bit dtype: compare shape only.
        check_dtype = isinstance(meta, ocp.metadata.ArrayMetadata) and have[1] is not None
        if have[0] != want[0] or (check_dtype and have[1] != want[1]):
            raise ValueError(
                f"{where} does not match the restore target at leaf '{name}': the checkpoint "
                f"has shape {have[0]} {have[1]}, the target has shape {want[0]} {want[1]}. {_FIX}"
            )
    for name, meta in saved.items():
        if name not in target_names:
            sig = (tuple(meta.shape), meta.dtype) if hasattr(meta, "shape") else None
            raise ValueError(
                f"{where} does not match the restore target: leaf '{name}' ({_describe(sig)}) "
                f"is in the checkpoint but not in the target. {_FIX}"
            )
