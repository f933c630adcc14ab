"""RePaint inpainting (Lugmayr et al. 2022) as a wrapper around any solver's steps.

Two pieces: :func:`visit_order`, the sequence of solver steps with RePaint's jumps back
(NumPy, used when the plan is built), and the on-device updates that re-noise a sample for a
jump (:func:`renoise`) and put the known pixels back after each step (:func:`replace_known`).
Neither depends on the solver, so inpainting composes with every one of them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["renoise", "replace_known", "visit_order"]


def visit_order(num_steps: int, resample_jumps: int, jump_length: int) -> tuple[np.ndarray, ...]:
    """The solver steps in the order they run, with RePaint's resampling jumps.

    Lugmayr et al. 2022, sec. 4.2 (Algorithm 1 with ``U = resample_jumps + 1``): after every
    ``jump_length`` steps, re-noise back ``jump_length`` steps and redo them,
    ``resample_jumps`` times. Never after the final step, so the output is the final step's.

    Returns:
      ``(steps, jump_from)``: int arrays of one entry per visit; ``steps[v]`` is the index of
      the step run at visit ``v`` and ``jump_from[v] = i >= 0`` when that visit starts with a
      jump back from the target of step ``i`` (else -1).
    """
    steps, jump_from = [], []
    for i in range(num_steps):
        steps.append(i)
        jump_from.append(-1)
        if resample_jumps and i < num_steps - 1 and (i + 1) % jump_length == 0:
            start = i + 1 - jump_length
            for _ in range(resample_jumps):
                steps.append(start)
                jump_from.append(i)
                for k in range(start + 1, i + 1):
                    steps.append(k)
                    jump_from.append(-1)
    return np.asarray(steps, np.int64), np.asarray(jump_from, np.int64)


def renoise(x: jax.Array, scale, noise_std, z: jax.Array, active) -> jax.Array:
    """A jump back: ``x_t ~ q(x_t | x_t') = N(sqrt(abar_t / abar_t') x_t', 1 - abar_t / abar_t')``
    (DDPM eq. 2 iterated) where ``active``, else ``x`` unchanged. Scalars from the plan."""
    return jnp.where(active, scale * x + noise_std * z, x)


def replace_known(x, mask, known, alpha, sigma, z, paste) -> jax.Array:
    """RePaint's replacement: known pixels (``mask``) become a draw of ``q(x_t | known) =
    N(alpha_t known, sigma_t^2)`` (DDPM eq. 4) at the step's target, or ``known`` itself
    after the final step (``paste``), so the output keeps them bit for bit."""
    known_t = jnp.where(paste, known, alpha * known + sigma * z)
    return jnp.where(mask, known_t, x)
