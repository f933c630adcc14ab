"""Pytree helpers of the checkpoint modules: leaf names and abstract restore targets."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["abstract_state", "is_prng_key", "leaves_by_name", "path_str"]


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SequenceKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_str(path) -> str:
    """A key path (from ``jax.tree_util.tree_flatten_with_path``) as ``"params/w"``.

    The same string for a NamedTuple field, a dict key or the ``.value`` of an ``nnx.Variable``,
    matching the nested dicts of orbax's tree metadata; ``"<root>"`` for a bare leaf.
    """
    return "/".join(_key_name(k) for k in path) or "<root>"


def leaves_by_name(tree: Any) -> list[tuple[str, Any]]:
    """``[(path_str, leaf), ...]`` for every leaf of ``tree``, in flattening order."""
    return [(path_str(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def is_prng_key(dtype) -> bool:
    """Whether ``dtype`` is a typed PRNG key dtype (``jax.random.key(0).dtype``)."""
    return jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _default_sharding() -> NamedSharding:
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    return NamedSharding(mesh, PartitionSpec())


def abstract_state(state_like: Any) -> Any:
    """The restore target for ``state_like``: its tree with every array leaf replaced by a
    ``jax.ShapeDtypeStruct`` of the same shape, dtype and sharding.

    Args:
        state_like: a concrete state (its arrays are not read, only their shape, dtype and
            ``.sharding``; deleted/donated arrays are fine) or an abstract one, e.g.
            ``jax.eval_shape(init_state, key)`` or ``nnx.eval_shape(...)`` followed by
            ``nnx.split``. A ``ShapeDtypeStruct`` without a sharding gets a replicated
            ``NamedSharding`` over all devices (mesh axis ``data``), the placement jaxdiff uses
            for parameters; give explicit shardings for anything sharded.

    Returns:
        The same tree with ``ShapeDtypeStruct`` leaves (typed PRNG keys keep their key dtype).
        NumPy arrays become unsharded ``ShapeDtypeStruct`` (orbax restores them as NumPy) and
        Python scalars are kept as they are.
    """
    default = None

    def leaf(x):
        nonlocal default
        if isinstance(x, jax.Array | jax.ShapeDtypeStruct):
            sharding = getattr(x, "sharding", None)
            if sharding is None:
                default = default or _default_sharding()
                sharding = default
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
        if isinstance(x, np.ndarray | np.generic):
            return jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)
        return x

    return jax.tree.map(leaf, state_like)
