"""The reverse process: the forward posterior q(x_{t-1} | x_t, x_0) and single sampler steps.

Every function takes a batch ``x_t`` of shape ``(B, ...)`` and ``t`` as a scalar or ``(B,)``
(one timestep per example); each is also correct for one example under ``jax.vmap``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff._validate import (
    as_float,
    check_same_shape,
    check_timesteps,
    concrete_value,
    gather,
)
from jaxdiff.parameterization import eps_to_x0
from jaxdiff.schedules import Schedule

__all__ = ["VARIANCES", "ddim_step", "ddpm_step", "model_log_variance", "q_posterior"]

VARIANCES = ("posterior", "beta")


def q_posterior(
    s: Schedule, x0: jax.Array, x_t: jax.Array, t
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (DDPM eq. 6-7).

    Args:
      s: the schedule.
      x0: clean data (or a prediction of it), shape ``(B, ...)``.
      x_t: noisy data at step t, same shape.
      t: int timestep(s) in ``[0, T)``, a scalar or ``(B,)``. At t = 0 the "posterior" is the
        point mass at x0 (variance 0; the log-variance is clipped to ``log posterior_variance[1]``).

    Returns:
      ``(mean, variance, log_variance)``, each of x_t's shape.
    """
    x0 = as_float(x0, "x0")
    x_t = as_float(x_t, "x_t")
    check_same_shape(x0, x_t, "x0", "x_t")
    t = check_timesteps(t, x_t, s.num_steps)
    mean = (
        gather(s.posterior_mean_coef1, t, x_t) * x0 + gather(s.posterior_mean_coef2, t, x_t) * x_t
    )
    var = jnp.broadcast_to(gather(s.posterior_variance, t, x_t), x_t.shape)
    log_var = jnp.broadcast_to(gather(s.posterior_log_variance_clipped, t, x_t), x_t.shape)
    return mean, var, log_var


def _check_variance(variance: str) -> None:
    if variance not in VARIANCES:
        raise ValueError(
            f"unknown variance {variance!r}; choose 'posterior' (sigma_t^2 = beta-tilde_t, "
            "DDPM eq. 7) or 'beta' (sigma_t^2 = beta_t)"
        )


def model_log_variance(s: Schedule, t, x: jax.Array, variance: str = "posterior") -> jax.Array:
    """Log of the fixed reverse-process variance sigma_t^2 (DDPM sec. 3.2), broadcast to ``x``.

    ``"posterior"``: sigma_t^2 = posterior variance (beta-tilde, DDPM eq. 7), log clipped at t=0.
    ``"beta"``: sigma_t^2 = beta_t, except at t = 0 where beta-tilde_1 is used, as in the
    improved-diffusion "fixed large" variance (so the t = 0 decoder likelihood is not too wide).
    """
    _check_variance(variance)
    t = check_timesteps(t, x, s.num_steps)
    if variance == "posterior":
        log_var = gather(s.posterior_log_variance_clipped, t, x)
    else:
        at_zero = t.reshape(t.shape + (1,) * (jnp.ndim(x) - t.ndim)) == 0
        log_var = jnp.where(
            at_zero, s.posterior_log_variance_clipped[0], jnp.log(gather(s.betas, t, x))
        )
    return jnp.broadcast_to(log_var, jnp.shape(x))


def ddpm_step(
    s: Schedule,
    eps: jax.Array,
    x_t: jax.Array,
    t,
    noise: jax.Array | None,
    variance: str = "posterior",
    *,
    clip_x0: float | None = None,
) -> jax.Array:
    """One ancestral DDPM step x_t -> x_{t-1} given a noise prediction (DDPM Algorithm 2).

    ``x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps) + sigma_t z`` (DDPM eq. 11),
    with ``z = noise`` and no noise added at t = 0. With ``clip_x0=c`` the predicted x0 is
    clipped to ``[-c, c]`` and the mean is the posterior mean of eq. 7 at that x0 instead.

    Args:
      s: the schedule.
      eps: predicted noise, shape ``(B, ...)``.
      x_t: current sample, same shape.
      t: int timestep(s) in ``[0, T)``, a scalar or ``(B,)``.
      noise: standard normal, same shape (ignored where t = 0; may be None only if every t is 0).
      variance: ``"posterior"`` (beta-tilde_t) or ``"beta"`` (beta_t).
      clip_x0: optional bound for the predicted x0 (1.0 for data in [-1, 1]).

    Returns:
      x_{t-1}, same shape as ``x_t``.
    """
    _check_variance(variance)
    x_t = as_float(x_t, "x_t")
    check_same_shape(x_t, eps, "x_t", "eps")
    t = check_timesteps(t, x_t, s.num_steps)
    if clip_x0 is None:
        coef = gather(s.betas / s.sqrt_one_minus_alphas_cumprod, t, x_t)
        mean = (x_t - coef * eps) / jnp.sqrt(gather(s.alphas, t, x_t))
    else:
        x0 = jnp.clip(eps_to_x0(s, x_t, t, eps), -clip_x0, clip_x0)
        mean = (
            gather(s.posterior_mean_coef1, t, x_t) * x0
            + gather(s.posterior_mean_coef2, t, x_t) * x_t
        )
    if noise is None:
        value = concrete_value(t)
        if value is None or value.any():
            raise ValueError("ddpm_step needs noise for t > 0; pass noise=jax.random.normal(...)")
        return mean
    check_same_shape(x_t, noise, "x_t", "noise")
    log_var = model_log_variance(s, t, x_t, variance)
    nonzero = (t != 0).astype(x_t.dtype).reshape(t.shape + (1,) * (x_t.ndim - t.ndim))
    return mean + nonzero * jnp.exp(0.5 * log_var) * noise


