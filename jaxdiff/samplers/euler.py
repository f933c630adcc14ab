"""Euler's method on the probability-flow ODE in EDM's sigma form (Karras et al. 2022)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdiff.samplers.base import Points, Solver, ve_level

__all__ = ["Euler"]


@dataclasses.dataclass(frozen=True)
class Euler(Solver):
    """One Euler step of ``d(x / alpha) / dk = eps`` (Karras et al. 2022, eq. 4 with
    ``s(t) = 1``, ``sigma(t) = k``; their Algorithm 1 without the Heun correction).

    In the variance-exploding variable ``y = x / alpha = x0 + k eps``:
    ``y_t = y_s + (k_t - k_s) eps``, i.e. ``x_t = (alpha_t / alpha_s) x_s + alpha_t (k_t - k_s)
    eps``. It is the same update as deterministic DDIM written in eps instead of x0, so the two
    agree to rounding on the same grid; its default grid is Karras et al.'s (``"karras"``,
    eq. 5, rho = 7), as in k-diffusion. First order.
    """

    name = "euler"
    default_steps = 50
    default_spacing = "karras"

    def coefficients(self, p: Points) -> dict[str, np.ndarray]:
        k_s, k_t = ve_level(p.alpha_s, p.sigma_s), ve_level(p.alpha_t, p.sigma_t)
        return {"x": p.alpha_t / p.alpha_s, "eps": p.alpha_t * (k_t - k_s)}
