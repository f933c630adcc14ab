"""Euler-ancestral: k-diffusion's ``sample_euler_ancestral`` (Karras et al. 2022 sigma form)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdiff.samplers.base import Points, Solver, ve_level

__all__ = ["EulerAncestral"]


@dataclasses.dataclass(frozen=True)
class EulerAncestral(Solver):
    """An Euler step down to ``k_down``, then fresh noise back up to ``k_t``.

    With ``k = sigma / alpha`` and ``y = x / alpha``: ``k_up = k_t sqrt(1 - k_t^2 / k_s^2)``
    (the DDPM posterior's noise in the sigma form, i.e. DDIM eq. 16 with eta = 1),
    ``k_down = sqrt(k_t^2 - k_up^2)``, and ``y_t = y_s + (k_down - k_s) eps + k_up z``
    (``get_ancestral_step`` of k-diffusion, diffusers' ``EulerAncestralDiscreteScheduler``).
    The last step, to the clean sample, adds no noise. First order in the mean.
    """

    name = "euler-a"
    default_steps = 50
    default_spacing = "karras"
    stochastic = True

    def coefficients(self, p: Points) -> dict[str, np.ndarray]:
        k_s, k_t = ve_level(p.alpha_s, p.sigma_s), ve_level(p.alpha_t, p.sigma_t)
        k_up = k_t * np.sqrt(np.maximum(1.0 - (k_t / k_s) ** 2, 0.0))
        k_down = np.sqrt(np.maximum(k_t**2 - k_up**2, 0.0))
        return {
            "x": p.alpha_t / p.alpha_s,
            "eps": p.alpha_t * (k_down - k_s),
            "z": p.alpha_t * k_up,
        }
