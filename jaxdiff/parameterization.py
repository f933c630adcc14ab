"""What the network predicts: noise eps, clean data x0, or velocity v, and conversions.

With ``a = alphas_cumprod[t]`` and ``x_t = sqrt(a) x0 + sqrt(1 - a) eps`` (DDPM eq. 4):

- eps -> x0: ``x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)`` (DDPM eq. 15)
- x0 -> eps: ``eps = (x_t - sqrt(a) x0) / sqrt(1 - a)``
- v (Salimans & Ho 2022, sec. 4): ``v = sqrt(a) eps - sqrt(1 - a) x0``, so
  ``x0 = sqrt(a) x_t - sqrt(1 - a) v`` and ``eps = sqrt(1 - a) x_t + sqrt(a) v``.

All functions take a batch ``x_t`` of shape ``(B, ...)`` and ``t`` a scalar or ``(B,)``.
"""

from __future__ import annotations

import jax

from jaxdiff._validate import check_same_shape, check_timesteps, gather
from jaxdiff.schedules import Schedule

__all__ = [
    "PREDICTIONS",
    "eps_from_v",
    "eps_from_x0",
    "eps_to_x0",
    "prediction_target",
    "to_eps_and_x0",
    "v_from_eps_x0",
    "x0_from_v",
]

PREDICTIONS = ("eps", "x0", "v")


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(
            f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}"
        )


def eps_to_x0(s: Schedule, x_t: jax.Array, t, eps: jax.Array) -> jax.Array:
    """Predicted x0 from predicted noise (DDPM eq. 15 solved for x0). Shape of ``x_t``."""
    check_same_shape(x_t, eps, "x_t", "eps")
    t = check_timesteps(t, x_t, s.num_steps)
    return (
        gather(s.sqrt_recip_alphas_cumprod, t, x_t) * x_t
        - gather(s.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
    )


def eps_from_x0(s: Schedule, x_t: jax.Array, t, x0: jax.Array) -> jax.Array:
    """Noise implied by a predicted x0. Shape of ``x_t``."""
    check_same_shape(x_t, x0, "x_t", "x0")
    t = check_timesteps(t, x_t, s.num_steps)
    return (gather(s.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / gather(
        s.sqrt_recipm1_alphas_cumprod, t, x_t
    )


def _alpha_sigma(
    s: Schedule, t, x: jax.Array, other: jax.Array, names: tuple[str, str]
) -> tuple[jax.Array, jax.Array]:
    """``(sqrt(a), sqrt(1 - a))`` at ``t`` (a scalar or ``(B,)``), shaped to broadcast against
    ``x`` ``(B, ...)`` (``(B, 1, ..., 1)`` for a ``(B,)`` ``t``), after checking that ``other``
    has the shape of ``x`` (``names``: theirs, for the error message)."""
    check_same_shape(x, other, *names)
    t = check_timesteps(t, x, s.num_steps)
    return gather(s.sqrt_alphas_cumprod, t, x), gather(s.sqrt_one_minus_alphas_cumprod, t, x)


def v_from_eps_x0(s: Schedule, x0: jax.Array, t, eps: jax.Array) -> jax.Array:
    """The velocity target ``v = sqrt(a) eps - sqrt(1 - a) x0`` (Salimans & Ho eq. in sec. 4)."""
    alpha, sigma = _alpha_sigma(s, t, x0, eps, ("x0", "eps"))
    return alpha * eps - sigma * x0


def x0_from_v(s: Schedule, x_t: jax.Array, t, v: jax.Array) -> jax.Array:
    """``x0 = sqrt(a) x_t - sqrt(1 - a) v``. Shape of ``x_t``."""
    alpha, sigma = _alpha_sigma(s, t, x_t, v, ("x_t", "v"))
    return alpha * x_t - sigma * v


def eps_from_v(s: Schedule, x_t: jax.Array, t, v: jax.Array) -> jax.Array:
    """``eps = sqrt(1 - a) x_t + sqrt(a) v``. Shape of ``x_t``."""
    alpha, sigma = _alpha_sigma(s, t, x_t, v, ("x_t", "v"))
    return sigma * x_t + alpha * v


def prediction_target(
    s: Schedule, x0: jax.Array, t, noise: jax.Array, prediction: str = "eps"
) -> jax.Array:
    """The regression target for a network that predicts ``prediction`` ("eps", "x0" or "v")."""
    _check_prediction(prediction)
    check_same_shape(x0, noise, "x0", "noise")
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    return v_from_eps_x0(s, x0, t, noise)


def to_eps_and_x0(
    s: Schedule, model_output: jax.Array, x_t: jax.Array, t, prediction: str = "eps"
) -> tuple[jax.Array, jax.Array]:
    """Convert a network output of kind ``prediction`` into ``(eps, x0)`` predictions."""
    _check_prediction(prediction)
    if prediction == "eps":
        return model_output, eps_to_x0(s, x_t, t, model_output)
    if prediction == "x0":
        return eps_from_x0(s, x_t, t, model_output), model_output
    return eps_from_v(s, x_t, t, model_output), x0_from_v(s, x_t, t, model_output)
