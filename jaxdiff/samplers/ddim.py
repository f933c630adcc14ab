"""DDIM: Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12 and 16."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdiff.samplers.base import Points, Solver, check_float

__all__ = ["DDIM"]


@dataclasses.dataclass(frozen=True)
class DDIM(Solver):
    """``x_t = alpha_t x0 + sqrt(sigma_t^2 - std^2) eps + std z`` (DDIM eq. 12).

    ``std = eta sqrt(sigma_t^2 / sigma_s^2) sqrt(1 - abar_s / abar_t)`` (eq. 16; on a path that
    is not variance preserving, its general form ``eta sigma_t sqrt(1 - e^(-2h))``, ``h =
    lambda_t - lambda_s``, the std of ``q(x_t | x_s, x0)``): ``eta = 0`` is
    deterministic, a first-order solver of the probability-flow ODE (the exponential
    integrator of DPM-Solver-1, Lu et al. 2022, sec. 4.1); ``eta = 1`` has DDPM's posterior
    variance.

    Args:
      eta: stochasticity, >= 0 (a float).

    Plus :class:`~jaxdiff.samplers.base.Solver`'s ``prediction``, ``clip_x0``, ``spacing``.
    """

    name = "ddim"
    default_steps = 50
    default_spacing = "trailing"
    eta: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        eta = check_float(self.eta, "eta")
        if eta < 0:
            raise ValueError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta}")
        object.__setattr__(self, "eta", eta)

    @property
    def stochastic(self) -> bool:
        """Whether the step adds noise: ``eta != 0``."""
        return self.eta != 0.0

    def coefficients(self, p: Points) -> dict[str, np.ndarray]:
        if p.vp:
            ratio = (p.alpha_s / p.alpha_t) ** 2  # abar_s / abar_t
            std = self.eta * (p.sigma_t / p.sigma_s) * np.sqrt(-np.expm1(np.log(ratio)))
        else:  # the posterior std sigma_t sqrt(1 - e^(-2h)) of any Gaussian path (same on VP)
            with np.errstate(over="ignore"):
                std = self.eta * p.sigma_t * np.sqrt(-np.expm1(-2.0 * (p.lam_t - p.lam_s)))
        coefs = {
            "x0": p.alpha_t,
            "eps": np.sqrt(np.maximum(p.sigma_t**2 - std**2, 0.0)),
        }
        if self.stochastic:
            coefs["z"] = std
        return coefs
