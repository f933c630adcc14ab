"""The plan: every scan step of a sampling run, laid out in NumPy before anything is traced.

A run is N solver steps (``t[i] -> t_next[i]``, :func:`step_sequence`); RePaint may revisit
steps (:func:`jaxdiff.samplers.repaint.visit_order`) and a multi-stage solver (Heun) takes
several network evaluations per step. The plan has one row per network evaluation ("scan
step") with where the network is evaluated, the solver's coefficients there
(:meth:`jaxdiff.samplers.base.Solver.coefficients`) and the bookkeeping of inpainting and
trajectories. The driver only slices these arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdiff.samplers.base import Points, Solver
from jaxdiff.samplers.grids import alpha_sigma, sampling_timesteps
from jaxdiff.samplers.repaint import visit_order
from jaxdiff.schedules import Schedule

__all__ = ["Grid", "Plan", "build_plan", "layout", "schedule_grid", "step_sequence"]

_HISTORY = 3  # start points of previous steps kept in Points (UniPC's corrector needs 2)


def step_sequence(
    schedule: Schedule, solver: Solver, steps: int, spacing: str
) -> tuple[np.ndarray, np.ndarray]:
    """The step sequence of a solver: step ``i`` goes from ``t[i]`` to ``t_next[i]``.

    ``t`` is :func:`jaxdiff.samplers.grids.sampling_timesteps`, ``t_next[i] = t[i + 1]``, and
    the last target is ``-1`` (the clean sample) for solvers with ``final = "clean"`` (DDPM,
    DDIM, Euler, Heun: DDPM's last step adds no noise, DDIM jumps to ``abar = 1``). For
    ``final = "sigma_min"`` (the DPM-Solver++ family, UniPC) it is ``0`` when ``t[-1] > 0``,
    so the last step is an ordinary solver step to the least noisy timestep and the output is
    x at t = 0 (diffusers' ``final_sigmas_type="sigma_min"``); when ``t[-1]`` is already 0 the
    last step goes to x0, where these solvers reduce to the data prediction
    (``final_sigmas_type="zero"``).

    Returns:
      ``(t, t_next)``, two ``(N,)`` int64 NumPy arrays.
    """
    ts = sampling_timesteps(schedule, steps, spacing)
    final = 0 if solver.final == "sigma_min" and ts[-1] > 0 else -1
    return ts, np.append(ts[1:], final).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Plan:
    """One row per scan step (network evaluation); ``L = len(plan)``.

    Attributes:
      timesteps, targets: ``(N,)`` the step sequence.
      points: the grid each scan step sees (:class:`~jaxdiff.samplers.base.Points`).
      ops: ``(L,)`` arrays the driver needs: ``t_eval`` (int), ``alpha_eval``, ``sigma_eval``
        (where the network is evaluated), ``alpha_next``, ``sigma_next`` and ``paste`` (the
        target, for inpainting), ``jump``, ``jump_scale``, ``jump_std`` (RePaint jumps),
        ``slot`` (trajectory index written after the scan step, -1 for none).
      coefficients: ``(L,)`` float64 arrays of the solver.
      prior_std: the std of the starting noise x_T (None: 1, a ``Schedule``'s).
    """

    timesteps: np.ndarray
    targets: np.ndarray
    points: Points
    ops: dict[str, np.ndarray]
    coefficients: dict[str, np.ndarray]
    prior_std: float | None = None

    def __len__(self) -> int:
        return len(self.ops["t_eval"])


@dataclasses.dataclass(frozen=True)
class Grid:
    """The N solver steps of a run in float64 NumPy, whatever made them (a ``Schedule``'s
    integer timesteps or a path's continuous times).

    Attributes:
      timesteps, targets: ``(N,)`` the step sequence as :func:`jaxdiff.samplers.sample` reports
        it (ints for a schedule, -1 = clean; float times for a path).
      t_s, alpha_s, sigma_s: ``(N,)`` where each step starts (after EDM's churn, if any).
      start_alpha, start_sigma: ``(N,)`` the grid point the step starts at before any churn
        (RePaint's jumps re-noise to it).
      t_t, alpha_t, sigma_t, clean: ``(N,)`` each step's target; ``clean`` where it is x0.
      rates: ``(dalpha_s, dsigma_s, dalpha_t, dsigma_t)``, each ``(N,)``, or None (no rates).
      vp: every point has ``alpha^2 + sigma^2 = 1``.
      churn_scale, churn_std: ``(N,)`` or None: before stage 0 of step i, ``x <- churn_scale[i]
        x + churn_std[i] z`` (Karras et al. 2022, Alg. 2, lines 4-6).
      prior_std: the std of the starting noise (None: 1).
    """

    timesteps: np.ndarray
    targets: np.ndarray
    t_s: np.ndarray
    alpha_s: np.ndarray
    sigma_s: np.ndarray
    start_alpha: np.ndarray
    start_sigma: np.ndarray
    t_t: np.ndarray
    alpha_t: np.ndarray
    sigma_t: np.ndarray
    clean: np.ndarray
    rates: tuple[np.ndarray, ...] | None = None
    vp: bool = True
    churn_scale: np.ndarray | None = None
    churn_std: np.ndarray | None = None
    prior_std: float | None = None


def schedule_grid(schedule: Schedule, solver: Solver, steps: int, spacing: str) -> Grid:
    """The :class:`Grid` of a ``Schedule``: integer timesteps (:func:`step_sequence`)."""
    ts, t_next = step_sequence(schedule, solver, steps, spacing)
    a_s, s_s = alpha_sigma(schedule, ts)
    a_t, s_t = alpha_sigma(schedule, t_next)
    if np.any(solver.churn(s_s / a_s, steps) > 0):
        raise ValueError(
            f"{solver.name}'s churn needs a continuous path (a Schedule has no timestep at the "
            "churned noise level): pass an objective, or s_churn=0"
        )
    return Grid(ts, t_next, ts.astype(np.float64), a_s, s_s, a_s, s_s,
                t_next.astype(np.float64), a_t, s_t, t_next < 0)  # fmt: skip


def build_plan(
    schedule: Schedule,
    solver: Solver,
    steps: int,
    spacing: str,
    *,
    record: tuple[int, ...] = (),
    resample_jumps: int = 0,
    jump_length: int = 1,
    lower_order_final: bool | None = None,
) -> Plan:
    """Lay out a run (arguments as in :func:`jaxdiff.samplers.sample`, already validated).

    ``lower_order_final``: None takes the solver's field (True for solvers without one).
    """
    grid = schedule_grid(schedule, solver, steps, spacing)
    return layout(grid, solver, record=record, resample_jumps=resample_jumps,
                  jump_length=jump_length, lower_order_final=lower_order_final)  # fmt: skip


def layout(
    grid: Grid,
    solver: Solver,
    *,
    record: tuple[int, ...] = (),
    resample_jumps: int = 0,
    jump_length: int = 1,
    lower_order_final: bool | None = None,
) -> Plan:
    """The :class:`Plan` of ``grid``: one row per network evaluation (see :func:`build_plan`)."""
    if lower_order_final is None:
        lower_order_final = getattr(solver, "lower_order_final", True)
    ts, t_next = grid.timesteps, grid.targets
    N = len(ts)
    a_s, s_s, a_t, s_t = grid.alpha_s, grid.sigma_s, grid.alpha_t, grid.sigma_t
    with np.errstate(divide="ignore"):
        lam_s, lam_t = np.log(a_s / s_s), np.log(a_t / s_t)  # lam_t = inf at the clean sample
    clean = grid.clean
    visits, jump_from = visit_order(N, resample_jumps, jump_length)

    rows: list[dict] = []
    history: list[int] = []  # start points of the previous steps since the last (re)start
    prev_order = 0
    for i, jf in zip(visits, jump_from, strict=True):
        if not rows or jf >= 0:
            history, prev_order = [], 0  # the multistep history is stale after a jump back
        order = min(solver.max_order, len(history) + 1)
        if clean[i]:
            order = 1  # to sigma = 0 only the first-order update is defined
        if lower_order_final and solver.lower_order_final_below is not None:
            if N < solver.lower_order_final_below:
                order = min(order, N - i)
        prev = (history + [-1] * _HISTORY)[:_HISTORY]
        num_stages = 1 if clean[i] else solver.stages
        for stage in range(num_stages):
            rows.append(dict(step=i, stage=stage, order=order, prev_order=prev_order,
                             prev=prev, jump_from=jf if stage == 0 else -1,
                             last_stage=stage == num_stages - 1))  # fmt: skip
        history = [int(i), *history]
        prev_order = order

    step = np.array([r["step"] for r in rows], np.int64)
    stage = np.array([r["stage"] for r in rows], np.int64)
    prev = np.array([r["prev"] for r in rows], np.int64).reshape(len(rows), _HISTORY)
    jump = np.array([r["jump_from"] for r in rows], np.int64)
    last_stage = np.array([r["last_stage"] for r in rows], np.bool_)

    def at_prev(values):
        return np.where(prev >= 0, values[np.maximum(prev, 0)], np.nan)

    rates = grid.rates or (np.full(N, np.nan),) * 4
    points = Points(
        alpha_s=a_s[step], sigma_s=s_s[step], lam_s=lam_s[step],
        alpha_t=a_t[step], sigma_t=s_t[step], lam_t=lam_t[step],
        clean=clean[step], stage=stage,
        order=np.array([r["order"] for r in rows], np.int64),
        lam_prev=at_prev(lam_s), sigma_prev=at_prev(s_s),
        order_prev=np.array([r["prev_order"] for r in rows], np.int64),
        t_s=grid.t_s[step], t_t=grid.t_t[step],
        dalpha_s=rates[0][step], dsigma_s=rates[1][step],
        dalpha_t=rates[2][step], dsigma_t=rates[3][step], vp=grid.vp,
    )  # fmt: skip
    coefficients = solver.coefficients(points)
    bad = [k for k, v in coefficients.items() if not np.all(np.isfinite(v))]
    if bad:  # a solver bug, never a user error: fail before anything runs
        raise FloatingPointError(f"{solver.name}: non-finite coefficients {bad} on this grid")

    # stage 0 evaluates the network at the step's start, later stages at its target
    first = stage == 0
    t_eval = np.where(first, grid.t_s[step], grid.t_t[step])
    if np.issubdtype(ts.dtype, np.integer):
        t_eval = np.where(first, ts[step], t_next[step])
    a_e = np.where(first, a_s[step], a_t[step])
    s_e = np.where(first, s_s[step], s_t[step])
    jf = np.maximum(jump, 0)
    # q(x_t | x_t') of DDPM eq. 2 iterated: scale sqrt(abar_t / abar_t') = alpha_t / alpha_t'
    jump_scale = np.where(jump >= 0, grid.start_alpha[step] / a_t[jf], 1.0)
    if grid.vp:  # std sqrt(1 - that^2)
        jump_std = np.sqrt(-np.expm1(2 * np.log(jump_scale)))
    else:  # std^2 = sigma_t^2 - scale^2 sigma_t'^2, the same on a variance-preserving path
        var = grid.start_sigma[step] ** 2 - (jump_scale * s_t[jf]) ** 2
        jump_std = np.sqrt(np.where(jump >= 0, np.maximum(var, 0.0), 0.0))
    jumping = jump >= 0
    if grid.churn_scale is not None:  # then EDM's churn: two affine maps with independent noise
        c_scale = np.where(first, grid.churn_scale[step], 1.0)
        c_std = np.where(first, grid.churn_std[step], 0.0)
        jump_std = np.sqrt((c_scale * jump_std) ** 2 + c_std**2)
        jump_scale = c_scale * jump_scale
        jumping = jumping | (first & (grid.churn_std[step] > 0))
    slot = np.full(len(rows), -1, np.int64)
    for j, r in enumerate(record):
        slot[np.flatnonzero((step == r) & last_stage)[-1]] = j  # the last visit of step r
    ops = dict(
        t_eval=t_eval, alpha_eval=a_e, sigma_eval=s_e,
        alpha_next=a_t[step], sigma_next=s_t[step],
        paste=last_stage & ((step == N - 1) | clean[step]),
        jump=jumping, jump_scale=jump_scale, jump_std=jump_std, slot=slot,
    )  # fmt: skip
    return Plan(ts, t_next, points, ops, coefficients, grid.prior_std)
