"""The solver interface: coefficients in float64 NumPy, then an affine ``step`` on device.

A solver advances the reverse process one grid point at a time. Everything that depends only on
the grid (noise levels, step sizes, multistep weights) is computed once, in float64 NumPy, by
:meth:`Solver.coefficients`, one row per scan step; the compiled :meth:`Solver.step` then only
forms an affine combination of the current sample, the network's predictions, the solver's
state (past predictions) and, for stochastic solvers, one normal draw. So every solver is
tested by its coefficients alone, and the scan body stays a few multiply-adds around the
network call.

Notation (every solver docstring uses it): the step goes from grid point ``s`` to ``t``
(``t`` less noisy), ``x_s = alpha_s x0 + sigma_s eps`` (DDPM eq. 4, ``alpha = sqrt(abar)``),
``lambda = log(alpha / sigma)`` (half log-SNR), ``h = lambda_t - lambda_s > 0`` and
``k = sigma / alpha``, the noise level of the variance-exploding form ``x / alpha = x0 + k eps``
used by Karras et al. 2022 (EDM). ``t`` may be the clean sample (``alpha = 1``, ``sigma = 0``,
``lambda = +inf``), where multistep and second-stage terms are switched off.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Points", "Solver", "linear_step"]

State = tuple[jax.Array, ...]


class Points(NamedTuple):
    """The grid seen by each scan step; every field has ``L`` rows (one per scan step).

    Attributes:
      alpha_s, sigma_s, lam_s: ``(L,)`` float64 at the step's start point s.
      alpha_t, sigma_t, lam_t: ``(L,)`` float64 at its target t (``lam_t = inf`` when clean).
      clean: ``(L,)`` bool, the target is the clean sample.
      order: ``(L,)`` int, the multistep order this step may use (1 after a (re)start, when the
        target is clean, and at the last steps of short runs with ``lower_order_final``).
      stage: ``(L,)`` int, which network evaluation of a multi-stage step this is (0, 1, ...).
      lam_prev, sigma_prev: ``(L, 3)`` float64 at the start points of the previous
        three steps (column 0 the last one), NaN where the history does not reach.
      order_prev: ``(L,)`` int, the order of the previous step (0 when there is none).
    """

    alpha_s: np.ndarray
    sigma_s: np.ndarray
    lam_s: np.ndarray
    alpha_t: np.ndarray
    sigma_t: np.ndarray
    lam_t: np.ndarray
    clean: np.ndarray
    order: np.ndarray
    stage: np.ndarray
    lam_prev: np.ndarray
    sigma_prev: np.ndarray
    order_prev: np.ndarray


@dataclasses.dataclass(frozen=True)
class Solver:
    """Base class of the solvers; subclasses set the class attributes and two methods.

    Class attributes:
      name: the ``sampler=`` name.
      max_order: the multistep order (1 for one-step solvers).
      history: how many past data predictions the state keeps.
      stages: network evaluations per step (2 for Heun; the last step to the clean sample
        takes one).
      final: ``"clean"``: the last step goes to x0; ``"sigma_min"``: to t = 0 unless the grid
        already ends there (see :func:`jaxdiff.samplers.plan.step_targets`).
      lower_order_final_below: with ``lower_order_final``, runs of fewer steps than this take
        order ``min(order, steps left)`` at their last steps; None: never.
      default_steps: the default number of steps (None: the schedule's T).
      default_spacing: the default grid (:data:`jaxdiff.samplers.grids.SPACINGS`).
      stochastic: whether :meth:`step` takes a standard normal draw ``z`` (a property where it
        depends on a field, as DDIM's ``eta``).
    """

    name: ClassVar[str]
    max_order: ClassVar[int] = 1
    history: ClassVar[int] = 0
    stages: ClassVar[int] = 1
    final: ClassVar[str] = "clean"
    lower_order_final_below: ClassVar[float | None] = None
    default_steps: ClassVar[int | None] = None
    default_spacing: ClassVar[str] = "trailing"
    stochastic: ClassVar[bool] = False

    def coefficients(self, p: Points) -> dict[str, np.ndarray]:
        """Per-scan-step coefficients, each an ``(L,)`` float64 array (see subclasses)."""
        raise NotImplementedError

    def init(self, x: jax.Array) -> State:
        """The solver state before the first step: ``history`` zero arrays of ``x``'s shape.

        The driver reads only the structure (``jax.eval_shape``) and allocates the state as
        zeros, so that every solver shares one compiled initialisation: a state must start at
        zero (past predictions that the first steps' coefficients do not use).
        """
        return tuple(jnp.zeros_like(x) for _ in range(self.history))

    def step(
        self,
        state: State,
        x: jax.Array,
        eps: jax.Array,
        x0: jax.Array,
        c: dict[str, jax.Array],
        z: jax.Array | None,
    ) -> tuple[jax.Array, State]:
        """One scan step: ``x`` ``(b, ...)`` at the evaluation point, the network's ``eps`` and
        ``x0`` there, this step's scalar coefficients ``c`` and ``z`` (stochastic solvers) ->
        ``(x at the target, new state)``."""
        return linear_step(state, x, eps, x0, c, z)


def linear_step(state: State, x, eps, x0, c: dict[str, Any], z) -> tuple[jax.Array, State]:
    """``x_t = c["x"] x + c["x0"] x0 + c["eps"] eps + sum_k c["h{k}"] state[k] + c["z"] z``.

    Missing keys are zero terms. The state is the history of data predictions, newest first:
    it becomes ``(x0, state[0], ..., state[-2])``. Every one-step and multistep solver whose
    update is linear in past data predictions (DDPM, DDIM, Euler, DPM-Solver++) is this.
    """
    out = 0.0
    for name, value in (("x", x), ("x0", x0), ("eps", eps), ("z", z)):
        if name in c:
            out = out + c[name] * value
    for k, past in enumerate(state):
        out = out + c[f"h{k}"] * past
    new_state = (x0, *state[:-1]) if state else state
    return out, new_state


def ve_level(alpha: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``k = sigma / alpha`` (0 at the clean sample)."""
    return sigma / alpha


def safe(values: np.ndarray, use: np.ndarray) -> np.ndarray:
    """``values`` where ``use``, else 0 (no NaN or inf from unused branches)."""
    with np.errstate(all="ignore"):
        return np.where(use, np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
