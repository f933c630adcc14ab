"""Timestep grids: which timesteps a sampler visits, and the noise levels there (NumPy, float64).

Timesteps follow the library convention: ``t`` in ``0..T-1``, ``t = 0`` least noisy, and ``-1``
as a step target means the clean sample x0 (``alpha = 1``, ``sigma = 0``). Every grid is made
of integer timesteps, so the network is always evaluated at a noise level it was trained on and
the solvers use exactly that level (``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)``).
"""

from __future__ import annotations

import numbers

import numpy as np

from jaxdiff.schedules import Schedule, schedule_from_betas

__all__ = [
    "KARRAS_RHO",
    "SPACINGS",
    "alpha_sigma",
    "karras_sigmas",
    "respaced_schedule",
    "sampling_timesteps",
]

SPACINGS = ("leading", "trailing", "linspace", "logsnr", "karras")
KARRAS_RHO = 7.0


def _log_alphas_cumprod(schedule: Schedule) -> np.ndarray:
    return np.asarray(schedule.log_alphas_cumprod, np.float64)


def alpha_sigma(schedule: Schedule, t) -> tuple[np.ndarray, np.ndarray]:
    """``(alpha_t, sigma_t)`` at integer timesteps ``t`` (``-1``: the clean sample, (1, 0)).

    ``alpha_t = sqrt(abar_t)`` and ``sigma_t = sqrt(1 - abar_t)`` (DDPM eq. 4), float64, from
    the schedule's ``log_alphas_cumprod``. ``t``: int array of any shape, values in ``[-1, T)``.
    """
    t = np.asarray(t, np.int64)
    log_abar = _log_alphas_cumprod(schedule)[np.maximum(t, 0)]
    clean = t < 0
    alpha = np.where(clean, 1.0, np.exp(0.5 * log_abar))
    sigma = np.where(clean, 0.0, np.sqrt(-np.expm1(log_abar)))
    return alpha, sigma


def _check_steps(steps, T: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be an int, got {steps!r} of type {type(steps).__name__}")
    if not 1 <= steps <= T:
        raise ValueError(
            f"steps must lie in [1, {T}] for a schedule with T={T} steps, got steps={steps}"
        )
    return int(steps)


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = KARRAS_RHO):
    """The EDM noise levels (Karras et al. 2022, eq. 5), decreasing, ``(n,)`` float64.

    ``sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``
    for ``i = 0..n-1`` (``n = 1``: just ``sigma_max``). Here sigma is the variance-exploding
    level ``sigma_t / alpha_t``.
    """
    ramp = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def _snap_decreasing(real_t: np.ndarray, T: int) -> np.ndarray:
    """Round real timesteps (decreasing, first T-1, last 0) to distinct decreasing ints."""
    grid = np.round(real_t).astype(np.int64)
    n = len(grid)
    grid[0], grid[-1] = T - 1, 0
    # Keep room for the points on either side (n <= T points in [0, T - 1]), then push
    # collisions upwards; the bound keeps grid[k] <= T - 1 - k.
    k = np.arange(n)
    grid = np.clip(grid, n - 1 - k, T - 1 - k)
    for k in range(n - 2, -1, -1):
        grid[k] = max(grid[k], grid[k + 1] + 1)
    return grid


def sampling_timesteps(schedule: Schedule, steps: int, spacing: str) -> np.ndarray:
    """The ``steps`` timesteps a sampler starts its steps at, in decreasing order.

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
    - ``"karras"``: the N noise levels of :func:`karras_sigmas` (rho = 7) between the
      schedule's ``sigma_t / alpha_t`` at ``T - 1`` and at 0, each mapped to the nearest
      timestep by interpolating ``log(sigma / alpha)`` (as diffusers' ``_sigma_to_t``, then
      rounded and made strictly decreasing). Unlike diffusers, the solver then uses the noise
      level of that timestep, so the network's input and the solver agree.

    With ``N = T`` all of them give ``T-1, ..., 0``.

    Args:
      schedule: the noise schedule (T and, for ``"logsnr"``/``"karras"``, its noise levels).
      steps: N in ``[1, T]``.
      spacing: one of :data:`SPACINGS`.

    Returns:
      ``(N,)`` int64 NumPy array of distinct timesteps in ``[0, T)``, decreasing.
    """
    T = schedule.num_steps
    N = _check_steps(steps, T)
    if not isinstance(spacing, str) or spacing not in SPACINGS:
        raise ValueError(
            f"unknown spacing {spacing!r}; choose one of {', '.join(map(repr, SPACINGS))}"
        )
    i = np.arange(N)
    log_abar = _log_alphas_cumprod(schedule)
    # log of the variance-exploding level sigma_t / alpha_t = exp(-lambda_t), increasing in t
    log_ve = 0.5 * (np.log(-np.expm1(log_abar)) - log_abar)
    steps_desc = np.arange(T - 1, -1, -1, dtype=np.float64)
    if N == T:
        ts = T - 1 - i
    elif spacing == "leading":
        ts = (N - 1 - i) * (T // N)
    elif spacing == "trailing":
        ts = np.round(T - i * (T / N)).astype(np.int64) - 1
    elif spacing == "linspace":
        ts = np.round(np.linspace(T - 1, 0, N)).astype(np.int64)
    elif spacing == "logsnr":
        targets = np.linspace(-log_ve[-1], -log_ve[0], N + 1)  # lambda, increasing
        real_t = np.interp(targets, -log_ve[::-1], steps_desc)
        ts = _snap_decreasing(real_t, T)[:N]  # N < T here, so N + 1 points fit
    elif N == 1:
        ts = np.array([T - 1])
    else:  # karras
        sig = karras_sigmas(np.exp(log_ve[0]), np.exp(log_ve[-1]), N)
        real_t = np.interp(np.log(sig)[::-1], log_ve, np.arange(T, dtype=np.float64))[::-1]
        ts = _snap_decreasing(real_t, T)
    ts = np.asarray(ts, dtype=np.int64)
    assert len(ts) == N and np.all(np.diff(ts) < 0) and 0 <= ts[-1] and ts[0] < T, ts
    return ts


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
    log_abar = _log_alphas_cumprod(schedule)[asc]
    betas = -np.expm1(log_abar - np.append(0.0, log_abar[:-1]))
    return schedule_from_betas(betas, kind=f"{schedule.kind}-respaced", dtype=schedule.betas.dtype)
