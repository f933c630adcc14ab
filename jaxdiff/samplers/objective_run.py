"""Sampling from an objective instead of a ``Schedule``: the checks and the network call.

An objective (see :func:`jaxdiff.samplers.sample`) is any hashable object with

- ``path``: a :class:`jaxdiff.paths.GaussianPath` (``alpha(t)``, ``sigma(t)``, ``t_min``,
  ``t_max``);
- ``discrete``: True when its network is evaluated at integer t only (then ``path`` is a
  :class:`jaxdiff.paths.DiscreteVP` and the run uses its schedule's integer grids);
- ``denoise(net, x_t, t) -> (x0_hat, eps_hat)``: the data and noise estimates at ``(x_t, t)``,
  ``t`` ``(B,)`` float on ``path``, calling ``net(x_in, c)`` with the input and conditioning it
  chooses (EDM's preconditioning, a velocity, an eps, ...).

The objective decides what the network predicts, so the solver's ``prediction`` stays "eps".
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxdiff.samplers.base import Solver
from jaxdiff.samplers.guidance import check_output

__all__ = ["check_objective", "objective_denoise", "run_dtype", "steps_bound"]


def check_objective(objective, solver: Solver) -> None:
    """Refuse what is not an objective, or a solver that cannot run on it (a ``ValueError`` /
    ``TypeError`` naming the fix)."""
    missing = [k for k in ("path", "discrete", "denoise") if not hasattr(objective, k)]
    if missing or not callable(objective.denoise):
        raise TypeError(
            "schedule must be a jaxdiff Schedule (make_schedule(...)) or an objective with "
            f".path, .discrete and .denoise(net, x_t, t); got {type(objective).__name__} "
            f"without {', '.join(missing) or 'a callable denoise'}"
        )
    try:
        hash(objective)
    except TypeError:
        raise TypeError(
            f"the objective {type(objective).__name__} must be hashable (a frozen dataclass): "
            "it keys the cache of compiled samplers"
        ) from None
    if solver.prediction != "eps":
        raise ValueError(
            f"prediction={solver.prediction!r} does not apply with an objective: its denoise "
            "converts the network's output; leave the solver's prediction at 'eps'"
        )
    if objective.discrete and not hasattr(objective.path, "schedule"):
        raise TypeError(
            "a discrete objective's path must be a jaxdiff.paths.DiscreteVP (its schedule gives "
            f"the integer timesteps), got {type(objective.path).__name__}"
        )
    if objective.discrete and solver.needs_rates:
        raise ValueError(
            f"{solver.name} steps in the path's own time and needs alpha'(t), sigma'(t): use an "
            "objective on a continuous path (discrete=False)"
        )


def steps_bound(objective) -> int | None:
    """The largest number of steps: T for a discrete objective, None (no bound) otherwise."""
    return objective.path.schedule.num_steps if objective.discrete else None


def objective_denoise(objective, apply, params, x, t_eval, labels, w, *, guided: bool,
                      conditional: bool, num_classes: int | None):  # fmt: skip
    """``(eps, x0)`` of ``objective`` at ``(x, t_eval)`` with the model ``apply``.

    The network the objective sees is ``net(x_in, c) = apply(params, x_in, c[, labels])``;
    with guidance, ``net`` returns ``out_c + w (out_c - out_u)`` of one batched call on the
    conditional and null labels (Ho & Salimans 2022, eq. 6). Guiding the raw output is guiding
    the estimates: at fixed ``(x_t, t)`` every objective's ``x0_hat`` and ``eps_hat`` are affine
    in the network output, ``x0_hat = A x_t + B out``, so ``(1 + w) x0_hat(out_c) - w
    x0_hat(out_u) = x0_hat((1 + w) out_c - w out_u)``: the weights sum to 1 and ``A x_t``
    passes through.
    """
    b = x.shape[0]

    def net(x_in, c):
        c = jnp.asarray(c)
        c = jnp.broadcast_to(c, (x_in.shape[0],)) if c.ndim == 0 else c
        if guided:
            null = jnp.full((b,), num_classes, jnp.int32)
            out = apply(params, jnp.concatenate([x_in, x_in]), jnp.concatenate([c, c]),
                        jnp.concatenate([labels, null]))  # fmt: skip
            check_output(out, (2 * b, *x_in.shape[1:]))
            cond, uncond = out[:b], out[b:]
            return cond + w * (cond - uncond)
        out = apply(params, x_in, c, labels) if conditional else apply(params, x_in, c)
        check_output(out, x_in.shape)
        return out

    t = jnp.full((b,), t_eval, x.dtype)
    x0, eps = objective.denoise(net, x, t)
    return jnp.asarray(eps).astype(x.dtype), jnp.asarray(x0).astype(x.dtype)


def run_dtype(x_T) -> jnp.dtype:
    """The dtype of a run from an objective: ``x_T``'s if given, else JAX's default float."""
    if x_T is not None and jnp.issubdtype(jnp.result_type(x_T), jnp.floating):
        return jnp.dtype(jnp.result_type(x_T))
    return jnp.dtype(jnp.result_type(float))
