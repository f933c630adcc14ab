"""Small data sets that need no download: sklearn's 8x8 digits, toy point clouds, 1-D mixtures.

* :func:`load_digits` -- sklearn's 8x8 digits, float32 ``(1797, 8, 8, 1)`` in ``[0, 1]``.
* :func:`make_points` -- 2-D moons / swiss roll / s-curve and the 3-D swiss roll, float32
  ``(n, D)``.
* :func:`gaussian_mixture_1d` / :func:`gaussian_mixture_pdf` -- a 1-D Gaussian mixture sampler and
  its exact density (forward-process demos: q(x_t) of a mixture is again a mixture).

scikit-learn is imported lazily, so ``import jaxdiff`` stays fast.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DEFAULT_MIXTURE",
    "POINT_DATASETS",
    "gaussian_mixture_1d",
    "gaussian_mixture_moments",
    "gaussian_mixture_pdf",
    "load_digits",
    "make_points",
]


def load_digits(*, scale: str = "unit") -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 handwritten digits (1,797 images, bundled with scikit-learn; no download).

    Args:
      scale: ``"unit"`` (default, the tutorial's ``pixel / 16``) for values in ``[0, 1]``, or
        ``"symmetric"`` for ``pixel / 8 - 1`` in ``[-1, 1]``.

    Returns:
      ``(images, labels)``: float32 ``(1797, 8, 8, 1)`` and int32 ``(1797,)`` in ``0..9``.
    """
    if scale not in ("unit", "symmetric"):
        raise ValueError(f"scale must be 'unit' ([0, 1]) or 'symmetric' ([-1, 1]); got {scale!r}.")
    from sklearn.datasets import load_digits as _sklearn_digits

    bunch = _sklearn_digits()
    pixels = np.asarray(bunch.images, dtype=np.float32)  # (1797, 8, 8), integers 0..16
    images = pixels / 16.0 if scale == "unit" else pixels / 8.0 - 1.0
    return images[..., None].astype(np.float32), np.asarray(bunch.target, dtype=np.int32)


#: name -> (dimension D, default noise, recipe and extent of the cloud with the default noise)
POINT_DATASETS: dict[str, tuple[int, float, str]] = {
    "moons": (2, 0.05, "make_moons(n, noise), unscaled: x in ~[-1.2, 2.2], y in ~[-0.7, 1.2]"),
    "swiss_roll": (2, 0.1, "make_swiss_roll(n, noise)[:, [0, 2]] / 10: x, y in ~[-1.1, 1.4]"),
    "s_curve": (
        2,
        0.1,
        "make_s_curve(n, noise)[:, [0, 2]] / 10: x in ~[-0.1, 0.1], y ~[-0.2, 0.2]",
    ),
    "swiss_roll_3d": (3, 0.1, "make_swiss_roll(n, noise) / 10, all columns; height in ~[0, 2.1]"),
}