def ddim_step(
    s: Schedule,
    eps: jax.Array,
    x_t: jax.Array,
    t,
    t_prev,
    noise: jax.Array | None = None,
    eta: float = 0.0,
    *,
    clip_x0: float | None = None,
) -> jax.Array:
    """One DDIM step x_t -> x_{t_prev} for any ``t_prev < t`` (Song et al. 2021, eq. 12).

    ``x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma z`` with
    ``x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` and
    ``sigma = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev)`` (eq. 16).
    ``t_prev = -1`` means the clean sample (abar_prev = 1). eta = 0 is the deterministic DDIM,
    eta = 1 matches DDPM's posterior variance when ``t_prev = t - 1``.

    Args:
      s: the schedule.
      eps: predicted noise, shape ``(B, ...)``.
      x_t: current sample, same shape.
      t: int timestep(s) in ``[0, T)``, scalar or ``(B,)``.
      t_prev: int target timestep(s) in ``[-1, t)``, same shape as ``t``.
      noise: standard normal, same shape as ``x_t``; may be None when ``eta == 0``.
      eta: stochasticity >= 0.
      clip_x0: optional bound for the predicted x0; eps is then recomputed from the clipped x0.

    Returns:
      x_{t_prev}, same shape as ``x_t``.
    """
    x_t = as_float(x_t, "x_t")
    check_same_shape(x_t, eps, "x_t", "eps")
    t = check_timesteps(t, x_t, s.num_steps)
    t_prev = check_timesteps(t_prev, x_t, s.num_steps, "t_prev", allow_minus_one=True)
    tv, pv = concrete_value(t), concrete_value(t_prev)
    if tv is not None and pv is not None and np.any(pv >= tv):
        raise ValueError(
            f"ddim_step needs t_prev < t (it steps towards the data), got t={tv} and t_prev={pv}"
        )
    eta_value = concrete_value(eta)
    if eta_value is not None and not (eta_value >= 0 and np.isfinite(eta_value)):
        raise ValueError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta}")
    if noise is None and (eta_value is None or eta_value != 0):
        raise ValueError("ddim_step needs noise when eta > 0; pass noise=jax.random.normal(...)")

    # Gather sqrt and log terms precomputed in float64: 1 - abar in float32 loses most of its
    # digits near t = 0, and 1 - abar_t / abar_prev is tiny for neighbouring steps.
    prev_b = t_prev.reshape(t_prev.shape + (1,) * (x_t.ndim - t_prev.ndim))
    t_prev0 = jnp.maximum(t_prev, 0)
    sqrt_abar_t = gather(s.sqrt_alphas_cumprod, t, x_t)
    sqrt_1m_t = gather(s.sqrt_one_minus_alphas_cumprod, t, x_t)
    sqrt_abar_prev = jnp.where(prev_b >= 0, gather(s.sqrt_alphas_cumprod, t_prev0, x_t), 1.0)
    sqrt_1m_prev = jnp.where(
        prev_b >= 0, gather(s.sqrt_one_minus_alphas_cumprod, t_prev0, x_t), 0.0
    )
    log_abar_prev = jnp.where(prev_b >= 0, gather(s.log_alphas_cumprod, t_prev0, x_t), 0.0)
    x0 = (x_t - sqrt_1m_t * eps) / sqrt_abar_t
    if clip_x0 is not None:
        x0 = jnp.clip(x0, -clip_x0, clip_x0)
        eps = (x_t - sqrt_abar_t * x0) / sqrt_1m_t
    # DDIM eq. 16: sigma^2 = eta^2 (1 - abar_prev) / (1 - abar_t) (1 - abar_t / abar_prev)
    one_minus_ratio = -jnp.expm1(gather(s.log_alphas_cumprod, t, x_t) - log_abar_prev)
    sigma = eta * (sqrt_1m_prev / sqrt_1m_t) * jnp.sqrt(one_minus_ratio)
    direction = jnp.sqrt(jnp.maximum(jnp.square(sqrt_1m_prev) - jnp.square(sigma), 0.0)) * eps
    x_prev = sqrt_abar_prev * x0 + direction
    if noise is not None:
        check_same_shape(x_t, noise, "x_t", "noise")
        x_prev = x_prev + sigma * noise
    return x_prev
