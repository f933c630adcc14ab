"""Grids on a continuous Gaussian path (:mod:`jaxdiff.paths`): float64 times in [t_min, t_max].

A path ``x_t = alpha(t) x0 + sigma(t) eps`` has no integer timesteps: the grid is a decreasing
array of float64 times from ``t_max`` to ``t_min``, with the noise levels and their rates
``alpha'(t)``, ``sigma'(t)`` read from the path's functions (in float64, ``jax.enable_x64``).
The spacings, by the solver's ``spacing``:

- ``"linspace"`` (and ``"trailing"``, ``"leading"``, which differ from it only in how they
  round to a schedule's integers): uniform in t;
- ``"logsnr"``: uniform in ``lambda = log(alpha / sigma)`` (Lu et al. 2022, sec. 3.4);
- ``"karras"``: Karras et al. 2022, eq. 5 with rho = 7, in ``k = sigma / alpha`` between
  ``k(t_min)`` and ``k(t_max)`` (on :class:`jaxdiff.paths.EDM`, ``k = t``: EDM's grid exactly).

A solver with a ``shift`` field (the flow solvers) then maps the normalised time ``u = (t -
t_min) / (t_max - t_min)`` to ``shift u / (1 + (shift - 1) u)`` (Esser et al. 2024, SD3, eq. 23:
``shift > 1`` spends more steps at high noise). Solvers with ``final = "clean"`` take N points
and a last step to the clean sample when ``sigma(t_min) > 0`` (EDM's Algorithm 1, ``t_N = 0``);
otherwise the grid has N + 1 points and the last step goes to ``t_min`` (the clean sample when
``sigma(t_min) = 0``, as for :class:`~jaxdiff.paths.RectifiedFlow`). The clean sample is
``t = 0`` (where every path of :mod:`jaxdiff.paths` has ``alpha = 1``, ``sigma = 0``) or
``t_min`` when ``sigma(t_min)`` is already 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.samplers.base import Solver
from jaxdiff.samplers.grids import KARRAS_RHO, karras_sigmas
from jaxdiff.samplers.plan import Grid, Plan, layout

__all__ = ["build_path_plan", "grid_from_times", "path_grid", "path_levels", "path_times"]

_BISECTIONS = 200  # float64 bisection: the bracket shrinks to adjacent floats well before this


def _levels(path, t):
    one = jnp.ones_like(t)
    a, da = jax.jvp(lambda u: jnp.asarray(path.alpha(u), jnp.float64), (t,), (one,))
    s, ds = jax.jvp(lambda u: jnp.asarray(path.sigma(u), jnp.float64), (t,), (one,))
    return a, s, da, ds


_levels_jit = jax.jit(_levels, static_argnums=0)


def path_levels(path, t) -> tuple[np.ndarray, ...]:
    """``(alpha, sigma, dalpha/dt, dsigma/dt)`` of ``path`` at times ``t`` (float64 NumPy).

    Compiled once per path and shape (paths are frozen dataclasses); a path that cannot be
    hashed is evaluated eagerly."""
    t = np.asarray(t, np.float64)
    n = t.size
    size = max(16, 1 << (n - 1).bit_length())  # padded: few shapes, few compiles
    padded = np.concatenate([t.ravel(), np.full(size - n, t.ravel()[-1] if n else 0.0)])
    with jax.enable_x64(True):
        tt = jnp.asarray(padded)
        try:
            out = _levels_jit(path, tt)
        except (TypeError, ValueError):  # unhashable path
            out = _levels(path, tt)
        return tuple(np.asarray(v, np.float64)[:n].reshape(t.shape) for v in out)


def _log_k(path, t) -> np.ndarray:
    a, s = path_levels(path, t)[:2]
    with np.errstate(divide="ignore"):
        return np.log(s) - np.log(a)


def _invert_log_k(path, targets: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Times in ``[lo, hi]`` where ``log(sigma / alpha)`` (increasing in t) equals ``targets``."""
    lo, hi = np.full(len(targets), lo), np.full(len(targets), hi)
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        above = _log_k(path, mid) > targets
        lo, hi = np.where(above, lo, mid), np.where(above, mid, hi)
        if np.all(np.nextafter(lo, hi) >= hi):
            break
    return 0.5 * (lo + hi)