def make_points(
    name: str, n: int = 10_000, *, seed: int = 0, noise: float | None = None
) -> np.ndarray:
    """Toy point clouds of the 2-D diffusion tutorials, deterministic in ``seed``.

    ================  ===  =====  ==========================================================
    name              D    noise  recipe (sklearn.datasets)
    ================  ===  =====  ==========================================================
    ``moons``         2    0.05   ``make_moons(n, noise)`` (unscaled)
    ``swiss_roll``    2    0.1    ``make_swiss_roll(n, noise)[0][:, [0, 2]] / 10``
    ``s_curve``       2    0.1    ``make_s_curve(n, noise)[0][:, [0, 2]] / 10``
    ``swiss_roll_3d`` 3    0.1    ``make_swiss_roll(n, noise)[0] / 10``
    ================  ===  =====  ==========================================================

    Args:
      name: one of :data:`POINT_DATASETS`.
      n: number of points, ``>= 1``.
      seed: integer seed passed to sklearn as ``random_state``.
      noise: standard deviation of the Gaussian noise sklearn adds, in sklearn's (unscaled)
        units; ``None`` uses the default in the table.

    Returns:
      float32 NumPy array ``(n, D)`` in data coordinates.
    """
    if name not in POINT_DATASETS:
        raise ValueError(
            f"unknown point dataset {name!r}; known names: {', '.join(sorted(POINT_DATASETS))}."
        )
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n (number of points) must be an int >= 1; got {n!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}.")
    dim, default_noise, _ = POINT_DATASETS[name]
    noise = default_noise if noise is None else float(noise)
    if not noise >= 0.0:
        raise ValueError(f"noise must be >= 0; got {noise!r}.")

    from sklearn import datasets

    if name == "moons":
        x, _ = datasets.make_moons(n, noise=noise, random_state=seed)
    elif name == "s_curve":
        x = datasets.make_s_curve(n, noise=noise, random_state=seed)[0][:, [0, 2]] / 10.0
    else:
        x = datasets.make_swiss_roll(n, noise=noise, random_state=seed)[0] / 10.0
        if dim == 2:
            x = x[:, [0, 2]]
    return np.ascontiguousarray(x, dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# 1-D Gaussian mixture (forward-process demos)
# --------------------------------------------------------------------------------------------------

#: Default three-component 1-D mixture (well separated modes) for forward-process demos.
DEFAULT_MIXTURE: dict[str, tuple[float, float, float]] = {
    "weights": (0.3, 0.5, 0.2),
    "means": (-2.0, 0.5, 2.5),
    "stds": (0.3, 0.4, 0.25),
}


def _mixture_params(weights, means, stds):
    """Validate mixture parameters (when concrete) and return them as float32 jnp arrays (K,)."""
    params = [jnp.asarray(p, dtype=jnp.float32) for p in (weights, means, stds)]
    if any(p.ndim != 1 for p in params) or len({p.shape for p in params}) != 1:
        raise ValueError(
            "weights, means and stds must be 1-D and of equal length K (one entry per "
            f"component); got shapes {[tuple(p.shape) for p in params]}."
        )
    if params[0].shape[0] == 0:
        raise ValueError("a mixture needs at least one component; got K = 0.")
    try:
        w, _, s = (np.asarray(p) for p in params)
    except jax.errors.TracerArrayConversionError:  # traced under jit: values cannot be checked
        return params
    if (w < 0).any() or abs(float(w.sum()) - 1.0) > 1e-5:
        raise ValueError(
            f"weights must be non-negative and sum to 1; got {w.tolist()} (sum {w.sum():.6g}). "
            "Normalise them with w / sum(w)."
        )
    if (s <= 0).any():
        raise ValueError(f"stds must all be > 0; got {s.tolist()}.")
    return params


def gaussian_mixture_1d(
    key_or_seed,
    n: int,
    weights: Sequence[float] = DEFAULT_MIXTURE["weights"],
    means: Sequence[float] = DEFAULT_MIXTURE["means"],
    stds: Sequence[float] = DEFAULT_MIXTURE["stds"],
) -> jax.Array:
    """Draw ``n`` samples from the 1-D mixture ``sum_k w_k N(mu_k, sigma_k^2)``.

    Args:
      key_or_seed: a JAX PRNG key, or an int seed (turned into ``jax.random.key(seed)``).
      n: number of samples (a Python int; static under ``jit``).
      weights, means, stds: ``(K,)`` mixture weights (summing to 1), component means and standard
        deviations (> 0). Default: :data:`DEFAULT_MIXTURE` (three components).

    Returns:
      float32 ``jax.Array`` of shape ``(n,)``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n (number of samples) must be an int >= 1; got {n!r}.")
    w, mu, sigma = _mixture_params(weights, means, stds)
    is_seed = isinstance(key_or_seed, int | np.integer) and not isinstance(key_or_seed, bool)
    key = jax.random.key(int(key_or_seed)) if is_seed else key_or_seed
    return _sample_mixture(key, int(n), w, mu, sigma)


@functools.partial(jax.jit, static_argnums=1)
def _sample_mixture(key, n, w, mu, sigma):
    # Compiled as one program: eager dispatch of the individual ops is much slower the first time.
    k_comp, k_noise = jax.random.split(key)
    comp = jax.random.categorical(k_comp, jnp.log(w), shape=(n,))
    eps = jax.random.normal(k_noise, (n,), dtype=jnp.float32)
    return (mu[comp] + sigma[comp] * eps).astype(jnp.float32)


def gaussian_mixture_pdf(
    x,
    weights: Sequence[float] = DEFAULT_MIXTURE["weights"],
    means: Sequence[float] = DEFAULT_MIXTURE["means"],
    stds: Sequence[float] = DEFAULT_MIXTURE["stds"],
) -> jax.Array:
    """Exact density ``p(x) = sum_k w_k N(x; mu_k, sigma_k^2)`` of the 1-D mixture.

    Args:
      x: array of any shape (float).
      weights, means, stds: ``(K,)`` mixture parameters, as in :func:`gaussian_mixture_1d`.

    Returns:
      float32 ``jax.Array`` with the shape of ``x``. Jittable in ``x``.
    """
    w, mu, sigma = _mixture_params(weights, means, stds)
    return _mixture_pdf(jnp.asarray(x, dtype=jnp.float32), w, mu, sigma)


@jax.jit
def _mixture_pdf(x, w, mu, sigma):
    x = x[..., None]
    z = (x - mu) / sigma
    comp = jnp.exp(-0.5 * z * z) / (sigma * jnp.sqrt(2.0 * jnp.pi))
    return jnp.sum(w * comp, axis=-1).astype(jnp.float32)


def gaussian_mixture_moments(
    weights: Sequence[float] = DEFAULT_MIXTURE["weights"],
    means: Sequence[float] = DEFAULT_MIXTURE["means"],
    stds: Sequence[float] = DEFAULT_MIXTURE["stds"],
) -> tuple[float, float]:
    """Closed-form ``(mean, variance)`` of the 1-D mixture, computed in float64 on the host.

    mean = sum_k w_k mu_k;  variance = sum_k w_k (sigma_k^2 + mu_k^2) - mean^2.
    """
    _mixture_params(weights, means, stds)
    w, mu, s = (np.asarray(p, dtype=np.float64) for p in (weights, means, stds))
    mean = float(np.sum(w * mu))
    return mean, float(np.sum(w * (s**2 + (mu - mean) ** 2)))
