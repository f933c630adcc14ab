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
import math
import numbers
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.parameterization import PREDICTIONS
from jaxdiff.samplers.grids import SPACINGS

__all__ = ["Points", "Solver", "check_choice", "check_float", "check_int", "linear_step"]

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
      t_s, t_t: ``(L,)`` float64 times of s and t on the path (plans of a ``Schedule``: the
        integer timesteps, -1 for the clean sample).
      dalpha_s, dsigma_s, dalpha_t, dsigma_t: ``(L,)`` float64 rates ``alpha'(t)``,
        ``sigma'(t)`` at s and t (continuous paths only; NaN on a ``Schedule``'s integer grid,
        where the solvers in the flow's own time are refused).
      vp: True when every point has ``alpha^2 + sigma^2 = 1`` (every ``Schedule``): the
        ancestral solvers then keep their formulas in ``abar``.
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
    t_s: np.ndarray | None = None
    t_t: np.ndarray | None = None
    dalpha_s: np.ndarray | None = None
    dsigma_s: np.ndarray | None = None
    dalpha_t: np.ndarray | None = None
    dsigma_t: np.ndarray | None = None
    vp: bool = True


def check_int(value, name: str) -> int:
    """``value`` as an int, or a ``TypeError`` naming ``name`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    return int(value)


def check_float(value, name: str) -> float:
    """``value`` as a finite float, or a ``TypeError`` / ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a Python float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_choice(value, name: str, choices) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
    return value


@dataclasses.dataclass(frozen=True)
class Solver:
    """Base class of the solvers: a frozen dataclass that checks its fields when made.

    A solver is passed to :func:`jaxdiff.samplers.sample` as an object
    (``solver=DDIM(eta=0.5)``); its options are its fields. Subclasses set the class
    attributes, :meth:`coefficients` and (if not :func:`linear_step`) :meth:`step`, and check
    their own fields in ``__post_init__`` (calling ``super().__post_init__()``). A new solver is
    one module plus one line in :data:`jaxdiff.samplers.registry.SOLVERS` (or pass the object
    directly).

    Fields shared by every solver (keyword-only):
      prediction: what the model predicts, ``"eps"``, ``"x0"`` or ``"v"``; the network output
        is turned into the ``(eps, x0)`` pair the solver steps with (as diffusers' schedulers'
        ``prediction_type``).
      clip_x0: clip the predicted x0 to ``[-clip_x0, clip_x0]`` at every step, eps recomputed
        from it (1.0 for images in [-1, 1]); None = no clipping (diffusers' ``clip_sample``).
      spacing: the timestep grid, one of :data:`jaxdiff.samplers.grids.SPACINGS`; None: the
        solver's ``default_spacing``.

    Class attributes:
      name: its name in :data:`jaxdiff.samplers.SOLVERS` (used in messages).
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
      needs_rates: the solver steps in the path's own time with ``alpha'(t)`` and
        ``sigma'(t)`` (the flow solvers): it needs a continuous path, not a ``Schedule``.
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
    needs_rates: ClassVar[bool] = False

    prediction: str = dataclasses.field(default="eps", kw_only=True)
    clip_x0: float | None = dataclasses.field(default=None, kw_only=True)
    spacing: str | None = dataclasses.field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        check_choice(self.prediction, "prediction", PREDICTIONS)
        if self.clip_x0 is not None:
            clip = check_float(self.clip_x0, "clip_x0")
            if clip <= 0:
                raise ValueError(f"clip_x0 must be > 0 (or None), got {clip}")
            object.__setattr__(self, "clip_x0", clip)
        if self.spacing is not None:
            check_choice(self.spacing, "spacing", SPACINGS)

    @property
    def grid(self) -> str:
        """The spacing this solver runs on: ``spacing``, or the class's ``default_spacing``."""
        return self.spacing or self.default_spacing

    def for_compile(self) -> Solver:
        """This solver without the fields that only shape the plan (``spacing``,
        ``lower_order_final``): the key of the compiled loop, which they do not change."""
        fields = {f.name for f in dataclasses.fields(self)}
        drop = {"spacing": None, "lower_order_final": True}
        return dataclasses.replace(self, **{k: v for k, v in drop.items() if k in fields})

    def coefficients(self, p: Points) -> dict[str, np.ndarray]:
        """Per-scan-step coefficients, each an ``(L,)`` float64 array (see subclasses)."""
        raise NotImplementedError

    def churn(self, k: np.ndarray, steps: int) -> np.ndarray:
        """EDM's ``gamma_i`` (Karras et al. 2022, Alg. 2, line 4) at the step starts' noise levels
        ``k = sigma / alpha`` ``(N,)``: each step first raises ``k`` to ``k (1 + gamma_i)`` with
        fresh noise. Zeros (no churn) unless a solver overrides it."""
        return np.zeros_like(np.asarray(k, np.float64))

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
