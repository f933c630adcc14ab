"""One step directory: the orbax items it holds, how they are written and read back checked.

A step ``<directory>/<step>/`` holds the items ``state`` (the pytree, ``StandardSave``),
``metadata`` (the caller's JSON object) and ``checksums`` (leaf fingerprints, see
:mod:`jaxdiff.checkpoint.integrity`). Reading a step raises :class:`StepCorrupt` with the reason
when it is uncommitted, unreadable or fails its fingerprints, and ``ValueError`` when it does
not fit the restore target.
"""

from __future__ import annotations

import warnings
from typing import Any

import orbax.checkpoint as ocp

from jaxdiff.checkpoint import integrity
from jaxdiff.checkpoint.compat import check_compatible
from jaxdiff.checkpoint.errors import StepCorrupt, UnverifiedCheckpointWarning, short

__all__ = ["item_handlers", "read_metadata", "read_state", "save_args"]

STATE = "state"
METADATA = "metadata"
CHECKSUMS = "checksums"


def item_handlers() -> dict[str, ocp.CheckpointHandler]:
    """The orbax handler of each item, for ``CheckpointManager(item_handlers=...)``."""
    return {
        STATE: ocp.StandardCheckpointHandler(),
        METADATA: ocp.JsonCheckpointHandler(),
        CHECKSUMS: ocp.JsonCheckpointHandler(),
    }


def save_args(state: Any, metadata: dict, verify: bool) -> ocp.args.Composite:
    """The ``args`` of ``CheckpointManager.save`` for ``state`` and its JSON ``metadata``; with
    ``verify``, also every leaf's fingerprint (computed now, from the caller's arrays)."""
    args = {STATE: ocp.args.StandardSave(state), METADATA: ocp.args.JsonSave(metadata)}
    if verify:
        args[CHECKSUMS] = ocp.args.JsonSave(integrity.checksums_item(state))
    return ocp.args.Composite(**args)


def read_state(
    mngr: ocp.CheckpointManager, step: int, path, target: Any, verify: bool, where: str
) -> tuple[Any, dict]:
    """Restore ``step`` (in the directory ``path``) into ``target`` after checking it.

    Checks, in order: the commit marker, the tree metadata, that it fits ``target`` (before any
    array is read), that orbax reads every item, and (with ``verify``) every leaf's fingerprint;
    a step without a ``checksums`` item is restored with an :class:`UnverifiedCheckpointWarning`.

    Args:
        mngr: the ``CheckpointManager`` of the directory.
        step: the step number; ``path`` its directory.
        target: the abstract restore target (see :func:`jaxdiff.checkpoint.abstract_state`).
        verify: check the fingerprints.
        where: names the step in messages, e.g. ``"checkpoint step 2 in /runs/a/ckpt"``.

    Returns:
        ``(state, metadata)``; ``metadata`` is ``{}`` for a step saved without it.

    Raises:
        StepCorrupt: the step is uncommitted, unreadable or damaged (the message says why).
        ValueError: the step does not fit ``target`` (names the first leaf that differs).
    """
    integrity.check_committed(path)
    try:
        tree_meta = mngr.item_metadata(step)[STATE]
    except Exception as e:
        raise StepCorrupt(f"its tree metadata ({STATE}/_METADATA) is unreadable: {short(e)}") from e
    if tree_meta is None or getattr(tree_meta, "tree", None) is None:
        raise StepCorrupt(f"its tree metadata ({STATE}/_METADATA) is missing")
    check_compatible(tree_meta.tree, target, where)

    args = {STATE: ocp.args.StandardRestore(target)}
    has_meta = (path / METADATA).exists()
    has_sums = verify and (path / CHECKSUMS).exists()
    if has_meta:
        args[METADATA] = ocp.args.JsonRestore()
    if has_sums:
        args[CHECKSUMS] = ocp.args.JsonRestore()
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(**args))
    except Exception as e:
        raise StepCorrupt(f"reading it failed: {short(e)}") from e
    state = restored[STATE]
    meta = dict(restored[METADATA] or {}) if has_meta else {}
    if has_sums:
        integrity.verify(state, restored[CHECKSUMS])
    elif verify:
        warnings.warn(
            f"{where} has no {CHECKSUMS}/ folder, so its arrays cannot be verified (a flipped "
            "bit would go unnoticed); it was restored unverified",
            UnverifiedCheckpointWarning,
            stacklevel=3,
        )
    return state, meta


def read_metadata(mngr: ocp.CheckpointManager, step: int, path) -> dict:
    """The ``metadata`` item of ``step`` (in the directory ``path``); ``{}`` if it has none.

    Raises:
        StepCorrupt: the step is uncommitted, or its metadata is unreadable or not an object.
    """
    integrity.check_committed(path)
    if not (path / METADATA).exists():
        return {}
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(**{METADATA: ocp.args.JsonRestore()}))
    except Exception as e:
        raise StepCorrupt(f"its {METADATA} item is unreadable: {short(e)}") from e
    meta = restored[METADATA]
    if not isinstance(meta, dict):
        raise StepCorrupt(f"its {METADATA} item is not a JSON object")
    return meta
