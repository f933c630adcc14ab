"""The compiled, sharded driver: :class:`Trainer` wires the pure step of
:mod:`jaxdiff.train.step` into ``jax.jit`` with ``NamedSharding`` in/out shardings over the
``"data"`` mesh (:mod:`jaxdiff.sharding`), donating the state, compiled with the XLA options of
:mod:`jaxdiff.xla_options` (on CPU: XLA's own kernels instead of YNNPACK's)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from jaxdiff.schedules import Schedule
from jaxdiff.sharding import (
    batch_sharding,
    check_batch_size,
    make_mesh,
    replicate,
    replicated_sharding,
    shard_batch,
)
from jaxdiff.train.config import TrainConfig, scan_options
from jaxdiff.train.state import PyTree, TrainState, init_train_state, make_optimizer
from jaxdiff.train.step import (
    Batch,
    LossFn,
    Metrics,
    check_k,
    make_data_multi_step,
    make_multi_step,
    make_train_step,
)
from jaxdiff.xla_options import jit as _jit

__all__ = ["Trainer"]


class Trainer:
    """Compiled, data-parallel training: the pure step under ``jax.jit`` with shardings.

    The state is replicated over the mesh and donated at every call (do not reuse a state
    after passing it in); batches are sharded over ``"data"``. Three entry points share one
    pure step and give identical results for the same steps:

    - :meth:`step`: one step on one batch ``{"x": (B, ...), "labels": (B,)}``;
    - :meth:`steps`: K steps on a stack ``{"x": (K, B, ...), ...}`` (host streaming);
    - :meth:`steps_on_data`: K steps on a dataset put on the devices once with
      :meth:`put_data` (batch indices drawn on the device; no host work per step).

    Host arrays passed in are this process's slice of the global batch (the whole batch in a
    single-process run); arrays already sharded (from :meth:`put_batch`) pass through.

    Args:
      apply, schedule, config, loss: as for :func:`make_train_step`.
      mesh: a mesh with axis ``"data"`` (default: all devices, :func:`jaxdiff.sharding.make_mesh`).
    """

    def __init__(
        self,
        apply: Callable[..., jax.Array],
        schedule: Schedule,
        config: TrainConfig = TrainConfig(),
        *,
        mesh: Mesh | None = None,
        loss: LossFn | None = None,
    ):
        self.config = config
        self.mesh = make_mesh() if mesh is None else mesh
        self.tx = make_optimizer(config)
        self.train_step = make_train_step(apply, schedule, config, self.tx, loss=loss)
        self.platform = self.mesh.devices.flat[0].platform
        self.steps_per_call, self.unroll, self.batch_draw = scan_options(config, self.platform)
        rep = replicated_sharding(self.mesh)
        self._replicated = rep
        self._step = _jit(  # with jaxdiff.xla_options' options for the platform
            self.train_step,
            platform=self.platform,
            in_shardings=(rep, batch_sharding(self.mesh)),
            out_shardings=(rep, rep),
            donate_argnums=0,
        )
        self._steps = _jit(
            make_multi_step(self.train_step, unroll=self.unroll),
            platform=self.platform,
            in_shardings=(rep, batch_sharding(self.mesh, stacked=True)),
            out_shardings=(rep, rep),
            donate_argnums=0,
        )
        self._data_steps: dict[tuple[int, int], Callable] = {}

    @property
    def num_devices(self) -> int:
        """Devices in the mesh (over all processes)."""
        return int(self.mesh.devices.size)

    def init_state(self, params: PyTree, key: jax.Array | int) -> TrainState:
        """A fresh state (:func:`init_train_state`) replicated over the mesh."""
        return replicate(init_train_state(params, self.tx, key), self.mesh)

    def put_batch(self, batch: Batch, *, stacked: bool = False) -> Batch:
        """Shard a host batch (this process's slice) over ``"data"``; see ``shard_batch``."""
        return shard_batch(dict(batch), self.mesh, stacked=stacked)

    def put_data(self, data: Batch) -> Batch:
        """Replicate a whole dataset ``{"x": (N, ...), "labels": (N,)}`` on every device.

        Host (NumPy) arrays are checked; arrays already on the device pass as they are.

        Raises:
          TypeError: ``data`` is not a dict with an ``"x"`` entry.
          ValueError: ``x`` holds NaN or inf (a dataset with one bad value would turn every
            later step's loss into NaN), or ``labels`` is not a 1-D integer array of length N.
        """
        if not isinstance(data, Mapping) or "x" not in data:
            raise TypeError("data must be a dict with 'x' and optionally 'labels'.")
        x = data["x"]
        if not isinstance(x, jax.Array) and np.issubdtype(np.asarray(x).dtype, np.floating):
            bad = ~np.isfinite(np.asarray(x))
            if bad.any():
                first = int(np.argwhere(bad)[0][0])
                raise ValueError(
                    f"training data x contains {int(bad.sum())} non-finite value(s) (NaN or inf), "
                    f"the first in example {first}; clean or drop those examples before training."
                )
        if data.get("labels") is not None and not isinstance(data["labels"], jax.Array):
            labels = np.asarray(data["labels"])
            n = int(np.shape(x)[0])
            if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(
                    f"labels must be an integer array of shape ({n},) (one per example); got "
                    f"dtype {labels.dtype} and shape {labels.shape}."
                )
        return replicate(dict(data), self.mesh)

    def _prepare(self, batch: Batch, *, stacked: bool) -> Batch:
        if not isinstance(batch, Mapping) or "x" not in batch:
            raise TypeError("batch must be a dict with 'x' and optionally 'labels'.")
        batch = dict(batch)
        leaves = jax.tree_util.tree_leaves(batch)
        if all(isinstance(leaf, jax.Array) for leaf in leaves):
            axis = 1 if stacked else 0
            check_batch_size(int(batch["x"].shape[axis]), self.mesh)
            return batch
        return self.put_batch(batch, stacked=stacked)

    def step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        """One training step; returns the new state and scalar metrics."""
        return self._step(state, self._prepare(batch, stacked=False))

    def steps(self, state: TrainState, batches: Batch) -> tuple[TrainState, Metrics]:
        """K steps in one compiled call; ``batches`` leaves ``(K, B, ...)``, metrics ``(K,)``."""
        return self._steps(state, self._prepare(batches, stacked=True))

    def steps_on_data(
        self, state: TrainState, data: Batch, batch_size: int, k: int | None = None
    ) -> tuple[TrainState, Metrics]:
        """K steps (default ``steps_per_call``) with batches of ``batch_size`` drawn on the device
        from ``data`` (put it there once with :meth:`put_data`); metrics ``(K,)``."""
        k = check_k(self.steps_per_call if k is None else k)
        check_batch_size(int(batch_size), self.mesh)
        if not all(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(data)):
            raise TypeError(
                "steps_on_data needs the dataset on the devices; put it there once with "
                "data = trainer.put_data({'x': x, 'labels': labels}) and pass that (host arrays "
                "would be copied to the devices at every call)."
            )
        fn = self._data_steps.get((int(batch_size), k))
        if fn is None:
            fn = _jit(
                make_data_multi_step(
                    self.train_step,
                    int(batch_size),
                    k,
                    unroll=self.unroll,
                    sharding=batch_sharding(self.mesh),
                    batch_draw=self.batch_draw,
                ),
                platform=self.platform,
                in_shardings=(self._replicated, self._replicated),
                out_shardings=(self._replicated, self._replicated),
                donate_argnums=0,
            )
            self._data_steps[(int(batch_size), k)] = fn
        return fn(state, data)
