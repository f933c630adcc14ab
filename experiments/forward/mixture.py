"""Demo 4: a 1-D three-component Gaussian mixture under the forward process.

q(x_t) of a Gaussian mixture is again one: component k becomes
``N(sqrt(abar_t) mu_k, abar_t sigma_k^2 + 1 - abar_t)`` (DDPM eq. 4 applied to each component),
so the exact density is known at every step and its distance to N(0, 1) can be measured.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from experiments.forward.config import ForwardConfig
from jaxdiff import data as jdata
from jaxdiff.forward import q_sample
from jaxdiff.outputs import MetricsLog
from jaxdiff.schedules import Schedule

#: Where the densities are evaluated, and N(0, 1) on it.
GRID = np.linspace(-5.0, 5.0, 801)
NORMAL = np.exp(-0.5 * GRID**2) / math.sqrt(2 * math.pi)


def _components() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, means and stds of the default mixture (:data:`jaxdiff.data.DEFAULT_MIXTURE`)."""
    mix = jdata.DEFAULT_MIXTURE
    w, mu, sd = (np.asarray(mix[k], np.float64) for k in ("weights", "means", "stds"))
    return w, mu, sd


def kde(samples: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density estimate on ``grid``, Silverman's bandwidth (<= 5,000 points)."""
    x = samples[:5000].astype(np.float64)
    h = 1.06 * x.std() * len(x) ** (-1 / 5)
    z = (grid[:, None] - x[None, :]) / h
    return np.exp(-0.5 * z * z).sum(1) / (len(x) * h * math.sqrt(2 * math.pi))


def noise_mixture(
    config: ForwardConfig, schedule: Schedule, ts: list[int], key, log: MetricsLog
) -> tuple[dict, list[tuple], np.ndarray]:
    """Samples of q(x_t) at each t in ``ts``, with their KDE and the exact density.

    Writes one ``log`` record per t (sample moments, total variation and KL divergence to
    N(0, 1)). Returns the summary for metrics.json, the curves ``(t, x_t, kde, exact)`` of
    the density figure, and the samples at the last t.
    """
    w, mu, sd = _components()
    x0 = jdata.gaussian_mixture_1d(jax.random.fold_in(key, 4), config.mixture_samples)
    noise = jax.random.normal(jax.random.fold_in(key, 5), x0.shape)
    dx = GRID[1] - GRID[0]
    curves, rows, last = [], [], None
    for t in ts:
        abar = float(schedule.alphas_cumprod[t])
        xt = np.asarray(q_sample(schedule, x0, jnp.full(x0.shape, t), noise), np.float64)
        exact = np.asarray(
            jdata.gaussian_mixture_pdf(
                GRID, w, math.sqrt(abar) * mu, np.sqrt(abar * sd**2 + 1.0 - abar)
            ),
            np.float64,
        )
        density = kde(xt, GRID)
        # Total variation distance and KL(q(x_t) || N(0, 1)) of the exact density, on the grid.
        tv = 0.5 * float(np.abs(exact - NORMAL).sum() * dx)
        kl = float(np.sum(exact * (np.log(exact + 1e-300) - np.log(NORMAL))) * dx)
        record = {
            "demo": "mixture", "t": int(t), "alphas_cumprod": abar,
            "sample_mean": float(xt.mean()), "sample_std": float(xt.std()),
            "tv_exact_vs_normal": tv, "kl_exact_vs_normal": kl,
            "tv_kde_vs_normal": 0.5 * float(np.abs(density - NORMAL).sum() * dx),
        }  # fmt: skip
        log.write(record)
        rows.append(record)
        curves.append((t, xt, density, exact))
        last = xt
    mean0, var0 = jdata.gaussian_mixture_moments()
    summary = {
        "weights": w.tolist(),
        "means": mu.tolist(),
        "stds": sd.tolist(),
        "data_mean": mean0,
        "data_std": math.sqrt(var0),
        "samples": config.mixture_samples,
        "final": rows[-1],
        "per_timestep": rows,
    }
    return summary, curves, last


def tv_to_normal(schedule: Schedule) -> np.ndarray:
    """Total variation distance of the exact q(x_t) to N(0, 1) at every t: ``(T,)``."""
    w, mu, sd = _components()
    abars = np.asarray(schedule.alphas_cumprod, np.float64)[:, None, None]  # (T, 1, 1)
    dx = GRID[1] - GRID[0]
    # Exact q(x_t) for every t at once (T, grid): components N(sqrt(abar) mu, abar sd^2 + 1 - abar).
    mean = np.sqrt(abars) * mu
    var = abars * sd**2 + 1.0 - abars
    comp = np.exp(-0.5 * (GRID[None, :, None] - mean) ** 2 / var) / np.sqrt(2 * math.pi * var)
    return 0.5 * np.abs((comp * w).sum(-1) - NORMAL).sum(-1) * dx
