"""Teachers and students as denoisers on a Gaussian path, and the deterministic DDIM step.

Distillation needs three things of a model, whichever objective trained it: its Gaussian path
``x_t = alpha(t) x0 + sigma(t) eps`` (:mod:`jaxdiff.paths`), its estimates ``(x0, eps)`` at
``(x_t, t)``, and whether its times are the integers of a DDPM schedule. :class:`Denoiser`
gives them for a network ``apply(params, x, t, labels=None, *, dropout_key=None)`` of any
prediction (``eps``, ``x0``, ``v``; :func:`jaxdiff.paths.to_x0_eps`). A continuous-time
objective with its own ``denoise`` (EDM's preconditioning, flow matching) plugs in as any
object with the same fields and call (:class:`DenoiserLike`).

Times: a grid of distillation runs from the noisiest time ``t_max`` down to :data:`CLEAN`
(``-1``), a time below every path where ``alpha = 1`` and ``sigma = 0``: a DDIM step to it
returns the ``x0`` estimate, as DDIM's last step does (DDIM eq. 12 with ``alpha_0 = 1``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.paths import DiscreteVP, GaussianPath, to_x0_eps
from jaxdiff.schedules import Schedule

__all__ = [
    "CLEAN",
    "Denoiser",
    "DenoiserLike",
    "alpha_sigma",
    "ddim_step",
    "discrete_denoiser",
    "halving_grid",
    "prior_std",
]

#: The time of clean data on every grid: ``alpha = 1``, ``sigma = 0`` (below every path).
CLEAN = -1


class DenoiserLike(Protocol):
    """What distillation needs of a teacher or student.

    ``path``: its Gaussian path; ``discrete``: integer times ``0..T-1`` (a DDPM schedule) or
    continuous ones; calling it gives ``(x0, eps)`` estimates, each of ``x_t``'s shape, for
    ``x_t (B, ...)``, ``t (B,)`` and ``labels (B,)`` or None.
    """

    path: GaussianPath
    discrete: bool

    def __call__(
        self, params: Any, x_t: jax.Array, t: jax.Array, labels=None, *, dropout_key=None
    ) -> tuple[jax.Array, jax.Array]: ...


def _per_example(t: jax.Array, x: jax.Array) -> jax.Array:
    """``t (B,)`` (or a scalar) shaped ``(B, 1, ..., 1)`` to broadcast against ``x (B, ...)``."""
    t = jnp.asarray(t)
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """A network with its path and prediction: ``denoiser(params, x_t, t, labels) -> (x0, eps)``.

    Attributes:
      apply: ``apply(params, x, t, labels=None, *, dropout_key=None) -> output`` (the
        ``split_model`` contract); ``t (B,)``, int32 when ``discrete``.
      path: the Gaussian path the network was trained on.
      prediction: what its output is: ``"eps"``, ``"x0"``, ``"v"`` or ``"velocity"``.
      discrete: integer times (a DDPM schedule, :class:`jaxdiff.paths.DiscreteVP`).
    """

    apply: Callable[..., jax.Array]
    path: GaussianPath
    prediction: str
    discrete: bool = True

    def __call__(self, params, x_t, t, labels=None, *, dropout_key=None):
        t = jnp.asarray(t, jnp.int32 if self.discrete else x_t.dtype)
        if labels is None:
            out = self.apply(params, x_t, t, dropout_key=dropout_key)
        else:
            out = self.apply(params, x_t, t, labels, dropout_key=dropout_key)
        return to_x0_eps(self.path, self.prediction, out, x_t, _per_example(t, x_t))


def discrete_denoiser(apply: Callable, schedule: Schedule, prediction: str) -> Denoiser:
    """The :class:`Denoiser` of a jaxdiff model trained on a DDPM ``schedule`` (DDPM eq. 4 at
    integer ``t``), e.g. ``discrete_denoiser(run.apply, run.schedule, run.spec.train.prediction)``
    for a run of :func:`jaxdiff.runs.load_run`."""
    return Denoiser(apply, DiscreteVP(schedule), prediction, discrete=True)


def alpha_sigma(path: GaussianPath, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(alpha(t), sigma(t))`` of ``path`` with ``(1, 0)`` at :data:`CLEAN` (any ``t < 0``).

    ``t`` of any shape; times are clipped into ``[t_min, t_max]`` before the path is read, so
    the clean branch never reads outside a schedule's tables.
    """
    t = jnp.asarray(t)
    inside = jnp.clip(t, path.t_min, path.t_max).astype(t.dtype)
    clean = t < 0
    a, s = path.alpha(inside), path.sigma(inside)
    return jnp.where(clean, jnp.ones_like(a), a), jnp.where(clean, jnp.zeros_like(s), s)


def ddim_step(path: GaussianPath, x0: jax.Array, eps: jax.Array, t_next) -> jax.Array:
    """Deterministic DDIM step to ``t_next`` (DDIM eq. 12 with ``sigma_t = 0``):
    ``x_next = alpha(t_next) x0 + sigma(t_next) eps`` for the estimates ``(x0, eps)`` at the
    current state (shape ``(B, ...)``; ``t_next (B,)`` or a scalar). On EDM's path (``alpha =
    1``) this is Euler's step in ``sigma``; to :data:`CLEAN` it returns ``x0``."""
    a, s = alpha_sigma(path, _per_example(t_next, x0))
    return a * x0 + s * eps


def prior_std(path: GaussianPath) -> jax.Array:
    """Standard deviation of the starting noise ``x_T``: ``sqrt(alpha^2 + sigma^2)`` at
    ``t_max`` (1 on a variance-preserving path, about ``sigma_max`` on EDM's)."""
    a, s = path.alpha(jnp.asarray(path.t_max)), path.sigma(jnp.asarray(path.t_max))
    return jnp.sqrt(a**2 + s**2)


def halving_grid(path: GaussianPath, discrete: bool, n: int) -> np.ndarray:
    """The ``n + 1`` times of an ``n``-step sampler, from ``t_max`` down to :data:`CLEAN`.

    Discrete (``T = t_max + 1`` steps): ``t_j = round(T (n - j) / n) - 1``, so ``t_0 = T - 1``
    and ``t_n = -1``; continuous: ``t_j = t_min + (t_max - t_min) (n - j) / n`` for ``j < n``.
    The grids nest: ``halving_grid(2n)[::2] == halving_grid(n)``, so the teacher's two steps
    of progressive distillation land on the student's grid. int32 (discrete) or float32.

    Raises:
      ValueError: ``n < 1``, or (discrete) ``n > T``, when two times would coincide.
    """
    if n < 1:
        raise ValueError(f"a sampler needs n >= 1 steps, got {n}")
    frac = (n - np.arange(n + 1)) / n  # float64: the same value for (2n - 2j) / 2n
    if discrete:
        T = round(path.t_max) + 1
        if n > T:
            raise ValueError(f"{n} steps need at least {n} diffusion steps; the teacher has T={T}")
        return (np.round(T * frac) - 1).astype(np.int32)
    grid = path.t_min + (path.t_max - path.t_min) * frac
    grid[-1] = CLEAN
    return grid.astype(np.float32)