def path_times(path, n: int, spacing: str, shift: float = 1.0) -> np.ndarray:
    """``n >= 2`` times from ``t_max`` down to ``t_min`` (float64, decreasing; both ends exact).

    Args:
      path: a :class:`jaxdiff.paths.GaussianPath`.
      n: number of points.
      spacing: ``"linspace"`` (or ``"trailing"``, ``"leading"``: the same here), ``"logsnr"`` or
        ``"karras"`` (see the module docstring).
      shift: SD3's time shift of the normalised time (1: none).
    """
    t_min, t_max = float(path.t_min), float(path.t_max)
    if spacing in ("linspace", "trailing", "leading"):
        ts = np.linspace(t_max, t_min, n)
    else:
        lk_min, lk_max = _log_k(path, np.array([t_min, t_max]))
        with np.errstate(all="ignore"):
            if spacing == "logsnr":
                targets = np.linspace(lk_max, lk_min, n)  # uniform in lambda = -log k
            elif spacing == "karras":  # (k_min = 0 is fine: Karras' formula reaches it)
                targets = np.log(karras_sigmas(np.exp(lk_min), np.exp(lk_max), n, KARRAS_RHO))
                lk_min = max(lk_min, np.finfo(np.float64).min)
            else:
                raise ValueError(f"unknown spacing {spacing!r} for a path")
        if not np.all(np.isfinite(targets[1:-1])) or not np.isfinite([lk_min, lk_max]).all():
            raise ValueError(
                f"the {spacing!r} grid needs sigma / alpha finite and > 0 at both ends of the "
                f"path, got log(sigma / alpha) from {lk_min} to {lk_max} on [{t_min}, {t_max}]: "
                "end the path inside (e.g. CosineVP(t_min=1e-3), RectifiedFlow(t_max=0.999)) "
                "or pass spacing='linspace'"
            )
        ts = np.concatenate([[t_max], _invert_log_k(path, targets[1:-1], t_min, t_max), [t_min]])
    if shift != 1.0:
        u = (ts - t_min) / (t_max - t_min)
        ts = t_min + (t_max - t_min) * (shift * u / (1 + (shift - 1) * u))
    return ts


