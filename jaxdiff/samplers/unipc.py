"""UniPC (bh2): Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework", Alg. 1-2."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.samplers.base import Points, Solver, State, safe

__all__ = ["UniPC"]


def _b_coefficients(h: np.ndarray, order: int) -> list[np.ndarray]:
    """``b_i = h phi_i(h) i! / B(h)`` for ``i = 1..order`` with ``B(h) = e^h - 1`` (bh2) at
    ``h -> -h`` (data prediction), the right-hand side of UniPC eq. 6 / 9."""
    hh = -h
    b_h = np.expm1(hh)
    h_phi_k = b_h / hh - 1.0
    factorial, out = 1.0, []
    for i in range(1, order + 1):
        out.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return out


@dataclasses.dataclass(frozen=True)
class UniPC(Solver):
    """UniPC with the ``B(h) = e^h - 1`` variant (bh2) in data-prediction form, order 2.

    Predictor UniP-p from ``s`` to ``t`` (Alg. 1 for p = 1, 2; ``h = lambda_t - lambda_s``,
    ``r = (lambda_p1 - lambda_s) / h``, ``B = e^-h - 1``)::

        x_t = sigma_t / sigma_s x_s - alpha_t B x0_s - alpha_t B / 2 (x0_p1 - x0_s) / r   (p = 2)

    which for p = 2 is the DPM-Solver++(2M) update. Corrector UniC (Alg. 2): once the network
    has been evaluated at the new point ``t`` (the evaluation the next step needs anyway), the
    sample there is recomputed from ``x_s`` with that output too, ``x_t^c = sigma_t / sigma_s
    x_s - alpha_t B x0_s - alpha_t B (sum_k rho_k D_k + rho_c (x0_t - x0_s))``, the ``rho`` from
    ``R rho = b`` (eq. 6, ``rho = 1/2`` at order 1); the corrected sample is what the next
    predictor starts from (the network is not re-evaluated). So UniPC raises the order by one
    at no extra network evaluation. Orders warm up from 1, and with ``lower_order_final`` the
    last step is first order (diffusers' default). The state keeps the last corrected sample
    and the two newest data predictions.

    Args:
      lower_order_final: take the last step at first order (True, as diffusers).

    Plus :class:`~jaxdiff.samplers.base.Solver`'s ``prediction``, ``clip_x0``, ``spacing``.
    """

    name = "unipc"
    max_order = 2
    history = 2
    final = "sigma_min"
    lower_order_final_below = float("inf")
    default_steps = 20
    default_spacing = "logsnr"
    lower_order_final: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "lower_order_final", bool(self.lower_order_final))

    def init(self, x: jax.Array) -> State:
        return (jnp.zeros_like(x), jnp.zeros_like(x), jnp.zeros_like(x))

    def coefficients(self, p: Points) -> dict[str, np.ndarray]:
        with np.errstate(all="ignore"):
            # --- predictor from s to t
            h = np.where(p.clean, 1.0, p.lam_t - p.lam_s)
            b_h = np.expm1(-h)
            second = (p.order >= 2) & ~p.clean
            r = (p.lam_prev[:, 0] - p.lam_s) / h
            half = 0.5 * p.alpha_t * b_h / r
            pred_x0 = np.where(p.clean, 1.0, -p.alpha_t * b_h + safe(half, second))
            # --- corrector from the previous start p1 to s, of the previous step's order
            use_c = p.order_prev >= 1
            hc = p.lam_s - p.lam_prev[:, 0]
            bc_h = np.expm1(-hc)
            b1, b2 = _b_coefficients(hc, 2)
            rk1 = (p.lam_prev[:, 1] - p.lam_prev[:, 0]) / hc
            two = p.order_prev >= 2
            rho0 = (b1 - b2) / (1.0 - rk1)  # R rho = b with R = [[1, 1], [rk1, 1]]
            rho_c = np.where(two, b1 - rho0, 0.5)
            a = -p.alpha_s * bc_h
            corr = {
                "c_x": p.sigma_s / p.sigma_prev[:, 0],  # x at p1, as corrected
                "c_x0": a * rho_c,  # x0 at s (this step's network output)
                "c_h0": a - a * rho_c - safe(a * rho0 / rk1, two),  # x0 at p1
                "c_h1": safe(a * rho0 / rk1, two),  # x0 at p2
            }
        out = {k: safe(v, use_c) for k, v in corr.items()}
        out.update(
            use_c=use_c.astype(np.float64),
            x=p.sigma_t / p.sigma_s,
            x0=pred_x0,
            h0=-safe(half, second),
        )
        return out

    def step(self, state, x, eps, x0, c, z):
        last_x, x0_p1, x0_p2 = state
        corrected = c["c_x"] * last_x + c["c_x0"] * x0 + c["c_h0"] * x0_p1 + c["c_h1"] * x0_p2
        x = jnp.where(c["use_c"] > 0, corrected, x)
        out = c["x"] * x + c["x0"] * x0 + c["h0"] * x0_p1
        return out, (x, x0, x0_p1)
