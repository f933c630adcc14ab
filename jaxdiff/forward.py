"""The forward (noising) process q: closed form, one chain step, and the iterative chain."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff._validate import as_float, check_same_shape, check_timesteps, concrete_value, gather
from jaxdiff.schedules import Schedule

__all__ = ["q_mean_variance", "q_sample", "q_sample_iterative", "q_step"]


def q_mean_variance(s: Schedule, x0: jax.Array, t) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean, variance and log-variance of q(x_t | x_0) (DDPM eq. 4).

    Args:
      s: the schedule.
      x0: clean data, shape ``(B, ...)`` (or a single example).
      t: int timestep(s), a scalar or shape ``(B,)``.

    Returns:
      ``(mean, variance, log_variance)``; mean has x0's shape, the others broadcast against it.
    """
    x0 = as_float(x0, "x0")
    t = check_timesteps(t, x0, s.num_steps)
    mean = gather(s.sqrt_alphas_cumprod, t, x0) * x0
    var = jnp.square(gather(s.sqrt_one_minus_alphas_cumprod, t, x0))
    log_var = gather(s.log_one_minus_alphas_cumprod, t, x0)
    return mean, jnp.broadcast_to(var, x0.shape), jnp.broadcast_to(log_var, x0.shape)


def q_sample(s: Schedule, x0: jax.Array, t, noise: jax.Array) -> jax.Array:
    """Sample x_t ~ q(x_t | x_0) in closed form (DDPM eq. 4).

    ``x_t = sqrt(alphas_cumprod[t]) x0 + sqrt(1 - alphas_cumprod[t]) noise``.

    Args:
      s: the schedule.
      x0: clean data, shape ``(B, ...)``.
      t: int timestep(s) in ``[0, T)``, a scalar or shape ``(B,)``.
      noise: standard normal noise, same shape as ``x0``.

    Returns:
      x_t, same shape as ``x0``.
    """
    x0 = as_float(x0, "x0")
    check_same_shape(x0, noise, "x0", "noise")
    t = check_timesteps(t, x0, s.num_steps)
    return (
        gather(s.sqrt_alphas_cumprod, t, x0) * x0
        + gather(s.sqrt_one_minus_alphas_cumprod, t, x0) * noise
    )


def q_step(s: Schedule, x_prev: jax.Array, t, noise: jax.Array) -> jax.Array:
    """One step of the forward chain, x_t ~ q(x_t | x_{t-1}) (DDPM eq. 2).

    ``x_t = sqrt(1 - betas[t]) x_{t-1} + sqrt(betas[t]) noise``, where ``x_{-1}`` is x_0.

    Args:
      s: the schedule.
      x_prev: x_{t-1}, shape ``(B, ...)``.
      t: int timestep(s), a scalar or shape ``(B,)``.
      noise: standard normal noise, same shape as ``x_prev``.
    """
    x_prev = as_float(x_prev, "x_prev")
    check_same_shape(x_prev, noise, "x_prev", "noise")
    t = check_timesteps(t, x_prev, s.num_steps)
    beta = gather(s.betas, t, x_prev)
    return jnp.sqrt(1.0 - beta) * x_prev + jnp.sqrt(beta) * noise


def q_sample_iterative(s: Schedule, x0: jax.Array, t, key: jax.Array) -> jax.Array:
    """Sample x_t by running the forward chain step by step from x_0 (steps 0, 1, ..., t).

    Agrees with :func:`q_sample` in distribution (not sample by sample): the sum of the
    independent per-step noises is Gaussian with variance ``1 - alphas_cumprod[t]``. Step k
    draws its noise from ``jax.random.fold_in(key, k)``.

    Args:
      s: the schedule.
      x0: clean data, shape ``(B, ...)``.
      t: int timestep(s), a scalar or shape ``(B,)``; each example stops at its own t.
      key: a PRNG key.

    Returns:
      x_t, same shape as ``x0``. Costs ``max(t) + 1`` chain steps when t is concrete, else T.
    """
    x0 = as_float(x0, "x0")
    t = check_timesteps(t, x0, s.num_steps)
    value = concrete_value(t)
    length = int(value.max()) + 1 if value is not None and value.size else s.num_steps
    mask_shape = t.shape + (1,) * (x0.ndim - t.ndim)

    def body(x, k):
        noise = jax.random.normal(jax.random.fold_in(key, k), x.shape, x.dtype)
        beta = s.betas[k]
        x_new = jnp.sqrt(1.0 - beta) * x + jnp.sqrt(beta) * noise
        return jnp.where((k <= t).reshape(mask_shape), x_new, x), None

    x_t, _ = jax.lax.scan(body, x0, jnp.arange(length))
    return x_t
