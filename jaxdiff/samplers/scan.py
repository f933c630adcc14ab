"""The compiled loop of the samplers: ``lax.scan`` over a plan, in chunks of batch and steps.

:func:`run_chunks` runs a laid-out plan (:mod:`jaxdiff.samplers.plan`) for a validated set of
options (:mod:`jaxdiff.samplers.options`): per batch chunk, a Python loop over compiled scans of
``steps_per_call`` network evaluations (or one scan), each scan step evaluating the network
(guided and clipped, :mod:`jaxdiff.samplers.guidance`), taking the solver's step, putting known
pixels back (:mod:`jaxdiff.samplers.repaint`) and writing the trajectory. With a mesh, every
chunk is split over its ``"data"`` axis and each device runs the same loop on its examples
(:class:`_PerDevice`, ``jax.shard_map``). Compiled functions are cached by their static
configuration (model function, solver, shapes, flags, mesh); the loop compiles with
:mod:`jaxdiff.xla_options` (on CPU: XLA's own kernels instead of YNNPACK's).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from jaxdiff.samplers.base import Solver
from jaxdiff.samplers.guidance import check_output, classifier_free_guidance, to_eps_and_x0
from jaxdiff.samplers.objective_run import objective_denoise
from jaxdiff.samplers.repaint import renoise, replace_known
from jaxdiff.sharding import DATA_AXIS, batch_sharding, place, replicated_sharding
from jaxdiff.xla_options import jit as xla_jit

__all__ = ["SampleResult", "run_chunks"]


class SampleResult(NamedTuple):
    """What :func:`jaxdiff.samplers.sample` returns.

    Attributes:
      samples: ``shape`` array, the final samples (the clean x0, or x at t = 0 for the solvers
        that stop there, see :func:`jaxdiff.samplers.step_sequence`).
      trajectory: ``(len(record), *shape)`` array; entry ``j`` is the state after step
        ``record[j]`` of the step sequence. ``(0, *shape)`` when nothing is recorded.
    """

    samples: jax.Array
    trajectory: jax.Array


@dataclasses.dataclass(frozen=True)
class _Config:
    """Everything static about one compiled sampling loop (hashable: the jit cache key)."""

    apply: Callable
    solver: Solver
    chunk_shape: tuple[int, ...]
    dtype: Any
    prediction: str
    clip_x0: float | None
    guided: bool
    conditional: bool
    num_classes: int | None
    inpaint: bool
    jumps: bool
    num_records: int
    unroll: int | bool
    objective: Any = None


class _Carry(NamedTuple):
    x: jax.Array
    state: tuple[jax.Array, ...]  # the solver's state
    trajectory: jax.Array


def _keys(key, offset, b: int, num_ops: int):
    """``(num_ops, b)`` keys: entry ``[j, i]`` is ``fold_in(fold_in(key, offset + i), j)``.

    Row 0 seeds the initial draws, row ``j >= 1`` scan step ``j``. Derived once, outside the
    loop, so that each step body holds a single threefry hash (its normal draw): XLA:CPU
    compile time grows with every inlined hash, and the unrolled CPU loop repeats the body.
    ``num_ops`` is rounded up to a power of two by the caller so that few sizes get compiled.
    """
    ex_keys = jax.vmap(lambda n: jax.random.fold_in(key, n))(
        offset + jnp.arange(b, dtype=jnp.int32)
    )
    # One flat vmap over all (op, example) pairs: XLA:CPU compiles 1-D threefry much faster.
    ops = jnp.repeat(jnp.arange(num_ops, dtype=jnp.int32), b)
    flat = jax.vmap(jax.random.fold_in)(jnp.tile(ex_keys, num_ops), ops)
    return flat.reshape(num_ops, b)


_step_keys = jax.jit(_keys, static_argnums=(2, 3))


def _normals(keys, count: int, shape, dtype) -> list[jax.Array]:
    """``count`` arrays ``(b, *shape)`` of standard normals, example ``n`` from ``keys[n]``.

    All purposes of one step (step noise, re-noised known pixels, resampling jumps) come from
    one flat draw of ``count * prod(shape)`` values per example, reshaped (XLA:CPU compiled a
    flat threefry draw 3-4x faster than one of an N-d shape, measured with jax 0.10.2).
    """
    if count == 0:
        return []
    size = count * math.prod(shape)
    z = jax.vmap(lambda k: jax.random.normal(k, (size,), dtype))(keys)
    z = z.reshape(keys.shape[0], count, *shape)
    return [z[:, i] for i in range(count)]


def _init_carry_body(static, keys, x_T, alpha0, sigma0, mask, known, x_std=None) -> _Carry:
    chunk_shape, dtype, inpaint, state_size, num_records = static
    draws = _normals(keys, int(x_T is None) + int(inpaint), chunk_shape[1:], dtype)
    if x_T is None:
        x_T = draws.pop(0)
        if x_std is not None:  # a path's prior std (Plan.prior_std)
            x_T = x_std * x_T
    x = x_T.astype(dtype)
    if inpaint:
        # RePaint: the known region is q(x_t | known) at every step, including the first.
        x = jnp.where(mask, alpha0 * known + sigma0 * draws.pop(0), x)
    state = tuple(jnp.zeros_like(x) for _ in range(state_size))
    return _Carry(x, state, jnp.zeros((num_records, *chunk_shape), dtype))


# Compiled per (shape, dtype, inpainting, state size, records) only, so that solvers and models
# that share a batch shape share this compile (threefry is slow to compile).
_init_carry = jax.jit(_init_carry_body, static_argnums=0)


def _denoise(cfg: _Config, params, x, op, labels, w):
    """The network at ``(x, op["t_eval"])`` -> ``(eps, x0)``, guided and clipped as asked."""
    if cfg.objective is not None:
        eps, x0 = objective_denoise(cfg.objective, cfg.apply, params, x, op["t_eval"], labels, w,
                                    guided=cfg.guided, conditional=cfg.conditional,
                                    num_classes=cfg.num_classes)  # fmt: skip
        if cfg.clip_x0 is not None:  # as to_eps_and_x0: clip x0, eps recomputed from it
            x0 = jnp.clip(x0, -cfg.clip_x0, cfg.clip_x0)
            eps = (x - op["alpha_eval"] * x0) / op["sigma_eval"]
        return eps, x0
    tb = jnp.full((x.shape[0],), op["t_eval"], jnp.int32)
    if cfg.guided:
        out = classifier_free_guidance(cfg.apply, cfg.num_classes)(params, x, tb, labels, w)
    elif cfg.conditional:
        out = cfg.apply(params, x, tb, labels)
    else:
        out = cfg.apply(params, x, tb)
    check_output(out, x.shape)
    return to_eps_and_x0(out.astype(x.dtype), x, op["alpha_eval"], op["sigma_eval"],
                         cfg.prediction, cfg.clip_x0)  # fmt: skip


def _run_ops(cfg: _Config, mesh: Mesh | None, *args):
    """:func:`_run_ops_body` compiled for the default backend (:mod:`jaxdiff.xla_options`), on
    one device or split over ``mesh`` (see :class:`_PerDevice`)."""
    return _run_ops_compiled(jax.default_backend(), mesh)(cfg, *args)


@functools.cache
def _run_ops_compiled(platform: str, mesh: Mesh | None):
    body = _run_ops_body if mesh is None else _PerDevice(mesh).run_ops
    return xla_jit(body, platform=platform, static_argnums=0)


# Partition specs of the per-device loop: the example axis of every batch-shaped array is split
# over the mesh's "data" axis; the plan, the parameters and the guidance weight are replicated.
_EX = PartitionSpec(DATA_AXIS)  # (b, ...): labels, mask, known, x and the solver's state
_ROWS_EX = PartitionSpec(None, DATA_AXIS)  # (rows, b, ...): keys, the trajectory
_REP = PartitionSpec()
_CARRY = _Carry(_EX, _EX, _ROWS_EX)


@dataclasses.dataclass(frozen=True)
class _PerDevice:
    """The loop's functions split over ``mesh``'s ``"data"`` axis with ``jax.shard_map``.

    Every computation of the sampler is per example (the network, the solver step, the draws
    from per-example keys), so each device runs the single-device body on its ``b / n``
    examples, with the same keys as in an unsplit run, and the devices never communicate.
    Shapes given as ``static`` / ``cfg`` are the whole chunk's; the bodies see their share.
    """

    mesh: Mesh

    def _local(self, chunk_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (chunk_shape[0] // self.mesh.shape[DATA_AXIS], *chunk_shape[1:])

    def _map(self, fun, in_specs, out_specs):
        return jax.shard_map(fun, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs,
                             check_vma=False)  # fmt: skip

    def step_keys(self, key, offset, b: int, num_ops: int):
        b_local = b // self.mesh.shape[DATA_AXIS]

        def local(key, offset):
            start = offset + jax.lax.axis_index(DATA_AXIS).astype(jnp.int32) * b_local
            return _keys(key, start, b_local, num_ops)

        return self._map(local, (_REP, _REP), _ROWS_EX)(key, offset)

    def init_carry(self, static, keys, x_T, alpha0, sigma0, mask, known, x_std=None) -> _Carry:
        local_static = (self._local(static[0]), *static[1:])
        fun = functools.partial(_init_carry_body, local_static)
        specs = (_EX, _EX, _REP, _REP, _EX, _EX, _REP)
        return self._map(fun, specs, _CARRY)(keys, x_T, alpha0, sigma0, mask, known, x_std)

    def run_ops(self, cfg: _Config, params, ops, coefs, carry, keys, labels, mask, known, w):
        local_cfg = dataclasses.replace(cfg, chunk_shape=self._local(cfg.chunk_shape))
        fun = functools.partial(_run_ops_body, local_cfg)
        specs = (_REP, _REP, _REP, _CARRY, _ROWS_EX, _EX, _EX, _EX, _REP)
        return self._map(fun, specs, _CARRY)(
            params, ops, coefs, carry, keys, labels, mask, known, w
        )


@functools.cache
def _per_device_fns(mesh: Mesh):
    """The compiled key derivation and initial state on ``mesh`` (cached per mesh)."""
    per = _PerDevice(mesh)
    return (
        jax.jit(per.step_keys, static_argnums=(2, 3)),
        jax.jit(per.init_carry, static_argnums=0),
    )


def _run_ops_body(cfg: _Config, params, ops, coefs, carry, keys, labels, mask, known, w):
    ex_shape = cfg.chunk_shape[1:]
    solver = cfg.solver
    num_draws = int(solver.stochastic) + int(cfg.inpaint) + int(cfg.jumps)

    def body(carry: _Carry, xs):
        op, c, step_keys = xs
        x = carry.x
        draws = _normals(step_keys, num_draws, ex_shape, cfg.dtype)
        z_step = draws.pop(0) if solver.stochastic else None
        z_known = draws.pop(0) if cfg.inpaint else None
        if cfg.jumps:
            x = renoise(x, op["jump_scale"], op["jump_std"], draws.pop(0), op["jump"])
        eps, x0 = _denoise(cfg, params, x, op, labels, w)
        x_new, state = solver.step(carry.state, x, eps, x0, c, z_step)
        if cfg.inpaint:
            x_new = replace_known(x_new, mask, known, op["alpha_next"], op["sigma_next"],
                                  z_known, op["paste"])  # fmt: skip
        x_new = x_new.astype(cfg.dtype)
        state = tuple(s.astype(cfg.dtype) for s in state)
        traj = carry.trajectory
        if cfg.num_records:
            slot = op["slot"]
            at = jnp.maximum(slot, 0)
            value = jnp.where(slot >= 0, x_new, traj[at])
            traj = jax.lax.dynamic_update_index_in_dim(traj, value, at, 0)
        return _Carry(x_new, state, traj), None

    carry, _ = jax.lax.scan(body, carry, (ops, coefs, keys), unroll=cfg.unroll)
    return carry


def run_chunks(apply, opts, arrays, params, plan, ops, coefs, dtype) -> SampleResult:
    """Run ``plan`` over the batch in chunks (arguments validated and laid out by
    :func:`jaxdiff.samplers.sample`; ``ops`` and ``coefs`` are the plan's arrays on device)."""
    batch = opts.shape[0]
    mesh = opts.mesh
    b = batch if opts.chunk_size is None else min(opts.chunk_size, batch)
    if mesh is not None:  # every device gets the same number of examples
        n = mesh.shape[DATA_AXIS]
        b = -(-b // n) * n
    num_chunks = -(-batch // b)
    padded = num_chunks * b

    def pad(a):
        if a is None or padded == batch:
            return a
        return jnp.concatenate([a, jnp.zeros((padded - batch, *a.shape[1:]), a.dtype)])

    labels, mask, known, x_T = (pad(a) for a in arrays[:4])
    if known is not None:
        known = known.astype(dtype)
    solver = opts.solver
    cfg = _Config(
        apply=apply,
        solver=solver.for_compile(),
        chunk_shape=(b, *opts.shape[1:]),
        dtype=dtype,
        prediction=solver.prediction,
        clip_x0=solver.clip_x0,
        guided=opts.guidance_scale != 0.0,
        conditional=opts.num_classes is not None,
        num_classes=opts.num_classes,
        inpaint=mask is not None,
        jumps=opts.resample_jumps > 0 or bool(np.any(plan.ops["jump"])),  # or EDM's churn
        num_records=len(opts.record),
        unroll=opts.unroll,
        objective=opts.objective,
    )
    if cfg.conditional and labels is None:
        labels = jnp.full((padded,), opts.num_classes, jnp.int32)
    w = jnp.asarray(opts.guidance_scale, dtype)
    L = len(plan)
    seg = L if opts.steps_per_call is None else opts.steps_per_call
    bounds = [(s, min(s + seg, L)) for s in range(0, L, seg)]
    noisy = solver.stochastic or cfg.inpaint or cfg.jumps
    needs_keys = x_T is None or noisy
    segments = [
        ({k: v[s:e] for k, v in ops.items()}, {k: v[s:e] for k, v in coefs.items()})
        for s, e in bounds
    ]
    state_size = len(jax.eval_shape(solver.init, jax.ShapeDtypeStruct(cfg.chunk_shape, dtype)))
    static = (cfg.chunk_shape, dtype, cfg.inpaint, state_size, cfg.num_records)
    alpha0, sigma0 = ops["alpha_eval"][0], ops["sigma_eval"][0]
    x_std = None if plan.prior_std is None else jnp.asarray(plan.prior_std, dtype)
    key = arrays.key
    step_keys, init_carry = _step_keys, _init_carry
    if mesh is not None:
        # Whole values in every process -> global arrays on the mesh: the batch-shaped ones split
        # over "data", the rest replicated (keys travel as their raw uint32 data).
        rep = replicated_sharding(mesh)
        params, segments, w, alpha0, sigma0, x_std = place(
            (params, segments, w, alpha0, sigma0, x_std), rep
        )
        key = jax.random.wrap_key_data(place(jax.random.key_data(key), rep))
        step_keys, init_carry = _per_device_fns(mesh)

    def part(a, c):
        if a is None:
            return None
        a = a[c * b : (c + 1) * b]
        return a if mesh is None else place(a, batch_sharding(mesh))

    samples, trajs = [], []
    for c in range(num_chunks):
        keys = None
        if needs_keys:
            rows = 1 << L.bit_length() if noisy else 1  # 1: x_T only
            keys = step_keys(key, np.int32(c * b), b, rows)
        c_labels, c_mask, c_known = part(labels, c), part(mask, c), part(known, c)
        init_args = (static, None if keys is None else keys[0], part(x_T, c), alpha0, sigma0,
                     c_mask, c_known)  # fmt: skip
        if plan.prior_std is not None and plan.prior_std != 1.0:
            init_args = (*init_args, x_std)
        carry = init_carry(*init_args)
        for (s, e), (seg_ops, seg_coefs) in zip(bounds, segments, strict=True):
            carry = _run_ops(
                cfg,
                mesh,
                params,
                seg_ops,
                seg_coefs,
                carry,
                None if keys is None or len(keys) == 1 else keys[1 + s : 1 + e],
                c_labels,
                c_mask,
                c_known,
                w,
            )
        samples.append(carry.x)
        trajs.append(carry.trajectory)
    if num_chunks == 1:
        x, traj = samples[0], trajs[0]
    else:
        x, traj = jnp.concatenate(samples), jnp.concatenate(trajs, axis=1)
    if padded == batch:
        return SampleResult(x, traj)
    return SampleResult(x[:batch], traj[:, :batch])
