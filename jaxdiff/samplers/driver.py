"""The driver: :func:`sample` runs any solver as compiled ``lax.scan`` calls over a plan.

:func:`sample` validates every argument in Python (:mod:`jaxdiff.samplers.options`), lays out
the run in NumPy (:mod:`jaxdiff.samplers.plan`) and runs it with :mod:`jaxdiff.samplers.scan`.
The driver owns everything the solvers share: the scan and its chunking (``steps_per_call``,
``unroll``), PRNG keys, inpainting, trajectories and the cache of compiled functions, keyed by
the static configuration (model function, solver, shapes, flags), so calling :func:`sample`
again with new ``params``, a new ``key``, new labels or another guidance scale does not
re-trace.

Randomness is per example: example ``n`` of the batch (its index in the full batch) owns the key
``ek = fold_in(key, n)``; its x_T (and the first re-noising of known pixels) is drawn from
``fold_in(ek, 0)`` and all the noise of scan step ``j`` from ``fold_in(ek, j + 1)``. So a sample
depends only on ``key`` and its index, never on ``chunk_size``, ``steps_per_call`` or the other
examples in the batch: the same key gives bit-identical samples, and other chunk sizes or loop
structures give the same samples up to float rounding (XLA may round the last bit differently
for arrays of another shape, and a conv net's batch size can change its summation order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxdiff.samplers.options import validate
from jaxdiff.samplers.plan import build_plan
from jaxdiff.samplers.scan import SampleResult, run_chunks
from jaxdiff.schedules import Schedule, check_terminal_signal

__all__ = ["SampleResult", "sample"]


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
    mesh: Mesh | None = None,
) -> SampleResult:
    """Draw samples with a compiled reverse process (``lax.scan`` over the solver's steps).

    Samplers (``sampler=``; default steps and grid in brackets, network evaluations per sample
    without guidance or resampling = steps, Heun 2 steps - 1):

    - ``"ddpm"`` [T, trailing]: ancestral sampling, DDPM eq. 11, on the respaced schedule when
      ``steps < T`` (Nichol & Dhariwal 2021); ``variance`` ``"posterior"`` or ``"beta"``.
    - ``"ddim"`` [50, trailing]: DDIM eq. 12 with ``eta >= 0`` (0: deterministic, first order).
    - ``"dpm++"`` [20, logsnr]: DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), second order.
    - ``"dpm++3m"`` [20, logsnr]: DPM-Solver++(3M), third order.
    - ``"dpm++2m-sde"`` [20, logsnr]: DPM-Solver++(2M) for the reverse SDE (stochastic).
    - ``"euler"`` [50, karras], ``"euler-a"`` [50, karras] (ancestral), ``"heun"`` [25, karras]:
      Karras et al. 2022 (EDM) in the sigma form; Heun is second order.
    - ``"unipc"`` [20, logsnr]: UniPC bh2 (Zhao et al. 2023), predictor-corrector of order 2+1.

    The DPM-Solver++ family and UniPC stop at t = 0 and, as in diffusers
    (``lower_order_final=True``), lower their order at the last steps of short runs (DPM-Solver++
    under 15 steps, UniPC always). Each solver is a class in ``jaxdiff.samplers`` with its
    equations.

    Args:
      apply: pure model function ``apply(params, x, t, labels=None) -> prediction`` with ``x``
        ``(b, ...)``, ``t`` ``(b,)`` int32 and ``labels`` ``(b,)`` int32; called without labels
        for unconditional sampling.
      params: the model's parameter pytree (a traced argument, never baked into the compile).
      schedule: the noise schedule the model was trained with.
      shape: ``(B, H, W, C)`` or ``(B, D)``, the batch of samples to draw.
      key: PRNG key. Sample ``n`` uses ``fold_in(key, n)`` only (see the module docstring).
      sampler: one of :data:`jaxdiff.samplers.SAMPLERS`.
      steps: number of solver steps, 1..T; None: the solver's default (above).
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
      known: ``shape`` float image whose known pixels are kept: after every network evaluation
        they are replaced by a draw of ``q(x_t | known)`` at the step's target (RePaint), and
        after the last step by ``known`` itself, so they equal ``known`` bit for bit.
      resample_jumps: RePaint resampling (Lugmayr et al. 2022): after every ``jump_length``
        steps, re-noise back ``jump_length`` steps with ``q(x_t | x_t')`` and redo them, this
        many times (RePaint's ``U = resample_jumps + 1``); 0 = plain replacement.
      jump_length: RePaint's jump length ``j`` (in solver steps).
      record: indices into the step sequence (not timesteps) of the states to keep: entry
        ``j`` of the trajectory is the state after step ``record[j]``, at timestep
        ``step_sequence(...)[1][record[j]]``; negative indices count from the end (-1 = the
        final sample). Written into a preallocated ``(len(record), *shape)`` buffer.
      prediction: what the model predicts: ``"eps"``, ``"x0"`` or ``"v"``.
      eta: DDIM stochasticity (>= 0); only for ``sampler="ddim"``.
      variance: DDPM's ``"posterior"`` or ``"beta"``.
      spacing: ``"leading"``, ``"trailing"``, ``"linspace"``, ``"logsnr"`` or ``"karras"``
        (see :func:`jaxdiff.samplers.sampling_timesteps`); None: the solver's default.
      clip_x0: clip the predicted x0 to ``[-clip_x0, clip_x0]`` at every step (1.0 for
        images in [-1, 1]); None = no clipping.
      lower_order_final: lower order at the last steps of short runs (see above).
      x_T: optional ``shape`` starting noise instead of the per-example draws.
      chunk_size: split the batch into chunks of this many samples (the last one padded), one
        compiled call each, to bound memory; the samples equal an unchunked run's (same noise
        per example; up to float rounding, see the module docstring).
      steps_per_call: ``None`` compiles the whole loop into one ``lax.scan``; ``k`` runs a
        Python loop over compiled scans of ``k`` network evaluations (``1``: a Python loop over
        a jitted step); ``"auto"`` (default): :func:`jaxdiff.samplers.default_loop_options` of
        the backend (CPU: 4). The samples do not depend on it.
      unroll: ``lax.scan`` unroll factor (``True``: fully unrolled, no device loop); None:
        the backend's default when ``steps_per_call`` is ``"auto"``, else ``True`` for chunked
        scans on CPU and 1 otherwise.

      mesh: split every batch (chunk) over this mesh's ``"data"`` axis, ``b / n`` examples per
        device, each device running the whole loop on its share with no communication (the
        parameters are copied to every device). ``jaxdiff.sharding.make_mesh()`` for all
        devices, or a :class:`jaxdiff.train.Trainer`'s ``.mesh``. A chunk is rounded up to a
        multiple of the device count. In a multi-process run every process calls ``sample``
        with the same arguments and the results span all processes: read them with
        :func:`jaxdiff.sharding.gather`. None: one device.

    Returns:
      :class:`SampleResult` ``(samples, trajectory)``; with ``mesh``, global arrays on its
      devices (split along the example axis when no chunk was padded).

    Raises:
      ValueError / TypeError: on any bad argument, before anything is compiled.
    """
    opts, arrays = validate(
        apply, schedule, shape, key, sampler=sampler, steps=steps, labels=labels,
        num_classes=num_classes, guidance_scale=guidance_scale, mask=mask, known=known,
        resample_jumps=resample_jumps, jump_length=jump_length, record=record,
        prediction=prediction, eta=eta, variance=variance, spacing=spacing, clip_x0=clip_x0,
        lower_order_final=lower_order_final, x_T=x_T, chunk_size=chunk_size,
        steps_per_call=steps_per_call, unroll=unroll, mesh=mesh,
    )  # fmt: skip
    check_terminal_signal(schedule, stacklevel=3)
    dtype = jnp.dtype(schedule.betas.dtype)
    plan = build_plan(schedule, opts.solver, opts.steps, opts.spacing, record=opts.record,
                      resample_jumps=opts.resample_jumps, jump_length=opts.jump_length,
                      lower_order_final=opts.lower_order_final)  # fmt: skip
    ops = {k: jnp.asarray(v, dtype if v.dtype == np.float64 else None) for k, v in plan.ops.items()}
    coefs = {k: jnp.asarray(v, dtype) for k, v in plan.coefficients.items()}
    return run_chunks(apply, opts, arrays, params, plan, ops, coefs, dtype)
