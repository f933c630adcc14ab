"""EDM's stochastic sampler: Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Algorithm 2."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxdiff.samplers.base import check_float
from jaxdiff.samplers.heun import Heun

__all__ = ["EDMSampler"]


@dataclasses.dataclass(frozen=True)
class EDMSampler(Heun):
    """Heun on the rho = 7 grid with churn (Algorithm 2); ``s_churn = 0`` is Algorithm 1, i.e.
    :class:`~jaxdiff.samplers.heun.Heun`.

    At step i from ``k_i = sigma / alpha`` (EDM's ``t_i``): ``gamma_i = min(s_churn / N,
    sqrt(2) - 1)`` where ``s_tmin <= k_i <= s_tmax``, else 0 (line 4); the sample is raised to
    ``k_hat = k_i (1 + gamma_i)`` with fresh noise, ``y_hat = y + sqrt(k_hat^2 - k_i^2) s_noise
    z`` in ``y = x / alpha`` (lines 5-6); then one Heun step from ``k_hat`` to ``k_{i+1}``
    (lines 7-10; Euler alone to the clean sample). On a path other than :class:`jaxdiff.paths.EDM`
    the same is done in ``y`` and ``k``, the network evaluated at the time where ``sigma /
    alpha = k_hat``. Churn needs a continuous path (a ``Schedule`` has no timestep at
    ``k_hat``); the driver draws its noise with the other per-step draws.

    Args:
      s_churn: total churn, >= 0 (EDM's ImageNet-64 setting: 80).
      s_tmin, s_tmax: churn only where ``s_tmin <= k_i <= s_tmax`` (0.05, 50 there).
      s_noise: noise inflation, > 0 (1.003 there).

    Plus :class:`~jaxdiff.samplers.base.Solver`'s ``prediction``, ``clip_x0``, ``spacing``.
    """

    name = "edm"
    default_steps = 18
    default_spacing = "karras"
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        s_churn, s_tmin, s_noise = (check_float(getattr(self, k), k)
                                    for k in ("s_churn", "s_tmin", "s_noise"))  # fmt: skip
        s_tmax = math.inf if self.s_tmax == math.inf else check_float(self.s_tmax, "s_tmax")
        if s_churn < 0 or s_noise <= 0 or not 0 <= s_tmin <= s_tmax:
            raise ValueError(
                f"EDMSampler needs s_churn >= 0, s_noise > 0 and 0 <= s_tmin <= s_tmax, got "
                f"s_churn={s_churn}, s_noise={s_noise}, s_tmin={s_tmin}, s_tmax={s_tmax}"
            )
        for k, v in dict(s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise).items():
            object.__setattr__(self, k, v)

    def churn(self, k: np.ndarray, steps: int) -> np.ndarray:
        k = np.asarray(k, np.float64)
        gamma = min(self.s_churn / steps, math.sqrt(2.0) - 1.0)
        return np.where((self.s_tmin <= k) & (k <= self.s_tmax), gamma, 0.0)
