"""DDPM ancestral sampling on the (respaced) grid: Ho et al. 2020, eq. 11 (Algorithm 2)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdiff.reverse import VARIANCES
from jaxdiff.samplers.base import Points, Solver, check_choice

__all__ = ["DDPM"]


@dataclasses.dataclass(frozen=True)
class DDPM(Solver):
    """Ancestral DDPM: ``x_t = (x_s - beta / sigma_s eps) / sqrt(1 - beta) + std z``.

    On a grid that skips timesteps this is DDPM on the respaced schedule (Nichol & Dhariwal
    2021, sec. 4): ``beta = 1 - abar_s / abar_t`` (``abar_t = 1`` at the clean sample, where no
    noise is added), the posterior variance ``std^2 = beta sigma_t^2 / sigma_s^2`` (DDPM eq. 7,
    ``variance="posterior"``) or ``std^2 = beta`` (``variance="beta"``, "fixed large"). On a
    path that is not variance preserving (:mod:`jaxdiff.paths`), the transition ``x_s =
    (alpha_s / alpha_t) x_t + sqrt(beta) n`` has ``beta = sigma_s^2 (1 - e^(-2h))`` (``h =
    lambda_t - lambda_s``) and the step is scaled by ``alpha_t / alpha_s``: the same posterior.

    Args:
      variance: ``"posterior"`` or ``"beta"``.

    Plus :class:`~jaxdiff.samplers.base.Solver`'s ``prediction``, ``clip_x0``, ``spacing``.
    """

    name = "ddpm"
    default_steps = None
    default_spacing = "trailing"
    stochastic = True
    variance: str = "posterior"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.variance, "variance", VARIANCES)

    def coefficients(self, p: Points) -> dict[str, np.ndarray]:
        if p.vp:
            log_ratio = 2 * (np.log(p.alpha_s) - np.log(p.alpha_t))  # log(abar_s / abar_t)
            beta = -np.expm1(log_ratio)
            scale = np.exp(-0.5 * log_ratio)  # 1 / sqrt(1 - beta)
        else:  # x_s = (alpha_s / alpha_t) x_t + sqrt(beta) n, beta = sigma_s^2 (1 - e^(-2h))
            with np.errstate(over="ignore"):
                beta = p.sigma_s**2 * -np.expm1(-2.0 * (p.lam_t - p.lam_s))
            scale = p.alpha_t / p.alpha_s
        if self.variance == "posterior":
            var = beta * (p.sigma_t / p.sigma_s) ** 2
        else:
            var = beta
        return {
            "x": scale,
            "eps": -scale * beta / p.sigma_s,
            "z": np.where(p.clean, 0.0, np.sqrt(var)),
        }
