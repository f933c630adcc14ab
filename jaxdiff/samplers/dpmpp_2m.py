"""DPM-Solver++(2M): Lu et al. 2022, "DPM-Solver++", Algorithm 2 (data prediction)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.samplers.base import Points, Solver, safe
from jaxdiff.schedules import Schedule

__all__ = ["DPMSolverPP2M", "dpm_solver_pp_step"]


def multistep_weights(h, h_prev, alpha_t, use_second, xp=np):
    """Weights ``(w0, w1)`` of ``x0`` and ``x0_prev`` in Algorithm 2's update.

    ``x_t = sigma_t / sigma_s x_s - alpha_t (exp(-h) - 1) D`` with ``D = x0`` (first order,
    DPM-Solver++1) or ``D = (1 + 1 / (2 r)) x0 - 1 / (2 r) x0_prev``, ``r = h_prev / h``
    (second order). Works on NumPy (``xp=np``) and traced (``xp=jnp``) arrays.
    """
    phi = -alpha_t * xp.expm1(-h)  # -alpha_t (exp(-h) - 1), alpha_t at the clean sample
    half_inv_r = xp.where(use_second, 0.5 * h / h_prev, 0.0)
    return phi * (1.0 + half_inv_r), -phi * half_inv_r


@dataclasses.dataclass(frozen=True)
class DPMSolverPP2M(Solver):
    """DPM-Solver++(2M): ``x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) D`` with
    ``D = (1 + 1/(2r)) x0_s - 1/(2r) x0_prev`` and ``r = h_prev / h`` (Algorithm 2, line 8;
    ``h_prev = lambda_s - lambda_prev``); first order (``D = x0_s``, DPM-Solver++1, which is
    DDIM) at the first step, after a RePaint jump, to the clean sample, and at the last step
    of runs under 15 steps with ``lower_order_final`` (diffusers' default). Second order.

    Args:
      lower_order_final: lower the order at the last steps of runs under 15 steps (True, as
        diffusers).

    Plus :class:`~jaxdiff.samplers.base.Solver`'s ``prediction``, ``clip_x0``, ``spacing``.
    """

    name = "dpm++"
    max_order = 2
    history = 1
    final = "sigma_min"
    lower_order_final_below = 15
    default_steps = 20
    default_spacing = "logsnr"
    lower_order_final: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "lower_order_final", bool(self.lower_order_final))

    def coefficients(self, p: Points) -> dict[str, np.ndarray]:
        with np.errstate(all="ignore"):
            h = p.lam_t - p.lam_s
            second = p.order >= 2
            w0, w1 = multistep_weights(
                np.where(p.clean, 1.0, h), p.lam_s - p.lam_prev[:, 0], p.alpha_t, second
            )
            w0 = np.where(p.clean, 1.0, w0)  # x_t = x0 at sigma_t = 0
        return {"x": p.sigma_t / p.sigma_s, "x0": w0, "h0": safe(w1, second & ~p.clean)}


def dpm_solver_pp_step(
    s: Schedule,
    x0: jax.Array,
    x_t: jax.Array,
    t,
    t_next,
    x0_prev: jax.Array | None = None,
    t_prev=None,
    *,
    second_order=True,
) -> jax.Array:
    """One DPM-Solver++(2M) step x_t -> x_{t_next} at integer timesteps (jit-friendly).

    The update of :class:`DPMSolverPP2M` with ``alpha_t = sqrt(abar_t)``,
    ``sigma_t = sqrt(1 - abar_t)`` and ``lambda_t = log(alpha_t / sigma_t)`` read from the
    schedule; ``t_next = -1`` is the clean sample, where the update is ``x0`` whatever
    ``second_order`` says.

    Args:
      s: the schedule.
      x0: the data prediction at ``(x_t, t)``, shape ``(B, ...)``.
      x_t: current sample, same shape.
      t: int timestep in ``[0, T)`` (a scalar: the whole batch is at one step).
      t_next: target timestep in ``[-1, t)``, a scalar.
      x0_prev: the data prediction of the previous step (at ``t_prev``); needed for 2nd order.
      t_prev: the previous step's timestep (> t), a scalar.
      second_order: bool or traced bool; False (or no history) gives the first-order step.

    Returns:
      x_{t_next}, same shape as ``x_t``.
    """

    def lam(u):
        u = jnp.maximum(jnp.asarray(u, jnp.int32), 0)
        return 0.5 * (s.log_alphas_cumprod[u] - s.log_one_minus_alphas_cumprod[u])

    t, t_next = jnp.asarray(t, jnp.int32), jnp.asarray(t_next, jnp.int32)
    clean = t_next < 0
    t_next0 = jnp.maximum(t_next, 0)
    sigma_next = jnp.where(clean, 0.0, s.sqrt_one_minus_alphas_cumprod[t_next0])
    alpha_next = jnp.where(clean, 1.0, s.sqrt_alphas_cumprod[t_next0])
    h = jnp.where(clean, 1.0, lam(t_next0) - lam(t))
    if x0_prev is None:
        use2, h_prev, x0_prev = False, 1.0, jnp.zeros_like(x0)
    else:
        use2 = jnp.logical_and(jnp.asarray(second_order), jnp.logical_not(clean))
        h_prev = lam(t) - lam(t_prev)
    w0, w1 = multistep_weights(h, h_prev, alpha_next, use2, xp=jnp)
    w0 = jnp.where(clean, 1.0, w0)
    x_next = (sigma_next / s.sqrt_one_minus_alphas_cumprod[t]) * x_t + w0 * x0 + w1 * x0_prev
    return x_next.astype(x_t.dtype)
