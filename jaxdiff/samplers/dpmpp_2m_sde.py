"""DPM-Solver++(2M) SDE: Lu et al. 2022, "DPM-Solver++", sec. 5 and App. (SDE variant)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdiff.samplers.base import Points, safe
from jaxdiff.samplers.dpmpp_2m import DPMSolverPP2M

__all__ = ["DPMSolverPP2MSDE"]


@dataclasses.dataclass(frozen=True)
class DPMSolverPP2MSDE(DPMSolverPP2M):
    """The second-order multistep solver of the reverse SDE in data-prediction form.

    With ``h = lambda_t - lambda_s``, ``r = (lambda_s - lambda_prev) / h`` and
    ``D1 = (x0_s - x0_prev) / r`` ("midpoint" form, as diffusers' ``sde-dpmsolver++``)::

        x_t = sigma_t / sigma_s e^-h x_s + alpha_t (1 - e^-2h) x0_s
              + 1/2 alpha_t (1 - e^-2h) D1 + sigma_t sqrt(1 - e^-2h) z

    First order (no ``D1``) after a (re)start, to the clean sample (where it returns
    ``x0_s``) and at the last step of runs under 15 steps with ``lower_order_final``.
    Stochastic: a fresh normal ``z`` at every step. Grid, orders and defaults are those of
    :class:`DPMSolverPP2M` (diffusers' ``DPMSolverMultistepScheduler`` likewise makes both).
    """

    name = "dpm++2m-sde"
    stochastic = True

    def coefficients(self, p: Points) -> dict[str, np.ndarray]:
        with np.errstate(all="ignore"):
            h = p.lam_t - p.lam_s  # inf at the clean sample: e^-h = 0
            one_m = -np.expm1(-2.0 * h)  # 1 - e^-2h
            r = (p.lam_s - p.lam_prev[:, 0]) / h
            second = (p.order >= 2) & ~p.clean
            half = 0.5 * p.alpha_t * one_m / r
        return {
            "x": p.sigma_t / p.sigma_s * np.exp(-h),
            "x0": p.alpha_t * one_m + safe(half, second),
            "h0": -safe(half, second),
            "z": p.sigma_t * np.sqrt(one_m),
        }
