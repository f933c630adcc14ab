"""Consistency distillation (Song, Dhariwal, Chen & Sutskever 2023, Algorithm 2).

A consistency function maps any point of a probability-flow ODE trajectory to its start:
``f(x_t, t) = c_skip(t) x_t + c_out(t) F(x_t, t)`` (eq. 7) with, for the noise level ``s(t) =
sigma(t) / alpha(t)`` (EDM's time of the path) and ``s_min = s(t_min)``,

    c_skip(t) = sigma_data^2 / ((s - s_min)^2 + sigma_data^2),
    c_out(t)  = sigma_data (s - s_min) / sqrt(sigma_data^2 + s^2),

so ``c_skip(t_min) = 1`` and ``c_out(t_min) = 0`` exactly: ``f(x, t_min) = x`` (the boundary
condition, eq. 5). ``F`` here is the student network's ``x0`` estimate in the teacher's
parameterisation, so a student initialised from the teacher starts from the teacher's denoiser.

Training (Algorithm 2): times ``t_1 < ... < t_N`` (:func:`consistency_times`), ``n`` uniform in
``1..N-1``, ``x_{t_{n+1}} = alpha x + sigma z``, one teacher ODE step back to ``t_n``
(:func:`teacher_ode_step`: DDIM/Euler or Heun), and the loss ``d(f_theta(x_{t_{n+1}},
t_{n+1}), f_theta-(x^_{t_n}, t_n))`` with ``d`` the mean squared error and ``lambda = 1``.
``theta-`` is the target network (an EMA of ``theta``, Algorithm 2's ``mu``); with the
training engine's loss contract the target is ``stop_gradient(theta)`` (``mu = 0``, as Song &
Dhariwal 2023 recommend for consistency training), see :func:`make_consistency_loss`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.distill.denoiser import DenoiserLike, _per_example, alpha_sigma, ddim_step

__all__ = [
    "ODE_SOLVERS",
    "consistency_coefficients",
    "consistency_function",
    "consistency_loss",
    "consistency_times",
    "make_consistency_loss",
    "teacher_ode_step",
]

ODE_SOLVERS = ("ddim", "heun")


def consistency_times(path, discrete: bool, n: int) -> np.ndarray:
    """``t_1 < ... < t_N``: ``n`` times from ``t_min`` to ``t_max`` (Algorithm 2's grid),
    evenly spaced (discrete: rounded to the schedule's integers, which must stay distinct).

    Raises:
      ValueError: ``n < 2``, or more times than a discrete schedule has steps.
    """
    if n < 2:
        raise ValueError(f"consistency distillation needs n >= 2 times, got {n}")
    grid = np.linspace(path.t_min, path.t_max, n)
    if discrete:
        T = round(path.t_max) + 1
        if n > T:
            raise ValueError(f"{n} consistency times need T >= {n}; the teacher has T={T}")
        return np.round(grid).astype(np.int32)
    return grid.astype(np.float32)


def _noise_level(path, t):
    """EDM's time of a path: ``s(t) = sigma(t) / alpha(t)``."""
    a, s = alpha_sigma(path, t)
    return s / a


def consistency_coefficients(path, t, sigma_data: float = 0.5) -> tuple[jax.Array, jax.Array]:
    """``(c_skip(t), c_out(t))`` of eq. 7 on the noise level ``s = sigma / alpha`` (module
    docstring); exactly ``(1, 0)`` at ``t = path.t_min``. Shapes of ``t``."""
    s = _noise_level(path, t)
    s_min = _noise_level(path, jnp.asarray(path.t_min, jnp.asarray(t).dtype))
    d = s - s_min
    c_skip = sigma_data**2 / (d**2 + sigma_data**2)
    c_out = sigma_data * d / jnp.sqrt(sigma_data**2 + s**2)
    return c_skip, c_out


def consistency_function(
    net: DenoiserLike, params, x_t, t, labels=None, *, sigma_data=0.5, dropout_key=None
) -> jax.Array:
    """``f(x_t, t) = c_skip(t) x_t + c_out(t) F(x_t, t)`` (eq. 7), ``F`` the ``x0`` estimate of
    ``net``; ``x_t (B, ...)``, ``t (B,)``. Shape of ``x_t``."""
    x0, _ = net(params, x_t, t, labels, dropout_key=dropout_key)
    c_skip, c_out = consistency_coefficients(net.path, _per_example(t, x_t), sigma_data)
    return c_skip * x_t + c_out * x0


def teacher_ode_step(
    teacher: DenoiserLike, params, x, t, t_next, labels=None, solver: str = "heun"
) -> jax.Array:
    """One probability-flow ODE step of the teacher from ``t`` to ``t_next`` (``(B,)`` each).

    ``"ddim"``: DDIM eq. 12 with eta 0 (Euler in ``s = sigma / alpha`` on ``y = x / alpha``);
    ``"heun"``: Heun's second-order step in those variables (Karras et al. 2022, Algorithm 1),
    ``y' = y + (s_n - s) (eps + eps') / 2``, the form Song et al. 2023 distil from.
    """
    if solver not in ODE_SOLVERS:
        raise ValueError(f"unknown ODE solver {solver!r}; choose one of {ODE_SOLVERS}")
    x0, eps = teacher(params, x, t, labels)
    x_euler = ddim_step(teacher.path, x0, eps, t_next)
    if solver == "ddim":
        return x_euler
    a, s = alpha_sigma(teacher.path, _per_example(t, x))
    a_n, s_n = alpha_sigma(teacher.path, _per_example(t_next, x))
    _, eps_n = teacher(params, x_euler, t_next, labels)
    y = x / a + (s_n / a_n - s / a) * 0.5 * (eps + eps_n)
    return a_n * y


def consistency_loss(
    student: DenoiserLike,
    params: Any,
    target_params: Any,
    teacher: DenoiserLike,
    teacher_params: Any,
    x0: jax.Array,
    labels,
    key: jax.Array,
    times: jax.Array,
    *,
    solver: str = "heun",
    sigma_data: float = 0.5,
    dropout_key: jax.Array | None = None,
) -> jax.Array:
    """Algorithm 2's loss on a batch: ``mean (f_theta(x_{t_{n+1}}, t_{n+1}) - f_theta-(x^_{t_n},
    t_n))^2`` with ``x^_{t_n}`` the teacher's ODE step; no gradient flows into the target or
    the teacher.

    Args:
      student, teacher: denoisers on one path; ``params`` the student's (theta),
        ``target_params`` theta- (an EMA of theta, or theta itself), ``teacher_params``.
      x0: data ``(B, ...)``; labels ``(B,)`` or None; key: PRNG key.
      times: ``(N,)`` increasing (:func:`consistency_times`).

    Returns:
      A scalar.
    """
    k_n, k_z = jax.random.split(key)
    n = jax.random.randint(k_n, x0.shape[:1], 0, times.shape[0] - 1)
    t, t_next = times[n + 1], times[n]  # t_{n+1} > t_n
    z = jax.random.normal(k_z, x0.shape, x0.dtype)
    a, s = alpha_sigma(teacher.path, _per_example(t, x0))
    x_t = a * x0 + s * z
    teacher_params = jax.lax.stop_gradient(teacher_params)
    x_hat = teacher_ode_step(teacher, teacher_params, x_t, t, t_next, labels, solver)
    target = consistency_function(
        student, jax.lax.stop_gradient(target_params), x_hat, t_next, labels,
        sigma_data=sigma_data,
    )  # fmt: skip
    online = consistency_function(
        student, params, x_t, t, labels, sigma_data=sigma_data, dropout_key=dropout_key
    )
    return jnp.mean((online - jax.lax.stop_gradient(target)) ** 2)


def make_consistency_loss(
    student: DenoiserLike,
    teacher: DenoiserLike,
    num_times: int,
    *,
    solver: str = "heun",
    sigma_data: float = 0.5,
):
    """``loss(params, x0, labels, key, dropout_key) -> scalar`` for
    :class:`jaxdiff.train.Trainer` with ``params = {"student": ..., "teacher": ...}`` (the
    teacher a frozen, traced sub-tree, see :func:`jaxdiff.distill.make_progressive_loss`).

    The target network is ``stop_gradient(theta)`` (``mu = 0``): the engine's loss sees only
    the parameters being trained, not the state's EMA tree. ``num_times``: N of Algorithm 2.
    """
    times = consistency_times(teacher.path, teacher.discrete, num_times)
    if solver not in ODE_SOLVERS:
        raise ValueError(f"unknown ODE solver {solver!r}; choose one of {ODE_SOLVERS}")
    if not sigma_data > 0:
        raise ValueError(f"sigma_data must be > 0, got {sigma_data}")

    def loss(params, x0, labels, key, dropout_key):
        theta = params["student"]
        return consistency_loss(
            student, theta, theta, teacher, params["teacher"], x0, labels, key,
            jnp.asarray(times), solver=solver, sigma_data=sigma_data, dropout_key=dropout_key,
        )  # fmt: skip

    return loss
