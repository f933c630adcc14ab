"""Gaussian paths in continuous time: ``x_t = alpha(t) x0 + sigma(t) eps``, ``eps ~ N(0, I)``.

One forward process covers the families of diffusion and flow models; a path is two scalar
functions of the time ``t``, written with ``jax.numpy`` so that they compose with ``jit``,
``vmap``, ``grad`` and ``jvp`` (the velocity needs ``alpha'(t)`` and ``sigma'(t)``):

- :class:`DiscreteVP`: a DDPM schedule at integer ``t`` (``alpha = sqrt(alphas_cumprod[t])``,
  ``sigma = sqrt(1 - alphas_cumprod[t])``, DDPM eq. 4), the path jaxdiff trains on today;
- :class:`CosineVP`: ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos^2((t + s) / (1 + s) pi / 2)``
  on ``t`` in [0, 1] (Nichol & Dhariwal 2021, eq. 17), variance preserving;
- :class:`LinearVP`: ``alpha_bar(t) = exp(-beta_min t - (beta_max - beta_min) t^2 / 2)`` (the
  VP SDE of Song et al. 2021, eq. 33), variance preserving;
- :class:`EDM`: ``alpha = 1``, ``sigma = t`` on ``[sigma_min, sigma_max]`` (Karras et al.
  2022, the variance-exploding form, Table 1);
- :class:`RectifiedFlow`: ``alpha = 1 - t``, ``sigma = t`` on [0, 1] (Liu et al. 2022;
  Lipman et al. 2022's conditional OT path with ``sigma_min = 0``).

What a network may predict, and the conversions between them at one ``(x_t, t)``
(:func:`to_x0_eps`, :func:`from_x0_eps`): the noise ``eps``, the data ``x0``, ``v = alpha eps -
sigma x0`` (Salimans & Ho 2022, sec. 4; on a variance-preserving path) and the flow velocity
``u = dx_t/dt = alpha'(t) x0 + sigma'(t) eps`` (flow matching's target). Everything is written
for one example and batched with ``jax.vmap``, or broadcast with a scalar ``t``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import jax
import jax.numpy as jnp

from jaxdiff.schedules import Schedule

__all__ = [
    "EDM",
    "PREDICTIONS",
    "CosineVP",
    "DiscreteVP",
    "GaussianPath",
    "LinearVP",
    "RectifiedFlow",
    "from_x0_eps",
    "to_x0_eps",
]

PREDICTIONS = ("eps", "x0", "v", "velocity")


class GaussianPath(Protocol):
    """``alpha(t)`` and ``sigma(t)``: scalar (or elementwise) functions of the time ``t``;
    ``t_min``, ``t_max``: where the path is defined (the data end first)."""

    t_min: float
    t_max: float

    def alpha(self, t: jax.Array) -> jax.Array: ...

    def sigma(self, t: jax.Array) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class DiscreteVP:
    """A DDPM schedule as a path at integer times ``t`` in ``0..T-1`` (DDPM eq. 4); values are
    read from the schedule's tables, so they equal today's to the bit. No derivative in ``t``
    (use a continuous path for the velocity)."""

    schedule: Schedule

    @property
    def t_min(self) -> float:
        return 0.0

    @property
    def t_max(self) -> float:
        return float(self.schedule.num_steps - 1)

    def alpha(self, t: jax.Array) -> jax.Array:
        return self.schedule.sqrt_alphas_cumprod[jnp.asarray(t, jnp.int32)]

    def sigma(self, t: jax.Array) -> jax.Array:
        return self.schedule.sqrt_one_minus_alphas_cumprod[jnp.asarray(t, jnp.int32)]


@dataclasses.dataclass(frozen=True)
class CosineVP:
    """``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos((t + s) / (1 + s) * pi / 2)^2`` on [0, 1]
    (Nichol & Dhariwal 2021, eq. 17); ``alpha = sqrt(alpha_bar)``, ``sigma = sqrt(1 -
    alpha_bar)``. ``t_max`` stays below 1, where ``alpha`` reaches 0 and ``eps`` alone is left
    (``alpha_bar(0.99) = 2.4e-4`` for ``s = 0.008``)."""

    s: float = 0.008
    t_min: float = 0.0
    t_max: float = 0.99

    def _alpha_bar(self, t: jax.Array) -> jax.Array:
        f = lambda u: jnp.cos((u + self.s) / (1 + self.s) * (math.pi / 2)) ** 2
        return f(t) / f(0.0)

    def alpha(self, t: jax.Array) -> jax.Array:
        return jnp.sqrt(self._alpha_bar(t))

    def sigma(self, t: jax.Array) -> jax.Array:
        return jnp.sqrt(1 - self._alpha_bar(t))


@dataclasses.dataclass(frozen=True)
class LinearVP:
    """``log alpha_bar(t) = -beta_min t - (beta_max - beta_min) t^2 / 2`` on [``t_min``, 1]: the
    continuous limit of DDPM's linear betas (Song et al. 2021, eq. 33, with ``beta_min = 0.1``,
    ``beta_max = 20`` for T = 1000 steps of 1e-4..0.02)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3
    t_max: float = 1.0

    def _log_alpha_bar(self, t: jax.Array) -> jax.Array:
        return -self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t**2

    def alpha(self, t: jax.Array) -> jax.Array:
        return jnp.exp(0.5 * self._log_alpha_bar(t))

    def sigma(self, t: jax.Array) -> jax.Array:
        return jnp.sqrt(-jnp.expm1(self._log_alpha_bar(t)))


