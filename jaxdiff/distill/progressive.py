"""Progressive distillation (Salimans & Ho 2022, Algorithm 2): a student learns in one DDIM step
what its teacher does in two, and becomes the next round's teacher (N -> N/2 -> ... -> 1).

One training example: data ``x``, noise ``eps``, a student step ``i`` uniform in ``1..N`` on
the student's grid ``t = g_N[i-1] > t'' = g_N[i]`` with the teacher's midpoint ``t' =
g_2N[2i-1]`` (:func:`jaxdiff.distill.halving_grid`, which nests). With ``z_t = alpha_t x +
sigma_t eps``, the teacher takes two deterministic DDIM steps ``z_t -> z_t' -> z_t''`` and the
student's target is the ``x0`` that takes ``z_t`` to ``z_t''`` in one DDIM step (Algorithm 2):

    x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)

(``x~ = z_t''`` when ``t''`` is the clean end). The loss is the truncated-SNR weighted
``max(SNR_t, 1) ||x~ - x^_student||^2`` with ``SNR_t = alpha_t^2 / sigma_t^2`` (sec. 4, "truncated
SNR" weighting), the student predicting ``v`` (sec. 4), initialised from the teacher.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.distill.denoiser import DenoiserLike, _per_example, alpha_sigma, ddim_step
from jaxdiff.distill.denoiser import halving_grid as _grid

__all__ = [
    "make_progressive_loss",
    "progressive_loss",
    "progressive_target",
    "teacher_two_steps",
    "truncated_snr_weight",
]


def teacher_two_steps(
    teacher: DenoiserLike, params: Any, z_t, t, t_mid, t_next, labels=None
) -> jax.Array:
    """Two deterministic DDIM steps ``z_t -> z_t' -> z_t''`` of the teacher (DDIM eq. 12, eta
    0); ``z_t (B, ...)``, times ``(B,)``. Returns ``z_t''``, shape of ``z_t``."""
    x0, eps = teacher(params, z_t, t, labels)
    z_mid = ddim_step(teacher.path, x0, eps, t_mid)
    x0, eps = teacher(params, z_mid, t_mid, labels)
    return ddim_step(teacher.path, x0, eps, t_next)


def progressive_target(path, z_t, t, z_next, t_next) -> jax.Array:
    """The ``x0`` whose one DDIM step from ``(z_t, t)`` lands on ``z_next`` at ``t_next``
    (Salimans & Ho 2022, Algorithm 2): ``(z_next - r z_t) / (alpha_next - r alpha_t)``, ``r =
    sigma_next / sigma_t``. Shapes ``(B, ...)``, times ``(B,)``."""
    a, s = alpha_sigma(path, _per_example(t, z_t))
    a_n, s_n = alpha_sigma(path, _per_example(t_next, z_t))
    ratio = s_n / s
    return (z_next - ratio * z_t) / (a_n - ratio * a)


def truncated_snr_weight(path, t) -> jax.Array:
    """``max(alpha_t^2 / sigma_t^2, 1)``: the "truncated SNR" loss weight of Salimans & Ho
    2022 (sec. 4) for an ``x0`` error; shape of ``t``."""
    a, s = alpha_sigma(path, t)
    return jnp.maximum(a**2 / s**2, 1.0)


def progressive_loss(
    student: DenoiserLike,
    student_params: Any,
    teacher: DenoiserLike,
    teacher_params: Any,
    x0: jax.Array,
    labels,
    key: jax.Array,
    n: int,
    *,
    dropout_key: jax.Array | None = None,
) -> jax.Array:
    """The batch mean of ``max(SNR_t, 1) mean_dims (x~ - x^_student)^2`` for a student of
    ``n`` steps learning a teacher of ``2n`` (module docstring; Algorithm 2).

    Args:
      student, teacher: denoisers on the same path (:class:`jaxdiff.distill.Denoiser`).
      student_params, teacher_params: their parameters; no gradient flows into the teacher's.
      x0: data ``(B, ...)``; labels ``(B,)`` or None; key: PRNG key (steps and noise).
      n: the student's steps (a Python int, >= 1).

    Returns:
      A scalar.
    """
    fine = jnp.asarray(_grid(teacher.path, teacher.discrete, 2 * n))
    k_i, k_eps = jax.random.split(key)
    i = jax.random.randint(k_i, x0.shape[:1], 1, n + 1)  # the student's step, 1..n
    t, t_mid, t_next = fine[2 * i - 2], fine[2 * i - 1], fine[2 * i]
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    a, s = alpha_sigma(teacher.path, _per_example(t, x0))
    z_t = a * x0 + s * eps  # DDPM eq. 4
    teacher_params = jax.lax.stop_gradient(teacher_params)
    z_next = teacher_two_steps(teacher, teacher_params, z_t, t, t_mid, t_next, labels)
    target = jax.lax.stop_gradient(progressive_target(teacher.path, z_t, t, z_next, t_next))
    x0_student, _ = student(student_params, z_t, t, labels, dropout_key=dropout_key)
    err = jnp.mean((target - x0_student) ** 2, axis=tuple(range(1, x0.ndim)))
    return jnp.mean(truncated_snr_weight(teacher.path, t) * err)


def make_progressive_loss(student: DenoiserLike, teacher: DenoiserLike, n: int):
    """``loss(params, x0, labels, key, dropout_key) -> scalar`` for
    :class:`jaxdiff.train.Trainer`, with ``params = {"student": ..., "teacher": ...}``.

    The teacher's parameters travel in the training state as a frozen sub-tree, traced like the
    student's (not constants of the compiled program): its gradient is exactly zero, so Adam
    (without weight decay) leaves it unchanged to the bit
    (:func:`jaxdiff.distill.check_frozen_teacher` checks the optimiser). ``n``: the student's steps.
    """
    if n < 1 or not isinstance(n, int | np.integer):
        raise ValueError(f"the student's steps n must be an int >= 1, got {n!r}")
    _grid(teacher.path, teacher.discrete, 2 * int(n))  # 2n steps must fit the teacher

    def loss(params, x0, labels, key, dropout_key):
        return progressive_loss(
            student, params["student"], teacher, params["teacher"], x0, labels, key, int(n),
            dropout_key=dropout_key,
        )  # fmt: skip

    return loss
