"""The sampler's options, validated once, before anything is traced.

:func:`validate` turns the arguments of :func:`jaxdiff.samplers.sample` into one frozen
:class:`SamplerOptions` (the solver object included) and the checked arrays (labels,
inpainting mask and image, starting noise, key), or raises a ``ValueError`` / ``TypeError``
that names the argument and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxdiff.parameterization import PREDICTIONS
from jaxdiff.reverse import VARIANCES
from jaxdiff.samplers.base import Solver
from jaxdiff.samplers.grids import SPACINGS
from jaxdiff.samplers.loop_options import default_loop_options
from jaxdiff.samplers.registry import SOLVERS, make_solver
from jaxdiff.schedules import Schedule
from jaxdiff.sharding import DATA_AXIS

__all__ = ["SamplerArrays", "SamplerOptions", "validate"]


def _check_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    return int(value)


def _check_choice(value, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
    return value


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


def _check_labels(labels, num_classes, batch, guidance_scale):
    if num_classes is not None:
        num_classes = _check_int(num_classes, "num_classes")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (or None), got {num_classes}")
    if guidance_scale != 0.0:
        if num_classes is None:
            raise ValueError(
                f"guidance_scale={guidance_scale} needs a class-conditional model: pass "
                "num_classes=K (the null label index K is used for the unconditional half); "
                "use guidance_scale=0.0 for an unconditional model"
            )
        if labels is None:
            raise ValueError(
                f"guidance_scale={guidance_scale} needs labels: pass labels=(B,) int class "
                f"indices in [0, {num_classes}) to guide towards"
            )
    if labels is None:
        return None, num_classes
    if num_classes is None:
        raise ValueError(
            "labels were given but num_classes is None: pass num_classes=K for a "
            "class-conditional model (labels in [0, K], K = the null label)"
        )
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {arr.dtype}")
    if arr.shape != (batch,):
        raise ValueError(
            f"labels must have shape (B,) = ({batch},), one class per sample of shape[0]={batch}, "
            f"got shape {arr.shape}"
        )
    if arr.size and (arr.min() < 0 or arr.max() > num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}] (classes 0..{num_classes - 1}, "
            f"{num_classes} = the null label), got values in [{arr.min()}, {arr.max()}]"
        )
    return jnp.asarray(arr, jnp.int32), num_classes


def _check_inpaint(mask, known, shape, resample_jumps, jump_length, steps):
    resample_jumps = _check_int(resample_jumps, "resample_jumps")
    jump_length = _check_int(jump_length, "jump_length")
    if resample_jumps < 0:
        raise ValueError(f"resample_jumps must be >= 0 (0 = no resampling), got {resample_jumps}")
    if not 1 <= jump_length <= steps:
        raise ValueError(
            f"jump_length must lie in [1, steps={steps}], got jump_length={jump_length}"
        )
    if (mask is None) != (known is None):
        raise ValueError(
            "inpainting needs both mask (1 = known pixel) and known (the image); got only "
            f"{'mask' if known is None else 'known'}"
        )
    if mask is None:
        if resample_jumps:
            raise ValueError(
                f"resample_jumps={resample_jumps} is RePaint resampling for inpainting; it "
                "needs mask= and known="
            )
        return None, None, 0, jump_length
    mask_shape, known_shape = np.shape(mask), np.shape(known)
    if mask_shape != known_shape:
        raise ValueError(
            f"mask and known must have the same shape, got mask {mask_shape} and known "
            f"{known_shape}"
        )
    if mask_shape != shape:
        raise ValueError(
            f"mask and known must have the sample shape {shape}, got {mask_shape}; broadcast "
            f"them first, e.g. jnp.broadcast_to(mask, {shape})"
        )
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        if not np.all((m == 0) | (m == 1)):
            bad = m[(m != 0) & (m != 1)].ravel()[0]
            raise ValueError(f"mask must hold 0 (unknown) or 1 (known) values, got {bad}")
        m = m.astype(np.bool_)
    k = jnp.asarray(known)
    if not jnp.issubdtype(k.dtype, jnp.floating):
        raise TypeError(f"known must be a floating-point image, got dtype {k.dtype}")
    return jnp.asarray(m), k, resample_jumps, jump_length


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
        r = _check_int(r, "each record index")
        if not -steps <= r < steps:
            raise ValueError(
                f"record indices must lie in [{-steps}, {steps}) (indices into the {steps}-step "
                f"sequence; -1 = the final step), got {r}"
            )
        out.append(r % steps)
    if len(set(out)) != len(out):
        raise ValueError(f"record indices must be distinct, got {items}")
    return tuple(out)


def _check_positive_int_or_none(value, name):
    if value is None:
        return None
    value = _check_int(value, name)
    if value < 1:
        raise ValueError(f"{name} must be >= 1 (or None), got {value}")
    return value


def _check_float(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a Python float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


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


@dataclasses.dataclass(frozen=True)
class SamplerOptions:
    """Everything about a sampling run except the arrays, validated (see :func:`validate`).

    ``solver`` is the solver object; ``steps`` and ``spacing`` are resolved (no None);
    ``steps_per_call`` is None (one scan) or an int; the rest as in
    :func:`jaxdiff.samplers.sample`.
    """

    solver: Solver
    steps: int
    spacing: str
    shape: tuple[int, ...]
    prediction: str = "eps"
    clip_x0: float | None = None
    lower_order_final: bool = True
    guidance_scale: float = 0.0
    num_classes: int | None = None
    record: tuple[int, ...] = ()
    resample_jumps: int = 0
    jump_length: int = 1
    chunk_size: int | None = None
    steps_per_call: int | None = None
    unroll: int | bool = 1
    mesh: Mesh | None = None


class SamplerArrays(NamedTuple):
    """The array arguments after validation (None where not given)."""

    labels: jax.Array | None
    mask: jax.Array | None
    known: jax.Array | None
    x_T: jax.Array | None
    key: jax.Array


def validate(apply, schedule, shape, key, *, sampler, steps, labels, num_classes, guidance_scale,
             mask, known, resample_jumps, jump_length, record, prediction, eta, variance,
             spacing, clip_x0, lower_order_final, x_T, chunk_size, steps_per_call,
             unroll, mesh=None) -> tuple[SamplerOptions, SamplerArrays]:  # fmt: skip
    """Check every argument of :func:`jaxdiff.samplers.sample` (pure Python / NumPy: nothing
    is traced before it passes) and return the options and arrays, normalised."""
    if not callable(apply):
        raise TypeError(f"apply must be a function apply(params, x, t, labels=None), got {apply!r}")
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"schedule must be a jaxdiff Schedule (make_schedule(...)), got {type(schedule)}"
        )
    _check_choice(sampler, "sampler", tuple(SOLVERS))
    cls = SOLVERS[sampler]
    T = schedule.num_steps
    if steps is None:
        steps = cls.default_steps or T
    steps = _check_int(steps, "steps")
    if not 1 <= steps <= T:
        raise ValueError(
            f"steps must lie in [1, {T}] (the schedule has T={T} steps), got steps={steps}"
        )
    if spacing is not None:
        _check_choice(spacing, "spacing", SPACINGS)
    _check_choice(prediction, "prediction", PREDICTIONS)
    _check_choice(variance, "variance", VARIANCES)
    shape = _check_shape(shape)
    batch = shape[0]
    eta = _check_float(eta, "eta")
    if eta < 0:
        raise ValueError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta}")
    if eta != 0 and sampler != "ddim":
        raise ValueError(f"eta={eta} applies to sampler='ddim' only, got sampler={sampler!r}")
    guidance_scale = _check_float(guidance_scale, "guidance_scale")
    labels, num_classes = _check_labels(labels, num_classes, batch, guidance_scale)
    mask, known, resample_jumps, jump_length = _check_inpaint(
        mask, known, shape, resample_jumps, jump_length, steps
    )
    record = _check_record(record, steps)
    chunk_size = _check_positive_int_or_none(chunk_size, "chunk_size")
    if isinstance(steps_per_call, str):
        if steps_per_call != "auto":
            raise ValueError(
                f"steps_per_call must be 'auto', None (one scan) or an int >= 1, "
                f"got {steps_per_call!r}"
            )
        steps_per_call, default_unroll = default_loop_options()
    else:
        steps_per_call = _check_positive_int_or_none(steps_per_call, "steps_per_call")
        chunked_cpu = steps_per_call is not None and jax.default_backend() == "cpu"
        default_unroll = True if chunked_cpu else 1
    if unroll is None:
        unroll = default_unroll
    if clip_x0 is not None:
        clip_x0 = _check_float(clip_x0, "clip_x0")
        if clip_x0 <= 0:
            raise ValueError(f"clip_x0 must be > 0 (or None), got {clip_x0}")
    if not isinstance(unroll, bool):
        unroll = _check_int(unroll, "unroll")
        if unroll < 1:
            raise ValueError(f"unroll must be >= 1 (or a bool), got {unroll}")
    dtype = jnp.dtype(schedule.betas.dtype)
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
        solver=make_solver(sampler, eta=eta, variance=variance),
        steps=steps,
        spacing=spacing or cls.default_spacing,
        shape=shape,
        prediction=prediction,
        clip_x0=clip_x0,
        lower_order_final=bool(lower_order_final),
        guidance_scale=guidance_scale,
        num_classes=num_classes,
        record=record,
        resample_jumps=resample_jumps,
        jump_length=jump_length,
        chunk_size=chunk_size,
        steps_per_call=steps_per_call,
        unroll=unroll,
        mesh=mesh,
    )
    return options, SamplerArrays(labels, mask, known, x_T, key)
