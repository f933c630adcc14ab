"""Sampling distilled students: deterministic DDIM on a halving grid (a teacher, or a progressive
student of N steps) and consistency sampling (Song et al. 2023, Algorithm 1).

Both are compiled ``lax.scan`` loops over the steps, with the parameters as traced arguments;
``x_T (B, ...)`` is the starting noise (``prior_std(path) * N(0, I)``; pass the same ``x_T`` to
compare models on the same noise), ``labels (B,)`` or None.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.distill.consistency import consistency_function, consistency_times
from jaxdiff.distill.denoiser import DenoiserLike, alpha_sigma, ddim_step, halving_grid

__all__ = ["consistency_sample", "consistency_sample_times", "ddim_sample"]


@functools.partial(jax.jit, static_argnames=("net",))
def _ddim_loop(net, params, x_T, labels, grid):
    def body(x, ts):
        t, t_next = ts
        tb = jnp.full(x.shape[:1], t)
        x0, eps = net(params, x, tb, labels)
        return ddim_step(net.path, x0, eps, jnp.full(x.shape[:1], t_next)), None

    return jax.lax.scan(body, x_T, (grid[:-1], grid[1:]))[0]


def ddim_sample(net: DenoiserLike, params: Any, x_T: jax.Array, n: int, labels=None) -> jax.Array:
    """``n`` deterministic DDIM steps (eta 0, DDIM eq. 12) on :func:`halving_grid` from
    ``x_T`` at ``t_max`` to clean data: a teacher at ``2n`` steps, or its progressive student
    at ``n``. Returns the samples, shape of ``x_T``."""
    grid = jnp.asarray(halving_grid(net.path, net.discrete, n))
    return _ddim_loop(net, params, x_T, labels, grid)


def consistency_sample_times(path, discrete: bool, steps: int, num_times: int) -> np.ndarray:
    """The ``steps`` times of multistep consistency sampling, from ``t_max`` down: evenly spaced
    points of the training grid :func:`consistency_times` (``steps = 1``: ``t_max`` alone)."""
    times = consistency_times(path, discrete, num_times)
    if not 1 <= steps <= num_times - 1:
        raise ValueError(f"steps must lie in [1, {num_times - 1}], got {steps}")
    idx = np.round(np.linspace(num_times - 1, 0, steps + 1)[:-1]).astype(int)
    return times[idx]


@functools.partial(jax.jit, static_argnames=("net", "sigma_data"))
def _consistency_loop(net, params, x_T, labels, taus, key, sigma_data):
    b = x_T.shape[:1]
    x = consistency_function(net, params, x_T, jnp.full(b, taus[0]), labels, sigma_data=sigma_data)

    def body(x, inputs):
        tau, k = inputs
        a, s = alpha_sigma(net.path, tau)
        x_tau = a * x + s * jax.random.normal(k, x.shape, x.dtype)  # re-noise to tau
        return consistency_function(
            net, params, x_tau, jnp.full(b, tau), labels, sigma_data=sigma_data
        ), None

    keys = jax.random.split(key, max(taus.shape[0] - 1, 1))[: taus.shape[0] - 1]
    return jax.lax.scan(body, x, (taus[1:], keys))[0]


def consistency_sample(
    net: DenoiserLike,
    params: Any,
    x_T: jax.Array,
    taus,
    key: jax.Array,
    labels=None,
    *,
    sigma_data: float = 0.5,
) -> jax.Array:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1): ``x = f(x_T, tau_1)``,
    then for each later ``tau``: re-noise ``x_tau = alpha(tau) x + sigma(tau) z`` (the
    algorithm's ``x + sqrt(tau^2 - eps^2) z`` on a variance-preserving path) and ``x =
    f(x_tau, tau)``. ``taus`` decreasing (:func:`consistency_sample_times`); one entry is
    one-step generation. Returns the samples, shape of ``x_T``."""
    taus = jnp.asarray(taus)
    return _consistency_loop(net, params, x_T, labels, taus, key, float(sigma_data))
