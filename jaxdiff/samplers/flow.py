"""Euler and Heun in the path's own time, as flow-matching samplers: SD3's ``FlowMatchEuler`` /
``FlowMatchHeun`` (Esser et al. 2024) on any Gaussian path of :mod:`jaxdiff.paths`."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.samplers.base import Points, Solver, State, check_float

__all__ = ["FlowEuler", "FlowHeun"]


@dataclasses.dataclass(frozen=True)
class FlowEuler(Solver):
    """Euler on ``dx/dt = u(x, t)``, the velocity ``u = alpha'(t) x0 + sigma'(t) eps``
    (flow matching's target, Lipman et al. 2022): ``x_t = x_s + (t - s) u(x_s, s)``.

    The step is in t, not in ``sigma / alpha`` (:class:`~jaxdiff.samplers.euler.Euler`) or
    log-SNR; on :class:`jaxdiff.paths.RectifiedFlow` (``u = eps - x0``) it is exactly
    deterministic DDIM, ``x_t = (1 - t) x0 + t eps`` (tested). The default grid is uniform in t
    with SD3's ``shift`` (``t -> shift t / (1 + (shift - 1) t)``, 3.0 for SD3 at 1024 px, 1:
    none; :mod:`jaxdiff.samplers.path_plan`). Needs a continuous path. First order.

    Args:
      shift: the time shift, > 0.

    Plus :class:`~jaxdiff.samplers.base.Solver`'s ``prediction``, ``clip_x0``, ``spacing``.
    """

    name = "flow-euler"
    needs_rates = True
    default_steps = 50
    default_spacing = "linspace"
    shift: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        shift = check_float(self.shift, "shift")
        if shift <= 0:
            raise ValueError(f"shift must be > 0 (1 = no shift, SD3: 3.0), got {shift}")
        object.__setattr__(self, "shift", shift)

    def coefficients(self, p: Points) -> dict[str, np.ndarray]:
        dt = p.t_t - p.t_s
        return {"x": np.ones_like(dt), "x0": dt * p.dalpha_s, "eps": dt * p.dsigma_s}


@dataclasses.dataclass(frozen=True)
class FlowHeun(FlowEuler):
    """Heun in t: ``x' = x_s + (t - s) u_1``, ``u_1 = u(x_s, s)``, then ``x_t = x_s + (t - s)
    (u_1 + u(x', t)) / 2`` (the trapezoidal rule on the velocity; diffusers'
    ``FlowMatchHeunDiscreteScheduler``). It averages velocities in t, which differs from
    :class:`~jaxdiff.samplers.heun.Heun`'s average of eps in ``sigma / alpha`` except on paths
    with ``alpha = 1`` (EDM). The step to the clean sample is Euler's alone (2N - 1
    evaluations); the state keeps ``(x_s, u_1)``. Second order.
    """

    name = "flow-heun"
    stages = 2
    default_steps = 25

    def init(self, x: jax.Array) -> State:
        return (jnp.zeros_like(x), jnp.zeros_like(x))

    def coefficients(self, p: Points) -> dict[str, np.ndarray]:
        dt = p.t_t - p.t_s
        first = p.stage == 0
        return {
            # stage 0: x' = x_s + dt u_1; stage 1: x_t = x_s + dt / 2 (u_1 + u_2)
            "x": first.astype(np.float64),
            "x0": np.where(first, dt * p.dalpha_s, 0.5 * dt * p.dalpha_t),
            "eps": np.where(first, dt * p.dsigma_s, 0.5 * dt * p.dsigma_t),
            "u_x0": p.dalpha_s,  # u_1 = alpha'(s) x0 + sigma'(s) eps, kept at stage 0
            "u_eps": p.dsigma_s,
            "state_x": np.where(first, 0.0, 1.0),
            "state_u": np.where(first, 0.0, 0.5 * dt),
            "keep": first.astype(np.float64),
        }

    def step(self, state, x, eps, x0, c, z):
        state_x, state_u = state
        out = (c["x"] * x + c["x0"] * x0 + c["eps"] * eps + c["state_x"] * state_x
               + c["state_u"] * state_u)  # fmt: skip
        keep = c["keep"] > 0
        u = c["u_x0"] * x0 + c["u_eps"] * eps
        return out, (jnp.where(keep, x, state_x), jnp.where(keep, u, state_u))
