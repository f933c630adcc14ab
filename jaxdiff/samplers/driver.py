"""The driver: :func:`sample` runs any solver as compiled ``lax.scan`` calls over a plan.

:func:`sample` takes the solver as an object (its options are its fields) and the other
options as small frozen dataclasses (:mod:`jaxdiff.samplers.options`), each checked when made;
it checks them against each other in Python, lays out the run in NumPy
(:mod:`jaxdiff.samplers.plan`) and runs it with :mod:`jaxdiff.samplers.scan`. The driver owns
everything the solvers share: the scan and its chunking (:class:`Loop`), PRNG keys,
inpainting, trajectories and the cache of compiled functions, keyed by the static
configuration (model function, solver, shapes, flags), so calling :func:`sample`
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

from jaxdiff.samplers.base import Solver
from jaxdiff.samplers.options import Guidance, Inpaint, Loop, validate
from jaxdiff.samplers.path_plan import build_path_plan
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
    solver: Solver | str = "dpm++",
    steps: int | None = None,
    guidance: Guidance | None = None,
    inpaint: Inpaint | None = None,
    loop: Loop | None = None,
    record: Sequence[int] = (),
    x_T: jax.Array | None = None,
    mesh: Mesh | None = None,
) -> SampleResult:
    """Draw samples with a compiled reverse process (``lax.scan`` over the solver's steps).

    The solver is an object whose fields are its options, e.g.
    ``sample(apply, params, schedule, shape, key, solver=DDIM(eta=0.5), steps=50)``; the
    solvers (default steps and grid in brackets, network evaluations per sample without
    guidance or resampling = steps, Heun 2 steps - 1; the name of
    :data:`jaxdiff.samplers.SOLVERS` in quotes):

    - :class:`DDPM` ``"ddpm"`` [T, trailing]: ancestral sampling, DDPM eq. 11, on the
      respaced schedule when ``steps < T`` (Nichol & Dhariwal 2021); ``variance``
      ``"posterior"`` or ``"beta"``.
    - :class:`DDIM` ``"ddim"`` [50, trailing]: DDIM eq. 12 with ``eta >= 0`` (0:
      deterministic, first order).
    - :class:`DPMSolverPP2M` ``"dpm++"`` [20, logsnr]: DPM-Solver++(2M) (Lu et al. 2022,
      Algorithm 2), second order.
    - :class:`DPMSolverPP3M` ``"dpm++3m"`` [20, logsnr]: DPM-Solver++(3M), third order.
    - :class:`DPMSolverPP2MSDE` ``"dpm++2m-sde"`` [20, logsnr]: DPM-Solver++(2M) for the
      reverse SDE (stochastic).
    - :class:`Euler` ``"euler"`` [50, karras], :class:`EulerAncestral` ``"euler-a"`` [50,
      karras] (ancestral), :class:`Heun` ``"heun"`` [25, karras]: Karras et al. 2022 (EDM) in
      the sigma form; Heun is second order.
    - :class:`UniPC` ``"unipc"`` [20, logsnr]: UniPC bh2 (Zhao et al. 2023),
      predictor-corrector of order 2+1.
    - :class:`EDMSampler` ``"edm"`` [18, karras]: EDM's Algorithm 2 (Heun with churn ``s_churn``,
      ``s_tmin``, ``s_tmax``, ``s_noise``; churn needs a continuous path).
    - :class:`FlowEuler` ``"flow-euler"`` [50, linspace], :class:`FlowHeun` ``"flow-heun"``
      [25, linspace]: Euler and Heun in the path's own time with SD3's ``shift`` (continuous
      paths only).

    The DPM-Solver++ family and UniPC stop at t = 0 and, as in diffusers (their field
    ``lower_order_final=True``), lower their order at the last steps of short runs
    (DPM-Solver++ under 15 steps, UniPC always). Every solver also has the fields
    ``prediction`` (what the model predicts: ``"eps"``, ``"x0"`` or ``"v"``), ``clip_x0``
    (clip the predicted x0 to ``[-clip_x0, clip_x0]``; None: no clipping) and ``spacing``
    (the grid, see :func:`jaxdiff.samplers.sampling_timesteps`; None: the solver's default).
    Each solver is a class in ``jaxdiff.samplers`` with its equations.

    Args:
      apply: pure model function ``apply(params, x, t, labels=None) -> prediction`` with ``x``
        ``(b, ...)``, ``t`` ``(b,)`` int32 and ``labels`` ``(b,)`` int32; called without labels
        for unconditional sampling (with an objective, ``t`` is the objective's ``c``).
      params: the model's parameter pytree (a traced argument, never baked into the compile).
      schedule: the noise schedule the model was trained with, or an objective: a hashable
        object with ``.path`` (a :class:`jaxdiff.paths.GaussianPath`), ``.discrete`` (True: the
        network is evaluated at integer t only; the path is then a ``DiscreteVP``) and
        ``.denoise(net, x_t, t) -> (x0_hat, eps_hat)`` (``t`` ``(b,)`` float on the path), which
        calls ``net(x_in, c) = apply(params, x_in, c[, labels])`` with the input and
        conditioning it chooses. A continuous path is sampled on float64 times in ``[t_min,
        t_max]`` (:mod:`jaxdiff.samplers.path_plan`), from ``x_T ~ N(0, alpha^2 + sigma^2)`` at
        ``t_max``; the solver's ``prediction`` stays "eps" (the objective converts the output).
      shape: ``(B, H, W, C)`` or ``(B, D)``, the batch of samples to draw.
      key: PRNG key. Sample ``n`` uses ``fold_in(key, n)`` only (see the module docstring).
      solver: a :class:`~jaxdiff.samplers.base.Solver` object (``DDIM(eta=0.5)``), or a name
        of :data:`jaxdiff.samplers.SOLVERS` for that solver with its defaults (``"ddim"``).
      steps: number of solver steps, 1..T (any N >= 1 on a continuous path); None: the
        solver's default (above).
      guidance: a :class:`Guidance` (labels, ``num_classes``, classifier-free guidance
        scale) for a class-conditional model; None: unconditional.
      inpaint: an :class:`Inpaint` (mask, known image, RePaint resampling); the mask and
        image must have ``shape``. None: no inpainting.
      loop: a :class:`Loop` (batch chunks, steps per compiled call, unroll); None:
        ``Loop()``, the backend's defaults. The samples do not depend on it.
      record: indices into the step sequence (not timesteps) of the states to keep: entry
        ``j`` of the trajectory is the state after step ``record[j]``, at timestep
        ``step_sequence(...)[1][record[j]]``; negative indices count from the end (-1 = the
        final sample). Written into a preallocated ``(len(record), *shape)`` buffer.
      x_T: optional ``shape`` starting noise instead of the per-example draws.
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
        apply, schedule, shape, key, solver=solver, steps=steps, guidance=guidance,
        inpaint=inpaint, loop=loop, record=record, x_T=x_T, mesh=mesh,
    )  # fmt: skip
    objective = opts.objective
    if objective is None:
        check_terminal_signal(schedule, stacklevel=3)
    dtype = opts.dtype
    make, source = build_plan, schedule
    if objective is not None and objective.discrete:
        source = objective.path.schedule
    elif objective is not None:
        make, source = build_path_plan, objective.path
    plan = make(source, opts.solver, opts.steps, opts.solver.grid, record=opts.record,
                resample_jumps=opts.resample_jumps, jump_length=opts.jump_length)  # fmt: skip
    ops = {k: jnp.asarray(v, dtype if v.dtype == np.float64 else None) for k, v in plan.ops.items()}
    coefs = {k: jnp.asarray(v, dtype) for k, v in plan.coefficients.items()}
    return run_chunks(apply, opts, arrays, params, plan, ops, coefs, dtype)
