"""Heun's second-order method in EDM's sigma form: Karras et al. 2022, Algorithm 1."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.samplers.base import Points, Solver, State, ve_level

__all__ = ["Heun"]


@dataclasses.dataclass(frozen=True)
class Heun(Solver):
    """Euler predictor, then the trapezoidal corrector (Karras et al. 2022, Alg. 1, lines 5-8,
    no churn).

    In ``y = x / alpha = x0 + k eps`` (``k = sigma / alpha``): stage 0 evaluates ``eps_1`` at
    ``(x_s, s)`` and predicts ``y' = y_s + (k_t - k_s) eps_1``; stage 1 evaluates ``eps_2`` at
    ``(x', t)`` and returns ``y_t = y_s + (k_t - k_s) (eps_1 + eps_2) / 2``. A step to the clean
    sample (``k_t = 0``) is the Euler step alone (line 9), so N steps cost 2N - 1 network
    evaluations. The state keeps ``(x_s, eps_1)`` between the stages. Second order.
    """

    name = "heun"
    stages = 2
    default_steps = 25
    default_spacing = "karras"

    def init(self, x: jax.Array) -> State:
        return (jnp.zeros_like(x), jnp.zeros_like(x))

    def coefficients(self, p: Points) -> dict[str, np.ndarray]:
        k_s, k_t = ve_level(p.alpha_s, p.sigma_s), ve_level(p.alpha_t, p.sigma_t)
        dk = p.alpha_t * (k_t - k_s)
        first = p.stage == 0
        return {
            # stage 0: x' = (alpha_t / alpha_s) x_s + alpha_t (k_t - k_s) eps_1
            # stage 1: x_t = (alpha_t / alpha_s) x_s + alpha_t (k_t - k_s) (eps_1 + eps_2) / 2
            "x": np.where(first, p.alpha_t / p.alpha_s, 0.0),
            "eps": np.where(first, dk, 0.5 * dk),
            "state_x": np.where(first, 0.0, p.alpha_t / p.alpha_s),
            "state_eps": np.where(first, 0.0, 0.5 * dk),
            "keep": first.astype(np.float64),  # 1: store (x_s, eps_1) for stage 1
        }

    def step(self, state, x, eps, x0, c, z):
        state_x, state_eps = state
        out = c["x"] * x + c["eps"] * eps + c["state_x"] * state_x + c["state_eps"] * state_eps
        keep = c["keep"] > 0
        return out, (jnp.where(keep, x, state_x), jnp.where(keep, eps, state_eps))
