"""Compiled samplers: DDPM ancestral, DDIM and DPM-Solver++(2M), each one ``lax.scan``.

The single entry point is :func:`sample`. It validates every argument in Python (before anything
is traced), plans the step sequence with NumPy, and runs the whole reverse process as one
compiled ``lax.scan`` per batch chunk. Compiled functions are cached by their static
configuration (model function, sampler, shapes, flags), so calling :func:`sample` again with new
``params``, a new ``key``, new labels or another guidance scale does not re-trace. The loop
compiles with :mod:`jaxdiff.xla_options` (on CPU: XLA's own kernels instead of YNNPACK's).

The per-step math is not re-derived here: DDPM steps are :func:`jaxdiff.reverse.ddpm_step`
(DDPM eq. 11), DDIM steps are :func:`jaxdiff.reverse.ddim_step` (DDIM eq. 12), model outputs
go through :func:`jaxdiff.parameterization.to_eps_and_x0`, and the re-noising of known pixels
for inpainting is :func:`jaxdiff.forward.q_sample` (DDPM eq. 4). Only the DPM-Solver++(2M)
update (Lu et al. 2022, Algorithm 2) is new and lives in :func:`dpm_solver_pp_step`.

Timesteps follow the library convention: ``t`` in ``0..T-1``, ``t = 0`` least noisy, and
``-1`` as a step target means the clean sample x0 (``alphas_cumprod = 1``).

Randomness is per example: example ``n`` of the batch (its index in the full batch) owns the key
``ek = fold_in(key, n)``; its x_T (and the first re-noising of known pixels) is drawn from
``fold_in(ek, 0)`` and all the noise of scan step ``j`` from ``fold_in(ek, j + 1)``. So a sample
depends only on ``key`` and its index, never on ``chunk_size``, ``steps_per_call`` or the other
examples in the batch: the same key gives bit-identical samples, and other chunk sizes or loop
structures give the same samples up to float rounding (XLA may round the last bit differently
for arrays of another shape, and a conv net's batch size can change its summation order).

Loop structure (see :func:`default_loop_options` and ``benchmarks/bench_samplers.py``):
``steps_per_call=None`` compiles the whole reverse process into one ``lax.scan``;
``steps_per_call=k`` runs a Python loop over compiled scans of ``k`` steps (``k = 1`` is the
tutorials' Python loop of jitted single steps). On CPU the default is scans of 4 steps, fully
unrolled (no device loop at all), which measured as fast as or faster than the Python loop; on
GPU and TPU it is the single rolled scan.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.forward import q_sample
from jaxdiff.parameterization import PREDICTIONS, to_eps_and_x0
from jaxdiff.reverse import VARIANCES, ddim_step, ddpm_step
from jaxdiff.schedules import Schedule, check_terminal_signal, schedule_from_betas
from jaxdiff.xla_options import jit as xla_jit

__all__ = [
    "DEFAULT_STEPS",
    "LOOP_DEFAULTS",
    "SAMPLERS",
    "SPACINGS",
    "SampleResult",
    "default_loop_options",
    "default_spacing",
    "dpm_solver_pp_step",
    "respaced_schedule",
    "sample",
    "sampling_timesteps",
    "step_sequence",
]

SAMPLERS = ("ddpm", "ddim", "dpm++")
SPACINGS = ("leading", "trailing", "linspace", "logsnr")
DEFAULT_STEPS = {"ddpm": None, "ddim": 50, "dpm++": 20}  # None: the schedule's T

# (steps_per_call, unroll) of sample() by backend; see default_loop_options for the measurements.
LOOP_DEFAULTS: dict[str, tuple[int | None, int | bool]] = {
    "cpu": (4, True),
    "gpu": (None, 1),
    "tpu": (None, 1),
}

# Diffusers' DPMSolverMultistepScheduler uses a first-order final step below this many steps.
_LOWER_ORDER_FINAL_BELOW = 15


class SampleResult(NamedTuple):
    """What :func:`sample` returns.

    Attributes:
      samples: ``shape`` array, the final samples (for DDPM and DDIM the clean x0; for
        DPM-Solver++ x at the last target, see :func:`step_sequence`).
      trajectory: ``(len(record), *shape)`` array; entry ``j`` is the state after step
        ``record[j]`` of the step sequence. ``(0, *shape)`` when nothing is recorded.
    """

    samples: jax.Array
    trajectory: jax.Array


# --------------------------------------------------------------------------------------------
# Step sequences


def _check_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    return int(value)


def _check_choice(value, name: str, choices: Sequence[str], hint: str = "") -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}{hint}"
        )
    return value


def default_loop_options(backend: str | None = None) -> tuple[int | None, int | bool]:
    """``(steps_per_call, unroll)`` that :func:`sample` uses by default on ``backend``.

    ``backend`` defaults to ``jax.default_backend()``; unknown backends get the GPU choice.

    - CPU: ``(4, True)``, a Python loop over fully unrolled scans of 4 steps. Measured with
      ``benchmarks/bench_samplers.py`` on this project's shared 2-core CPU (jax 0.10.2, DDPM,
      timed calls interleaved, medians): U-Net base 16 at batch 16, Python loop of jitted steps
      110 ms/step, one rolled scan 109, rolled ``unroll=4`` 110, unrolled chunks of 10 steps
      99, of 4 steps 95; ``unet_mnist_small`` at batch 64, loop 1064 ms/step, rolled scan 1105,
      chunks of 4 1051. So the unrolled chunks are never slower than the loop while the rolled
      scan can be (the training-engine issue measured a rolled conv-net scan several times
      slower). Compile time grows with the chunk length (first call 14 s vs 10 s for the loop
      in the first setting), so it stays small, as in
      :func:`jaxdiff.train.default_scan_options`.
    - GPU, TPU: ``(None, 1)``, the whole reverse process in one rolled ``lax.scan`` (compile
      time independent of the number of steps, no per-step dispatch).
    """
    backend = jax.default_backend() if backend is None else backend
    return LOOP_DEFAULTS.get(backend, LOOP_DEFAULTS["gpu"])


def default_spacing(sampler: str) -> str:
    """The default timestep spacing of a sampler: ``"logsnr"`` for dpm++, else ``"trailing"``.

    Measured with the exact eps of Gaussian data (mu 1.5, sigma 0.5, linear schedule,
    ``tests/test_samplers.py``): DPM-Solver++(2M) on the ``"trailing"`` grid leaves the sample
    std 24% high at 20 steps (0.62 vs 0.5; the t-uniform grid makes the last lambda-steps huge,
    so the second-order extrapolation with ``r = h_prev / h`` << 1 overshoots), and on the
    ``"logsnr"`` grid 1% high (0.505; max error against the exact ODE solution 0.027 vs
    DDIM-20's 0.27). DDIM keeps ``"trailing"``: its 50-step std is 4.5% low there and 5.1% low
    on ``"logsnr"``.
    """
    _check_choice(sampler, "sampler", SAMPLERS)
    return "logsnr" if sampler == "dpm++" else "trailing"


def _half_log_snr(schedule: Schedule) -> np.ndarray:
    """``lambda_t = log(alpha_t / sigma_t) = (log abar_t - log(1 - abar_t)) / 2``, float64."""
    return 0.5 * (
        np.asarray(schedule.log_alphas_cumprod, np.float64)
        - np.asarray(schedule.log_one_minus_alphas_cumprod, np.float64)
    )


def sampling_timesteps(schedule: Schedule, steps: int, spacing: str) -> np.ndarray:
    """The ``steps`` timesteps a sampler evaluates the model at, in decreasing order.

    With ``T = schedule.num_steps`` and ``N = steps`` (the first three as in Lin et al. 2024,
    "Common diffusion noise schedules and sample steps are flawed", table 2, 0-based t):

    - ``"leading"``: ``t_i = (N - 1 - i) * (T // N)``, e.g. 980, 960, ..., 0 for T=1000, N=50
      (DDIM's original spacing; never reaches T - 1).
    - ``"trailing"``: ``t_i = round(T - i T / N) - 1``, e.g. 999, 979, ..., 19 (starts at the
      last step, where x_T ~ N(0, I) is right).
    - ``"linspace"``: ``round(linspace(T - 1, 0, N))``, e.g. 999, 979, ..., 0.
    - ``"logsnr"``: uniform in ``lambda_t = log(alpha_t / sigma_t)``: the first N of N + 1
      points from ``lambda_{T-1}`` to ``lambda_0``, each mapped to the nearest timestep (made
      strictly decreasing where rounding collides). DPM-Solver's "logSNR" step size
      (Lu et al. 2022, sec. 3.4; diffusers' ``use_lu_lambdas``); the last step then goes to 0.

    With ``N = T`` all of them give ``T-1, ..., 0``.

    Args:
      schedule: the noise schedule (T and, for ``"logsnr"``, its lambda_t).
      steps: N in ``[1, T]``.
      spacing: one of :data:`SPACINGS`.

    Returns:
      ``(N,)`` int64 NumPy array of distinct timesteps in ``[0, T)``, decreasing.
    """
    T = schedule.num_steps
    N = _check_int(steps, "steps")
    _check_choice(spacing, "spacing", SPACINGS)
    if not 1 <= N <= T:
        raise ValueError(
            f"steps must lie in [1, {T}] for a schedule with T={T} steps, got steps={N}"
        )
    i = np.arange(N)
    if N == T:
        ts = T - 1 - i
    elif spacing == "leading":
        ts = (N - 1 - i) * (T // N)
    elif spacing == "trailing":
        ts = np.round(T - i * (T / N)).astype(np.int64) - 1
    elif spacing == "linspace":
        ts = np.round(np.linspace(T - 1, 0, N)).astype(np.int64)
    else:
        lam = _half_log_snr(schedule)  # decreasing in t
        targets = np.linspace(lam[-1], lam[0], N + 1)
        real_t = np.interp(targets, lam[::-1], np.arange(T - 1, -1, -1, dtype=np.float64))
        grid = np.round(real_t).astype(np.int64)
        grid[0], grid[-1] = T - 1, 0
        # Strictly decreasing: keep room for the points on either side (N + 1 <= T points in
        # [0, T - 1]), then push collisions upwards; the bound keeps grid[k] <= T - 1 - k.
        k = np.arange(N + 1)
        grid = np.clip(grid, N - k, T - 1 - k)
        for k in range(N - 1, -1, -1):
            grid[k] = max(grid[k], grid[k + 1] + 1)
        ts = grid[:N]
    ts = np.asarray(ts, dtype=np.int64)
    assert len(ts) == N and np.all(np.diff(ts) < 0) and 0 <= ts[-1] and ts[0] < T, ts
    return ts


def step_sequence(
    schedule: Schedule,
    sampler: str = "dpm++",
    steps: int | None = None,
    spacing: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The step sequence of a sampler: step ``i`` goes from ``t[i]`` to ``t_next[i]``.

    ``t`` is :func:`sampling_timesteps` (``spacing=None``: :func:`default_spacing`);
    ``t_next[i] = t[i + 1]`` and the last target is:

    - DDPM and DDIM: ``-1``, the clean sample x0 (DDPM's t = 0 step adds no noise; DDIM
      jumps to ``alphas_cumprod = 1``).
    - DPM-Solver++: ``0`` when ``t[-1] > 0``, so the last step is an ordinary solver step
      to the least noisy timestep and the output is x at t = 0 (``sigma_0 = sqrt(1 -
      alphas_cumprod[0])``, 0.01 for the linear schedule); this is diffusers'
      ``final_sigmas_type="sigma_min"``. When ``t[-1]`` is already 0 (``"leading"``,
      ``"linspace"``) the last step goes to x0 (sigma = 0, lambda = +inf), where the solver
      can only be first order and its update reduces to the data prediction: diffusers'
      ``final_sigmas_type="zero"``.

    Trajectory index ``j`` of :func:`sample` (``record=(j, ...)``) is the state at ``t_next[j]``.

    Returns:
      ``(t, t_next)``, two ``(N,)`` int64 NumPy arrays.
    """
    _check_choice(sampler, "sampler", SAMPLERS)
    T = schedule.num_steps
    if steps is None:
        steps = DEFAULT_STEPS[sampler] or T
    ts = sampling_timesteps(schedule, steps, spacing or default_spacing(sampler))
    final = 0 if sampler == "dpm++" and ts[-1] > 0 else -1
    return ts, np.append(ts[1:], final).astype(np.int64)


# --------------------------------------------------------------------------------------------
# DPM-Solver++(2M)


def _lambda(s: Schedule, t: jax.Array) -> jax.Array:
    """Half log-SNR ``lambda_t = log(alpha_t / sigma_t)`` with ``alpha_t = sqrt(abar_t)``."""
    t0 = jnp.maximum(t, 0)
    return 0.5 * (s.log_alphas_cumprod[t0] - s.log_one_minus_alphas_cumprod[t0])


def dpm_solver_pp_step(
    s: Schedule,
    x0: jax.Array,
    x_t: jax.Array,
    t,
    t_next,
    x0_prev: jax.Array | None = None,
    t_prev=None,
    *,
    second_order=True,
) -> jax.Array:
    """One DPM-Solver++(2M) step x_t -> x_{t_next} in data-prediction form.

    Lu et al. 2022, "DPM-Solver++", Algorithm 2, with ``alpha_t = sqrt(abar_t)``,
    ``sigma_t = sqrt(1 - abar_t)``, ``lambda_t = log(alpha_t / sigma_t)`` from the discrete
    schedule and ``h = lambda_{t_next} - lambda_t``::

        first order (DPM-Solver++1, = DDIM):
            x_next = sigma_next / sigma_t x_t - alpha_next (exp(-h) - 1) x0
        second order (multistep, r = h_prev / h, h_prev = lambda_t - lambda_{t_prev}):
            D = (1 + 1 / (2 r)) x0 - 1 / (2 r) x0_prev
            x_next = sigma_next / sigma_t x_t - alpha_next (exp(-h) - 1) D

    ``t_next = -1`` is the clean sample (sigma = 0, lambda = +inf): the first-order update
    then reduces to ``x_next = x0`` and is used whatever ``second_order`` says.

    Args:
      s: the schedule.
      x0: the data prediction at ``(x_t, t)``, shape ``(B, ...)``.
      x_t: current sample, same shape.
      t: int timestep in ``[0, T)`` (a scalar: the whole batch is at one step).
      t_next: target timestep in ``[-1, t)``, a scalar.
      x0_prev: the data prediction of the previous step (at ``t_prev``); needed for 2nd order.
      t_prev: the previous step's timestep (> t), a scalar.
      second_order: bool or traced bool; False (or no history) gives the first-order step.

    Returns:
      x_{t_next}, same shape as ``x_t``.
    """
    t = jnp.asarray(t, jnp.int32)
    t_next = jnp.asarray(t_next, jnp.int32)
    clean = t_next < 0
    t_next0 = jnp.maximum(t_next, 0)
    sigma_t = s.sqrt_one_minus_alphas_cumprod[t]
    sigma_next = jnp.where(clean, 0.0, s.sqrt_one_minus_alphas_cumprod[t_next0])
    alpha_next = jnp.where(clean, 1.0, s.sqrt_alphas_cumprod[t_next0])
    lam_t = _lambda(s, t)
    h = _lambda(s, t_next0) - lam_t
    # expm1(-h) = -1 when sigma_next = 0 (lambda_next = +inf).
    coef = jnp.where(clean, -1.0, jnp.expm1(-h))
    d = x0
    if x0_prev is not None:
        h_prev = lam_t - _lambda(s, jnp.asarray(t_prev, jnp.int32))
        half_inv_r = jnp.where(clean, 0.0, 0.5 * h / h_prev)  # 1 / (2 r)
        use2 = jnp.logical_and(jnp.asarray(second_order), jnp.logical_not(clean))
        d2 = (1.0 + half_inv_r) * x0 - half_inv_r * x0_prev
        d = jnp.where(use2, d2, x0)
    x_next = (sigma_next / sigma_t) * x_t - (alpha_next * coef) * d
    return x_next.astype(x_t.dtype)


# --------------------------------------------------------------------------------------------
# Plan: the static sequence of scan steps


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Per scan step ("op") arrays, all of length L (>= N when RePaint jumps are on)."""

    timesteps: np.ndarray  # (N,) base step sequence
    targets: np.ndarray  # (N,)
    ops: dict[str, np.ndarray]


def _build_plan(
    sampler: str,
    ts: np.ndarray,
    t_next: np.ndarray,
    record: tuple[int, ...],
    resample_jumps: int,
    jump_length: int,
    lower_order_final: bool,
) -> _Plan:
    N = len(ts)
    base, renoise_from = [], []
    for i in range(N):
        base.append(i)
        renoise_from.append(-1)
        # RePaint resampling (Lugmayr et al. 2022, sec. 4.2): after every jump_length steps,
        # re-noise back jump_length steps and redo them, resample_jumps times. Never after the
        # final step, so the output is the final step's.
        if resample_jumps and i < N - 1 and (i + 1) % jump_length == 0:
            start = i + 1 - jump_length
            for _ in range(resample_jumps):
                base.append(start)
                renoise_from.append(int(t_next[i]))
                for k in range(start + 1, i + 1):
                    base.append(k)
                    renoise_from.append(-1)
    base = np.asarray(base, np.int64)
    renoise_from = np.asarray(renoise_from, np.int64)
    L = len(base)
    order = np.full(L, 2, np.int64)
    order[0] = 1  # DPM-Solver++(2M): the first step is first order (Algorithm 2, line 2)
    order[renoise_from >= 0] = 1  # the multistep history is stale after a jump back
    order[t_next[base] < 0] = 1  # to sigma = 0 only the first-order update is defined
    if lower_order_final and N < _LOWER_ORDER_FINAL_BELOW:
        order[base == N - 1] = 1
    if sampler != "dpm++":
        order[:] = 1
    slot = np.full(L, -1, np.int64)
    for j, r in enumerate(record):
        slot[np.flatnonzero(base == r)[-1]] = j  # the last visit of base step r
    ops = dict(
        t=ts[base],
        t_next=t_next[base],
        ddpm_index=N - 1 - base,  # index of t in the (respaced) ascending schedule
        second_order=order == 2,
        renoise=renoise_from >= 0,
        renoise_from=np.maximum(renoise_from, 0),
        slot=slot,
        final=base == N - 1,
    )
    ops = {k: np.asarray(v, np.bool_ if v.dtype == np.bool_ else np.int32) for k, v in ops.items()}
    return _Plan(ts, t_next, ops)


def respaced_schedule(schedule: Schedule, timesteps) -> Schedule:
    """The schedule restricted to ``timesteps`` (improved-diffusion's respacing).

    Nichol & Dhariwal 2021, sec. 4: the subsequence keeps ``abar`` at each kept step, with
    betas ``1 - abar_{t_i} / abar_{t_{i-1}}``; DDPM eq. 11 on it is the ancestral sampler.
    Index ``i`` of the result is the ``i``-th smallest of ``timesteps`` (distinct, in
    ``[0, T)``, any order). All T timesteps give ``schedule`` itself.
    """
    ts = np.asarray(timesteps, np.int64)
    if ts.ndim != 1 or len(np.unique(ts)) != len(ts) or ts.min() < 0:
        raise ValueError(f"timesteps must be distinct non-negative ints, got {timesteps}")
    if ts.max() >= schedule.num_steps:
        raise ValueError(f"timesteps must be < T={schedule.num_steps}, got max {ts.max()}")
    if len(ts) == schedule.num_steps:
        return schedule
    asc = np.sort(ts)
    log_abar = np.asarray(schedule.log_alphas_cumprod, np.float64)[asc]
    betas = -np.expm1(log_abar - np.append(0.0, log_abar[:-1]))
    return schedule_from_betas(betas, kind=f"{schedule.kind}-respaced", dtype=schedule.betas.dtype)


# --------------------------------------------------------------------------------------------
# The compiled loop


@dataclasses.dataclass(frozen=True)
class _Config:
    """Everything static about one compiled sampling loop (hashable: the jit cache key)."""

    apply: Callable
    sampler: str
    chunk_shape: tuple[int, ...]
    dtype: Any
    prediction: str
    variance: str
    clip_x0: float | None
    ddim_noise: bool
    guided: bool
    conditional: bool
    num_classes: int | None
    inpaint: bool
    jumps: bool
    num_records: int
    unroll: int | bool


class _Carry(NamedTuple):
    x: jax.Array
    hist_x0: jax.Array | None  # DPM-Solver++: data prediction of the previous step
    hist_t: jax.Array | None  # DPM-Solver++: timestep of the previous step
    trajectory: jax.Array


@functools.partial(jax.jit, static_argnums=(2, 3))
def _step_keys(key, offset, b: int, num_ops: int):
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


def _init_carry(cfg: _Config, schedule, keys, x_T, t0, mask, known) -> _Carry:
    # Compiled per (shape, dtype, inpainting, history, records) only, so that samplers, models
    # and flags that share a batch shape share this compile (threefry is slow to compile).
    return _init_carry_jit(
        (cfg.chunk_shape, cfg.dtype, cfg.inpaint, cfg.sampler == "dpm++", cfg.num_records),
        schedule,
        keys,
        x_T,
        jnp.asarray(t0, jnp.int32),
        mask,
        known,
    )


@functools.partial(jax.jit, static_argnums=0)
def _init_carry_jit(static, schedule, keys, x_T, t0, mask, known) -> _Carry:
    chunk_shape, dtype, inpaint, history, num_records = static
    draws = _normals(keys, int(x_T is None) + int(inpaint), chunk_shape[1:], dtype)
    if x_T is None:
        x_T = draws.pop(0)
    x = x_T.astype(dtype)
    if inpaint:
        # RePaint: the known region is q(x_t | known) at every step, including the first.
        x = jnp.where(mask, q_sample(schedule, known, t0, draws.pop(0)), x)
    hist_x0 = jnp.zeros_like(x) if history else None
    hist_t = t0 if history else None
    traj = jnp.zeros((num_records, *chunk_shape), dtype)
    return _Carry(x, hist_x0, hist_t, traj)


def _predict(cfg: _Config, params, schedule, x, t, labels, w):
    """Model output -> (eps, x0), with classifier-free guidance in one batched call."""
    b = x.shape[0]
    tb = jnp.full((b,), t, jnp.int32)
    if cfg.guided:
        null = jnp.full((b,), cfg.num_classes, jnp.int32)
        out = cfg.apply(
            params,
            jnp.concatenate([x, x]),
            jnp.concatenate([tb, tb]),
            jnp.concatenate([labels, null]),
        )
        _check_output(out, (2 * b, *x.shape[1:]))
        cond, uncond = out[:b], out[b:]
        # Ho & Salimans 2022, eq. 6: eps~ = (1 + w) eps_c - w eps_u = eps_c + w (eps_c - eps_u).
        # eps, x0 and v are all affine in the output at fixed (x_t, t), so guiding the raw
        # output is guiding eps.
        out = cond + w * (cond - uncond)
    elif cfg.conditional:
        out = cfg.apply(params, x, tb, labels)
    else:
        out = cfg.apply(params, x, tb)
    _check_output(out, x.shape)
    return to_eps_and_x0(schedule, out.astype(x.dtype), x, t, cfg.prediction)


def _check_output(out, shape):
    if jnp.shape(out) != tuple(shape):
        raise ValueError(
            f"apply(params, x, t, labels) must return an array of x's shape {tuple(shape)}, "
            f"got shape {jnp.shape(out)}"
        )


def _run_ops(cfg: _Config, *args):
    """:func:`_run_ops_body` compiled for the default backend (:mod:`jaxdiff.xla_options`)."""
    return _run_ops_compiled(jax.default_backend())(cfg, *args)


@functools.cache
def _run_ops_compiled(platform: str):
    return xla_jit(_run_ops_body, platform=platform, static_argnums=0)


def _run_ops_body(
    cfg: _Config,
    params,
    schedule,
    ddpm_schedule,
    ops,
    carry,
    keys,
    labels,
    mask,
    known,
    w,
    eta,
):
    ex_shape = cfg.chunk_shape[1:]
    step_noise = cfg.sampler == "ddpm" or cfg.ddim_noise  # the same test as needs_keys in sample
    num_draws = int(step_noise) + int(cfg.inpaint) + int(cfg.jumps)

    def body(carry: _Carry, xs):
        op, step_keys = xs
        x = carry.x
        t, t_next = op["t"], op["t_next"]
        draws = _normals(step_keys, num_draws, ex_shape, cfg.dtype)
        z_step = draws.pop(0) if step_noise else None
        z_known = draws.pop(0) if cfg.inpaint else None
        z_jump = draws.pop(0) if cfg.jumps else None
        if cfg.jumps:
            # RePaint resampling: x_{t} ~ q(x_t | x_{t'}) for t' < t, i.e.
            # sqrt(abar_t / abar_t') x_t' + sqrt(1 - abar_t / abar_t') z (DDPM eq. 2 iterated).
            log_ratio = (
                schedule.log_alphas_cumprod[t] - schedule.log_alphas_cumprod[op["renoise_from"]]
            )
            renoised = jnp.exp(0.5 * log_ratio) * x + jnp.sqrt(-jnp.expm1(log_ratio)) * z_jump
            x = jnp.where(op["renoise"], renoised, x)
        eps, x0 = _predict(cfg, params, schedule, x, t, labels, w)
        hist_x0, hist_t = carry.hist_x0, carry.hist_t
        if cfg.sampler == "ddpm":
            x_new = ddpm_step(
                ddpm_schedule, eps, x, op["ddpm_index"], z_step, cfg.variance, clip_x0=cfg.clip_x0
            )
        elif cfg.sampler == "ddim":
            x_new = ddim_step(
                schedule,
                eps,
                x,
                t,
                t_next,
                z_step,
                eta if cfg.ddim_noise else 0.0,
                clip_x0=cfg.clip_x0,
            )
        else:
            if cfg.clip_x0 is not None:
                x0 = jnp.clip(x0, -cfg.clip_x0, cfg.clip_x0)
            x_new = dpm_solver_pp_step(
                schedule, x0, x, t, t_next, hist_x0, hist_t, second_order=op["second_order"]
            )
            hist_x0, hist_t = x0, t
        if cfg.inpaint:
            # RePaint replacement: known pixels from q(x_{t_next} | known) (DDPM eq. 4), and the
            # known image itself after the final step (final paste).
            renoised_known = q_sample(schedule, known, jnp.maximum(t_next, 0), z_known)
            known_t = jnp.where(op["final"] | (t_next < 0), known, renoised_known)
            x_new = jnp.where(mask, known_t, x_new)
        x_new = x_new.astype(cfg.dtype)
        traj = carry.trajectory
        if cfg.num_records:
            slot = op["slot"]
            at = jnp.maximum(slot, 0)
            value = jnp.where(slot >= 0, x_new, traj[at])
            traj = jax.lax.dynamic_update_index_in_dim(traj, value, at, 0)
        return _Carry(x_new, hist_x0, hist_t, traj), None

    carry, _ = jax.lax.scan(body, carry, (ops, keys), unroll=cfg.unroll)
    return carry


# --------------------------------------------------------------------------------------------
# Validation


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


# --------------------------------------------------------------------------------------------
# Entry point


def sample(
    apply: Callable,
    params: Any,
    schedule: Schedule,
    shape: Sequence[int],
    key: jax.Array,
    *,
    sampler: str = "dpm++",
    steps: int | None = None,
    labels=None,
    num_classes: int | None = None,
    guidance_scale: float = 0.0,
    mask=None,
    known=None,
    resample_jumps: int = 0,
    jump_length: int = 1,
    record: Sequence[int] = (),
    prediction: str = "eps",
    eta: float = 0.0,
    variance: str = "posterior",
    spacing: str | None = None,
    clip_x0: float | None = None,
    lower_order_final: bool = True,
    x_T: jax.Array | None = None,
    chunk_size: int | None = None,
    steps_per_call: int | str | None = "auto",
    unroll: int | bool | None = None,
) -> SampleResult:
    """Draw samples with a compiled reverse process (one ``lax.scan`` over all steps).

    Samplers (``sampler=``):

    - ``"ddpm"``: ancestral sampling, DDPM eq. 11 (Algorithm 2) with ``sigma_t^2`` the
      posterior variance (``variance="posterior"``) or ``beta_t`` (``"beta"``). ``steps < T``
      runs DDPM on the respaced schedule of the chosen timesteps (Nichol & Dhariwal 2021).
    - ``"ddim"``: DDIM eq. 12 with ``sigma`` of eq. 16 scaled by ``eta >= 0`` (0:
      deterministic, a first-order solver of the probability-flow ODE), any ``steps``.
    - ``"dpm++"``: DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2; :func:`dpm_solver_pp_step`),
      the fast default for 10-25 steps. First step first order; the last step goes to t = 0
      (see :func:`step_sequence`) and, as in diffusers (``lower_order_final=True``), is first
      order when ``steps < 15``.

    Args:
      apply: pure model function ``apply(params, x, t, labels=None) -> prediction`` with ``x``
        ``(b, ...)``, ``t`` ``(b,)`` int32 and ``labels`` ``(b,)`` int32; called without labels
        for unconditional sampling.
      params: the model's parameter pytree (a traced argument, never baked into the compile).
      schedule: the noise schedule the model was trained with.
      shape: ``(B, H, W, C)`` or ``(B, D)``, the batch of samples to draw.
      key: PRNG key. Sample ``n`` uses ``fold_in(key, n)`` only (see the module docstring).
      sampler: one of :data:`SAMPLERS`.
      steps: number of sampler steps (model evaluations per sample, without guidance or
        resampling): 1..T; default T for ddpm, 50 for ddim, 20 for dpm++.
      labels: ``(B,)`` int class indices in ``[0, num_classes]`` (``num_classes`` is the null,
        unconditional label); needs ``num_classes``. With ``num_classes`` set and no labels,
        the model is called with the null label.
      num_classes: the conditional model's number of classes K (its null label index); None
        for an unconditional model.
      guidance_scale: classifier-free guidance weight w (Ho & Salimans 2022):
        ``eps = eps_cond + w (eps_cond - eps_uncond)``; 0 is plain conditional sampling (one
        model call per step); w > 0 evaluates conditional and null labels in one batched call
        of ``2b`` examples. (In the ``eps_uncond + s (eps_cond - eps_uncond)`` convention,
        ``s = 1 + w``.)
      mask: ``shape`` array, 1 (or True) = known pixel, 0 = to be generated; with ``known``.
      known: ``shape`` float image whose known pixels are kept: at every step they are
        replaced by ``q_sample(known, t_next)`` (RePaint), and after the last step by ``known``
        itself, so they equal ``known`` bit for bit in the output.
      resample_jumps: RePaint resampling (Lugmayr et al. 2022): after every ``jump_length``
        steps, re-noise back ``jump_length`` steps with ``q(x_t | x_t')`` and redo them, this
        many times (RePaint's ``U = resample_jumps + 1``); 0 = plain replacement.
      jump_length: RePaint's jump length ``j`` (in sampler steps).
      record: indices into the sampler's step sequence (not timesteps) of the states to keep:
        entry ``j`` of the trajectory is the state after step ``record[j]``, at timestep
        ``step_sequence(...)[1][record[j]]``; negative indices count from the end (-1 = the
        final sample). Written into a preallocated ``(len(record), *shape)`` buffer.
      prediction: what the model predicts: ``"eps"``, ``"x0"`` or ``"v"``.
      eta: DDIM stochasticity (>= 0); only for ``sampler="ddim"``.
      variance: DDPM's ``"posterior"`` or ``"beta"``.
      spacing: ``"leading"``, ``"trailing"``, ``"linspace"`` or ``"logsnr"`` (see
        :func:`sampling_timesteps`); None = :func:`default_spacing` (``"logsnr"`` for dpm++,
        ``"trailing"`` otherwise).
      clip_x0: clip the predicted x0 to ``[-clip_x0, clip_x0]`` at every step (1.0 for
        images in [-1, 1]); None = no clipping.
      lower_order_final: DPM-Solver++ only: first-order last step when ``steps < 15``.
      x_T: optional ``shape`` starting noise instead of the per-example draws.
      chunk_size: split the batch into chunks of this many samples (the last one padded), one
        compiled call each, to bound memory; the samples equal an unchunked run's (same noise
        per example; up to float rounding, see the module docstring).
      steps_per_call: ``None`` compiles the whole loop into one ``lax.scan``; ``k`` runs a
        Python loop over compiled scans of ``k`` steps (``1``: a Python loop over a jitted
        step); ``"auto"`` (default): :func:`default_loop_options` of the backend (CPU: 4).
        The samples do not depend on it.
      unroll: ``lax.scan`` unroll factor (``True``: fully unrolled, no device loop); None:
        the backend's default (:func:`default_loop_options`) when ``steps_per_call`` is
        ``"auto"``, else ``True`` for chunked scans on CPU and 1 otherwise.

    Returns:
      :class:`SampleResult` ``(samples, trajectory)``.

    Raises:
      ValueError / TypeError: on any bad argument, before anything is compiled.
    """
    # ---- validation (pure Python / NumPy; nothing is traced before it passes)
    if not callable(apply):
        raise TypeError(f"apply must be a function apply(params, x, t, labels=None), got {apply!r}")
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"schedule must be a jaxdiff Schedule (make_schedule(...)), got {type(schedule)}"
        )
    _check_choice(sampler, "sampler", SAMPLERS)
    T = schedule.num_steps
    if steps is None:
        steps = DEFAULT_STEPS[sampler] or T
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
    check_terminal_signal(schedule, stacklevel=3)

    # ---- plan (NumPy)
    ts, t_next = step_sequence(schedule, sampler, steps, spacing)
    plan = _build_plan(
        sampler, ts, t_next, record, resample_jumps, jump_length, bool(lower_order_final)
    )
    ops = {k: jnp.asarray(v) for k, v in plan.ops.items()}
    ddpm_schedule = respaced_schedule(schedule, ts) if sampler == "ddpm" else None

    b = batch if chunk_size is None else min(chunk_size, batch)
    num_chunks = -(-batch // b)
    padded = num_chunks * b

    def pad(a):
        if a is None or padded == batch:
            return a
        return jnp.concatenate([a, jnp.zeros((padded - batch, *a.shape[1:]), a.dtype)])

    labels_p, mask_p, known_p, x_T_p = (pad(a) for a in (labels, mask, known, x_T))
    if known_p is not None:
        known_p = known_p.astype(dtype)
    cfg = _Config(
        apply=apply,
        sampler=sampler,
        chunk_shape=(b, *shape[1:]),
        dtype=dtype,
        prediction=prediction,
        variance=variance,
        clip_x0=clip_x0,
        ddim_noise=sampler == "ddim" and eta != 0,
        guided=guidance_scale != 0.0,
        conditional=num_classes is not None,
        num_classes=num_classes,
        inpaint=mask is not None,
        jumps=resample_jumps > 0,
        num_records=len(record),
        unroll=unroll,
    )
    if cfg.conditional and labels_p is None:
        labels_p = jnp.full((padded,), num_classes, jnp.int32)
    w = jnp.asarray(guidance_scale, dtype)
    eta_arr = jnp.asarray(eta, dtype)
    L = len(plan.ops["t"])
    seg = L if steps_per_call is None else steps_per_call
    bounds = [(s, min(s + seg, L)) for s in range(0, L, seg)]
    step_noise = cfg.sampler == "ddpm" or cfg.ddim_noise
    needs_keys = x_T is None or step_noise or cfg.inpaint
    segments = [{k: v[s:e] for k, v in ops.items()} for s, e in bounds]

    def part(a, c):
        return None if a is None else a[c * b : (c + 1) * b]

    samples, trajs = [], []
    for c in range(num_chunks):
        keys = None
        if needs_keys:
            rows = 1 << L.bit_length() if step_noise or cfg.inpaint else 1  # 1: x_T only
            keys = _step_keys(key, jnp.asarray(c * b, jnp.int32), b, rows)
        carry = _init_carry(
            cfg,
            schedule,
            None if keys is None else keys[0],
            part(x_T_p, c),
            int(ts[0]),
            part(mask_p, c),
            part(known_p, c),
        )
        for (s, e), seg_ops in zip(bounds, segments, strict=True):
            carry = _run_ops(
                cfg,
                params,
                schedule,
                ddpm_schedule,
                seg_ops,
                carry,
                None if keys is None or len(keys) == 1 else keys[1 + s : 1 + e],
                part(labels_p, c),
                part(mask_p, c),
                part(known_p, c),
                w,
                eta_arr,
            )
        samples.append(carry.x)
        trajs.append(carry.trajectory)
    if num_chunks == 1:
        x, traj = samples[0], trajs[0]
    else:
        x, traj = jnp.concatenate(samples), jnp.concatenate(trajs, axis=1)
    return SampleResult(x[:batch], traj[:, :batch])