def _churned_times(path, ts: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """The times where ``k = sigma / alpha`` is ``k(ts) (1 + gamma)`` (EDM's ``t_hat``)."""
    target = _log_k(path, ts) + np.log1p(gamma)
    t_min, hi = float(path.t_min), float(path.t_max)
    for _ in range(64):  # widen the bracket past t_max where the path goes on rising (EDM)
        lk = _log_k(path, np.array([hi]))[0]
        if np.isfinite(lk) and lk >= target.max():
            break
        hi = t_min + 2 * (hi - t_min)
    else:
        raise ValueError(
            f"EDM churn raises sigma / alpha to {np.exp(target.max()):.4g}, beyond where this "
            f"path goes ({np.exp(_log_k(path, np.array([path.t_max]))[0]):.4g} at t_max): "
            "lower s_tmax so that s_tmax (1 + gamma) stays below it"
        )
    out = _invert_log_k(path, target, t_min, hi)
    return np.where(gamma > 0, out, ts)


def path_grid(path, solver: Solver, steps: int, spacing: str) -> Grid:
    """The :class:`~jaxdiff.samplers.plan.Grid` of ``steps`` solver steps on ``path``."""
    t_min = float(path.t_min)
    sigma_end = path_levels(path, np.array([t_min]))[1][0]
    to_clean = solver.final == "clean" and sigma_end > 0
    shift = float(getattr(solver, "shift", 1.0))
    points = path_times(path, steps if to_clean else steps + 1, spacing, shift)
    return grid_from_times(path, solver, np.append(points, 0.0) if to_clean else points)


def grid_from_times(path, solver: Solver, times) -> Grid:
    """The :class:`~jaxdiff.samplers.plan.Grid` of the steps ``times[i] -> times[i + 1]``.

    ``times``: ``(N + 1,)`` decreasing float64 times on ``path``; a last time where ``sigma =
    0`` (``t = 0`` for the paths of :mod:`jaxdiff.paths`) is the clean sample. Any grid, e.g.
    another library's, runs through :func:`jaxdiff.samplers.plan.layout` with it.
    """
    times = np.asarray(times, np.float64)
    if times.ndim != 1 or len(times) < 2 or not np.all(np.diff(times) < 0):
        raise ValueError(f"times must be a decreasing (N + 1,) array, N >= 1, got {times}")
    ts, t_next = times[:-1], times[1:]
    steps = len(ts)
    start = path_levels(path, ts)
    a_t, s_t, da_t, ds_t = path_levels(path, t_next)
    clean = s_t == 0
    a_t = np.where(clean, 1.0, a_t)
    with np.errstate(divide="ignore"):  # k = inf at alpha = 0 (the rectified flow's t = 1)
        gamma = np.asarray(solver.churn(start[1] / start[0], steps), np.float64)
    churn_scale = churn_std = None
    t_s = ts
    a_s, s_s, da_s, ds_s = start
    if np.any(gamma > 0):
        t_s = _churned_times(path, ts, gamma)
        a_s, s_s, da_s, ds_s = path_levels(path, t_s)
        # y = x / alpha: y_hat = y + sqrt(k_hat^2 - k^2) S_noise z (Alg. 2, line 5)
        k, k_hat = start[1] / start[0], s_s / a_s
        churn_scale = a_s / start[0]
        s_noise = getattr(solver, "s_noise", 1.0)
        churn_std = a_s * np.sqrt(np.maximum(k_hat**2 - k**2, 0.0)) * s_noise
    all_a, all_s = np.concatenate([a_s, a_t[~clean]]), np.concatenate([s_s, s_t[~clean]])
    vp = bool(np.all(np.abs(all_a**2 + all_s**2 - 1.0) < 1e-12))
    # x_T ~ N(0, alpha^2 + sigma^2) at t_max: unit-variance data's marginal (1 on a VP path,
    # sqrt(sigma_max^2 + 1) on EDM's, diffusers' init_noise_sigma)
    prior_std = float(np.hypot(start[0][0], start[1][0]))
    return Grid(ts, t_next, t_s, a_s, s_s, start[0], start[1], t_next, a_t, s_t, clean,
                (da_s, ds_s, da_t, ds_t), vp, churn_scale, churn_std, prior_std)  # fmt: skip


def build_path_plan(
    path,
    solver: Solver,
    steps: int,
    spacing: str,
    *,
    record: tuple[int, ...] = (),
    resample_jumps: int = 0,
    jump_length: int = 1,
    lower_order_final: bool | None = None,
) -> Plan:
    """:func:`jaxdiff.samplers.build_plan` for a continuous path (``t_eval`` float64 times)."""
    grid = path_grid(path, solver, steps, spacing)
    try:  # (alpha = 0 gives infinities that the check of the coefficients reports below)
        with np.errstate(divide="ignore", invalid="ignore"):
            return layout(grid, solver, record=record, resample_jumps=resample_jumps,
                          jump_length=jump_length,
                          lower_order_final=lower_order_final)  # fmt: skip
    except FloatingPointError as e:
        if grid.start_alpha[0] != 0:
            raise
        raise ValueError(
            f"{solver.name}'s coefficients are infinite at t_max = {grid.timesteps[0]} where "
            "alpha = 0 (pure noise, sigma / alpha = inf); end the path just below, e.g. "
            'RectifiedFlow(t_max=0.999), or use "flow-euler", "flow-heun", "ddim", "dpm++" or '
            '"unipc" there'
        ) from e