@dataclasses.dataclass(frozen=True)
class EDM:
    """``alpha = 1``, ``sigma = t`` for ``t`` in [``sigma_min``, ``sigma_max``] (Karras et al.
    2022, Table 1: the time is the noise level); ``sigma_data`` is the data's standard
    deviation, used by EDM's preconditioning."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5

    @property
    def t_min(self) -> float:
        return self.sigma_min

    @property
    def t_max(self) -> float:
        return self.sigma_max

    def alpha(self, t: jax.Array) -> jax.Array:
        return jnp.ones_like(jnp.asarray(t, jnp.result_type(float)))

    def sigma(self, t: jax.Array) -> jax.Array:
        return jnp.asarray(t, jnp.result_type(float))


@dataclasses.dataclass(frozen=True)
class RectifiedFlow:
    """``alpha = 1 - t``, ``sigma = t`` on [0, 1] (Liu et al. 2022): straight lines from the
    data (t = 0) to the noise (t = 1); the velocity is ``eps - x0``."""

    t_min: float = 0.0
    t_max: float = 1.0

    def alpha(self, t: jax.Array) -> jax.Array:
        return 1 - jnp.asarray(t, jnp.result_type(float))

    def sigma(self, t: jax.Array) -> jax.Array:
        return jnp.asarray(t, jnp.result_type(float))


def _rates(path: GaussianPath, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(alpha'(t), sigma'(t))`` by forward-mode differentiation of the scalar functions."""
    t = jnp.asarray(t, jnp.result_type(float))
    one = jnp.ones_like(t)
    return jax.jvp(path.alpha, (t,), (one,))[1], jax.jvp(path.sigma, (t,), (one,))[1]


def to_x0_eps(
    path: GaussianPath, prediction: str, output: jax.Array, x_t: jax.Array, t
) -> tuple[jax.Array, jax.Array]:
    """``(x0, eps)`` implied by a network ``output`` of kind ``prediction`` at ``(x_t, t)``.

    Args:
      path: the Gaussian path.
      prediction: ``"eps"``, ``"x0"``, ``"v"`` or ``"velocity"`` (see the module docstring).
      output, x_t: arrays of one shape; ``t`` a scalar (or broadcastable to them).

    The inversions solve ``x_t = a x0 + s eps`` together with the output's definition:
    ``v = a eps - s x0`` gives ``x0 = (a x_t - s v) / (a^2 + s^2)``; ``u = a' x0 + s' eps``
    gives ``x0 = (s' x_t - s u) / (a s' - s a')``.
    """
    a, s = path.alpha(t), path.sigma(t)
    if prediction == "eps":
        return (x_t - s * output) / a, output
    if prediction == "x0":
        return output, (x_t - a * output) / s
    if prediction == "v":
        norm = a**2 + s**2
        return (a * x_t - s * output) / norm, (s * x_t + a * output) / norm
    if prediction == "velocity":
        da, ds = _rates(path, t)
        det = a * ds - s * da
        return (ds * x_t - s * output) / det, (a * output - da * x_t) / det
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")


def from_x0_eps(path: GaussianPath, prediction: str, x0: jax.Array, eps: jax.Array, t) -> jax.Array:
    """The target of kind ``prediction`` for a clean ``x0`` and noise ``eps`` at time ``t``: what
    a network trained on this path should output (shape of ``x0``)."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    a, s = path.alpha(t), path.sigma(t)
    if prediction == "v":
        return a * eps - s * x0
    if prediction == "velocity":
        da, ds = _rates(path, t)
        return da * x0 + ds * eps
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
