"""The sampler's option groups, each a frozen dataclass that checks itself when made.

- :class:`Guidance`: class labels and classifier-free guidance;
- :class:`Inpaint`: RePaint inpainting (mask, known image, resampling jumps);
- :class:`Loop`: how the compiled loop is laid out (batch chunks, steps per call, unroll).

The solver's own options are fields of the solver object (:mod:`jaxdiff.samplers.base`).
:func:`validate` checks what depends on several groups at once (the batch size, the number of
steps) and returns one :class:`SamplerOptions` and the arrays, or raises a ``ValueError`` /
``TypeError`` that names the argument and the fix, before anything is traced.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxdiff.samplers.base import Solver, check_float, check_int
from jaxdiff.samplers.loop_options import default_loop_options
from jaxdiff.samplers.objective_run import check_objective, run_dtype, steps_bound
from jaxdiff.samplers.registry import make_solver
from jaxdiff.schedules import Schedule
from jaxdiff.sharding import DATA_AXIS

__all__ = ["Guidance", "Inpaint", "Loop", "SamplerArrays", "SamplerOptions", "validate"]


def _positive_int_or_none(value, name):
    if value is None:
        return None
    value = check_int(value, name)
    if value < 1:
        raise ValueError(f"{name} must be >= 1 (or None), got {value}")
    return value


@dataclasses.dataclass(frozen=True, eq=False)
class Guidance:
    """A class-conditional model's labels and classifier-free guidance.

    Args:
      scale: guidance weight w (Ho & Salimans 2022): ``eps = eps_cond + w (eps_cond -
        eps_uncond)``; 0 is plain conditional sampling (one model call per step); w != 0
        evaluates conditional and null labels in one batched call of ``2b`` examples. (In the
        ``eps_uncond + s (eps_cond - eps_uncond)`` convention, ``s = 1 + w``.)
      labels: ``(B,)`` int class indices in ``[0, num_classes]`` (``num_classes`` is the null,
        unconditional label); needed when ``scale != 0``. None with ``num_classes`` set: the
        model is called with the null label.
      num_classes: the conditional model's number of classes K (its null label index).
    """

    scale: float = 0.0
    labels: Any = None
    num_classes: int | None = None

    def __post_init__(self) -> None:
        scale = check_float(self.scale, "guidance_scale")
        object.__setattr__(self, "scale", scale)
        num_classes = self.num_classes
        if num_classes is not None:
            num_classes = check_int(num_classes, "num_classes")
            if num_classes < 1:
                raise ValueError(f"num_classes must be >= 1 (or None), got {num_classes}")
            object.__setattr__(self, "num_classes", num_classes)
        if scale != 0.0:
            if num_classes is None:
                raise ValueError(
                    f"guidance_scale={scale} needs a class-conditional model: pass "
                    "num_classes=K (the null label index K is used for the unconditional "
                    "half); use guidance_scale=0.0 for an unconditional model"
                )
            if self.labels is None:
                raise ValueError(
                    f"guidance_scale={scale} needs labels: pass labels=(B,) int class "
                    f"indices in [0, {num_classes}) to guide towards"
                )
        if self.labels is None:
            return
        if num_classes is None:
            raise ValueError(
                "labels were given but num_classes is None: pass num_classes=K for a "
                "class-conditional model (labels in [0, K], K = the null label)"
            )
        arr = np.asarray(self.labels)
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"labels must be integer class indices, got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"labels must have shape (B,), got shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() > num_classes):
            raise ValueError(
                f"labels must lie in [0, {num_classes}] (classes 0..{num_classes - 1}, "
                f"{num_classes} = the null label), got values in [{arr.min()}, {arr.max()}]"
            )
        object.__setattr__(self, "labels", jnp.asarray(arr, jnp.int32))


@dataclasses.dataclass(frozen=True, eq=False)
class Inpaint:
    """RePaint inpainting (Lugmayr et al. 2022), composed with any solver.

    Args:
      mask: sample-shaped array, 1 (or True) = known pixel, 0 = to be generated.
      known: sample-shaped float image whose known pixels are kept: after every network
        evaluation they are replaced by a draw of ``q(x_t | known)`` at the step's target,
        and after the last step by ``known`` itself, so they equal ``known`` bit for bit.
      resample_jumps: RePaint resampling: after every ``jump_length`` steps, re-noise back
        ``jump_length`` steps with ``q(x_t | x_t')`` and redo them, this many times
        (RePaint's ``U = resample_jumps + 1``); 0 = plain replacement.
      jump_length: RePaint's jump length ``j`` (in solver steps; at most the steps).
    """

    mask: Any
    known: Any
    resample_jumps: int = 0
    jump_length: int = 1

    def __post_init__(self) -> None:
        resample_jumps = check_int(self.resample_jumps, "resample_jumps")
        jump_length = check_int(self.jump_length, "jump_length")
        if resample_jumps < 0:
            raise ValueError(
                f"resample_jumps must be >= 0 (0 = no resampling), got {resample_jumps}"
            )
        if jump_length < 1:
            raise ValueError(f"jump_length must be >= 1, got jump_length={jump_length}")
        if self.mask is None or self.known is None:
            raise ValueError(
                "inpainting needs both mask (1 = known pixel) and known (the image); got only "
                f"{'mask' if self.known is None else 'known'}"
            )
        mask_shape, known_shape = np.shape(self.mask), np.shape(self.known)
        if mask_shape != known_shape:
            raise ValueError(
                f"mask and known must have the same shape, got mask {mask_shape} and known "
                f"{known_shape}"
            )
        m = np.asarray(self.mask)
        if m.dtype != np.bool_:
            if not np.all((m == 0) | (m == 1)):
                bad = m[(m != 0) & (m != 1)].ravel()[0]
                raise ValueError(f"mask must hold 0 (unknown) or 1 (known) values, got {bad}")
            m = m.astype(np.bool_)
        k = jnp.asarray(self.known)
        if not jnp.issubdtype(k.dtype, jnp.floating):
            raise TypeError(f"known must be a floating-point image, got dtype {k.dtype}")
        for name, value in (
            ("mask", jnp.asarray(m)),
            ("known", k),
            ("resample_jumps", resample_jumps),
            ("jump_length", jump_length),
        ):
            object.__setattr__(self, name, value)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Loop:
    """How :func:`jaxdiff.samplers.sample` lays out its compiled loop; the samples do not
    depend on it (up to float rounding for other chunk sizes).

    Args:
      chunk_size: split the batch into chunks of this many samples (the last one padded), one
        compiled call each, to bound memory; None: one chunk.
      steps_per_call: ``None`` compiles the whole loop into one ``lax.scan``; ``k`` runs a
        Python loop over compiled scans of ``k`` network evaluations (``1``: a Python loop over
        a jitted step); ``"auto"`` (default): :func:`jaxdiff.samplers.default_loop_options` of
        the backend (CPU: 4).
      unroll: ``lax.scan`` unroll factor (``True``: fully unrolled, no device loop); None: the
        backend's default when ``steps_per_call`` is ``"auto"``, else ``True`` for chunked
        scans on CPU and 1 otherwise.
    """

    chunk_size: int | None = None
    steps_per_call: int | str | None = "auto"
    unroll: int | bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunk_size", _positive_int_or_none(self.chunk_size,
                                                                     "chunk_size"))  # fmt: skip
        if isinstance(self.steps_per_call, str):
            if self.steps_per_call != "auto":
                raise ValueError(
                    f"steps_per_call must be 'auto', None (one scan) or an int >= 1, "
                    f"got {self.steps_per_call!r}"
                )
        else:
            value = _positive_int_or_none(self.steps_per_call, "steps_per_call")
            object.__setattr__(self, "steps_per_call", value)
        if self.unroll is not None and not isinstance(self.unroll, bool):
            unroll = check_int(self.unroll, "unroll")
            if unroll < 1:
                raise ValueError(f"unroll must be >= 1 (or a bool), got {unroll}")
            object.__setattr__(self, "unroll", unroll)

    def resolve(self) -> tuple[int | None, int | bool]:
        """``(steps_per_call, unroll)`` on the default backend, "auto" and None resolved."""
        if self.steps_per_call == "auto":
            steps_per_call, default_unroll = default_loop_options()
        else:
            steps_per_call = self.steps_per_call
            chunked_cpu = steps_per_call is not None and jax.default_backend() == "cpu"
            default_unroll = True if chunked_cpu else 1
        return steps_per_call, default_unroll if self.unroll is None else self.unroll


def _check_shape(shape) -> tuple[int, ...]:
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(
            f"shape must be a tuple of ints like (B, H, W, C) or (B, D), got {shape!r}"
        ) from None
    if len(shape) < 2 or any(
        isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in shape
    ):
        raise ValueError(
            f"shape must be (B, H, W, C) or (B, D) with positive ints (batch first), got {shape}"
        )
    return tuple(int(d) for d in shape)


def _check_record(record, steps) -> tuple[int, ...]:
    if isinstance(record, numbers.Integral):
        record = (record,)
    try:
        items = tuple(record)
    except TypeError:
        raise TypeError(
            f"record must be a sequence of step indices, got {type(record).__name__}"
        ) from None
    out = []
    for r in items:
        r = check_int(r, "each record index")
        if not -steps <= r < steps:
            raise ValueError(
                f"record indices must lie in [{-steps}, {steps}) (indices into the {steps}-step "
                f"sequence; -1 = the final step), got {r}"
            )
        out.append(r % steps)
    if len(set(out)) != len(out):
        raise ValueError(f"record indices must be distinct, got {items}")
    return tuple(out)


def _check_mesh(mesh) -> None:
    if mesh is None:
        return
    if not isinstance(mesh, Mesh) or DATA_AXIS not in mesh.axis_names:
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh with an axis {DATA_AXIS!r} to split the batch "
            f"over (jaxdiff.sharding.make_mesh(), or a Trainer's .mesh), got {mesh!r}"
        )
    if tuple(mesh.axis_names) != (DATA_AXIS,):
        raise ValueError(
            f"mesh must have the one axis {DATA_AXIS!r} (sampling splits only the batch), got "
            f"axes {dict(mesh.shape)}; use jaxdiff.sharding.make_mesh(devices)"
        )


def _check_group(value, cls, name):
    if value is None:
        return cls() if cls is not Inpaint else None
    if not isinstance(value, cls):
        raise TypeError(
            f"{name} must be a jaxdiff.samplers.{cls.__name__}(...) or None, got {value!r}"
        )
    return value


@dataclasses.dataclass(frozen=True)
class SamplerOptions:
    """One sampling run, resolved: what :func:`validate` returns besides the arrays.

    ``solver`` is the solver object, ``steps`` resolved (no None), ``spacing`` the solver's
    grid, ``objective`` the objective (None with a ``Schedule``), ``dtype`` the run's;
    ``steps_per_call`` is None (one scan) or an int and ``unroll`` resolved; the rest
    as in :class:`Guidance`, :class:`Inpaint` and :class:`Loop`.
    """

    solver: Solver
    steps: int
    shape: tuple[int, ...]
    guidance_scale: float = 0.0
    num_classes: int | None = None
    record: tuple[int, ...] = ()
    resample_jumps: int = 0
    jump_length: int = 1
    chunk_size: int | None = None
    steps_per_call: int | None = None
    unroll: int | bool = 1
    mesh: Mesh | None = None
    objective: Any = None
    dtype: Any = None


class SamplerArrays(NamedTuple):
    """The array arguments after validation (None where not given)."""

    labels: jax.Array | None
    mask: jax.Array | None
    known: jax.Array | None
    x_T: jax.Array | None
    key: jax.Array


def validate(apply, schedule, shape, key, *, solver, steps, guidance, inpaint, loop, record,
             x_T, mesh) -> tuple[SamplerOptions, SamplerArrays]:  # fmt: skip
    """Check the arguments of :func:`jaxdiff.samplers.sample` against each other (pure Python
    / NumPy: nothing is traced before it passes) and return the options and arrays."""
    if not callable(apply):
        raise TypeError(f"apply must be a function apply(params, x, t, labels=None), got {apply!r}")
    solver = make_solver(solver)
    objective = None
    if isinstance(schedule, Schedule):
        T, dtype = schedule.num_steps, jnp.dtype(schedule.betas.dtype)
        if solver.needs_rates:
            raise ValueError(
                f"{solver.name} steps in the path's own time and needs a continuous path: pass "
                "an objective (with .path, .discrete, .denoise) instead of a Schedule"
            )
    else:
        check_objective(schedule, solver)
        objective, T, dtype = schedule, steps_bound(schedule), run_dtype(x_T)
    if steps is None:
        steps = solver.default_steps or T
        if steps is None:
            raise ValueError(f"{solver.name} has no default number of steps here: pass steps=N")
    steps = check_int(steps, "steps")
    if T is None and steps < 1:
        raise ValueError(f"steps must be >= 1, got steps={steps}")
    if T is not None and not 1 <= steps <= T:
        raise ValueError(
            f"steps must lie in [1, {T}] (the schedule has T={T} steps), got steps={steps}"
        )
    shape = _check_shape(shape)
    batch = shape[0]
    guidance = _check_group(guidance, Guidance, "guidance")
    inpaint = _check_group(inpaint, Inpaint, "inpaint")
    loop = _check_group(loop, Loop, "loop")
    labels = guidance.labels
    if labels is not None and labels.shape != (batch,):
        raise ValueError(
            f"labels must have shape (B,) = ({batch},), one class per sample of shape[0]={batch}, "
            f"got shape {labels.shape}"
        )
    mask = known = None
    resample_jumps, jump_length = 0, 1
    if inpaint is not None:
        mask, known = inpaint.mask, inpaint.known
        if mask.shape != shape:
            raise ValueError(
                f"mask and known must have the sample shape {shape}, got {mask.shape}; "
                f"broadcast them first, e.g. jnp.broadcast_to(mask, {shape})"
            )
        resample_jumps, jump_length = inpaint.resample_jumps, inpaint.jump_length
        if jump_length > steps:
            raise ValueError(
                f"jump_length must lie in [1, steps={steps}], got jump_length={jump_length}"
            )
    record = _check_record(record, steps)
    steps_per_call, unroll = loop.resolve()
    if x_T is not None:
        if np.shape(x_T) != shape:
            raise ValueError(f"x_T must have shape {shape}, got {np.shape(x_T)}")
        x_T = jnp.asarray(x_T, dtype)
    try:
        key = jnp.asarray(key)
        jax.random.fold_in(key, 0)
        if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.wrap_key_data(key)  # a raw uint32 key (jax.random.PRNGKey)
    except (TypeError, ValueError) as e:
        raise TypeError(f"key must be a PRNG key (jax.random.key(seed)), got {key!r}") from e
    _check_mesh(mesh)
    options = SamplerOptions(
        objective=objective,
        dtype=dtype,
        solver=solver,
        steps=steps,
        shape=shape,
        guidance_scale=guidance.scale,
        num_classes=guidance.num_classes,
        record=record,
        resample_jumps=resample_jumps,
        jump_length=jump_length,
        chunk_size=loop.chunk_size,
        steps_per_call=steps_per_call,
        unroll=unroll,
        mesh=mesh,
    )
    return options, SamplerArrays(labels, mask, known, x_T, key)
