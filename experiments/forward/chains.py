"""Demo 1: q(x_t | x_0) drawn by the iterative chain and by the closed form, on one digit.

The chain ``x_t = sqrt(1 - b_t) x_{t-1} + sqrt(b_t) eps`` (DDPM, Ho et al. 2020, eq. 2) and
the closed form ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (eq. 4) give different draws
of the same distribution; over many chains both match its mean and standard deviation.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from experiments.forward.config import ForwardConfig
from jaxdiff.forward import q_sample, q_sample_iterative
from jaxdiff.outputs import MetricsLog
from jaxdiff.schedules import Schedule, make_schedule


def sample_both(
    config: ForwardConfig, schedule: Schedule, digit: np.ndarray, ts: list[int], key
) -> tuple[np.ndarray, np.ndarray]:
    """``chains`` copies of ``digit`` at each t in ``ts``, by each method: ``(S, chains, H, W, 1)``.

    Returns ``(iterative, closed_form)``.
    """
    x0 = jnp.broadcast_to(jnp.asarray(digit), (config.chains, *digit.shape))
    k_iter, k_closed = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
    iterative, closed = [], []
    # One chain, continued from each shown step to the next: the steps done+1..t of the schedule
    # run as a chain of their own. The pieces are padded to one length (masked steps with a
    # dummy beta) so that a single compiled q_sample_iterative runs them all.
    betas = np.asarray(schedule.betas, np.float64)
    starts = [0] + [t + 1 for t in ts[:-1]]
    longest = max(t + 1 - a for a, t in zip(starts, ts, strict=True))
    chain = jax.jit(q_sample_iterative)  # a traced stop index: `longest` steps, masked after it
    x = x0
    for a, t in zip(starts, ts, strict=True):
        piece = np.concatenate([betas[a : t + 1], np.full(longest - (t + 1 - a), 1e-3)])
        x = chain(make_schedule(betas=piece), x, jnp.int32(t - a), jax.random.fold_in(k_iter, t))
        iterative.append(np.asarray(x))
        noise = jax.random.normal(jax.random.fold_in(k_closed, t), x0.shape)
        closed.append(np.asarray(q_sample(schedule, x0, t, noise)))
    return np.stack(iterative), np.stack(closed)


def compare_moments(
    config: ForwardConfig,
    schedule: Schedule,
    digit: np.ndarray,
    label: int,
    ts: list[int],
    iterative: np.ndarray,
    closed: np.ndarray,
    log: MetricsLog,
) -> dict:
    """Both methods' per-pixel mean and std against the exact ones, one ``log`` record per t.

    Returns the summary for metrics.json: the largest errors, and every timestep's record.
    """
    d = np.asarray(digit, np.float64)
    rows = []
    for j, t in enumerate(ts):
        abar = float(schedule.alphas_cumprod[t])
        mean_exact, std_exact = math.sqrt(abar) * d, math.sqrt(1.0 - abar)
        record = {"demo": "iterative_vs_closed_form", "t": int(t), "alphas_cumprod": abar}
        for name, x in (("iterative", iterative[j]), ("closed_form", closed[j])):
            mean, std = x.mean(0), x.std(0, ddof=1)
            record[f"{name}_mean_abs_error"] = float(np.abs(mean - mean_exact).mean())
            record[f"{name}_std"] = float(std.mean())
        record["exact_std"] = std_exact
        # Sampling noise alone: a mean over n chains has standard error std / sqrt(n), and the
        # expected absolute value of such an error is sqrt(2 / pi) times that.
        record["expected_mean_abs_error"] = (
            math.sqrt(2 / math.pi) * std_exact / math.sqrt(config.chains)
        )
        log.write(record)
        rows.append(record)
    return {
        "chains": config.chains,
        "digit_label": label,
        "max_mean_abs_error": {
            "iterative": max(r["iterative_mean_abs_error"] for r in rows),
            "closed_form": max(r["closed_form_mean_abs_error"] for r in rows),
        },
        "max_std_relative_error": {
            name: max(abs(r[f"{name}_std"] / r["exact_std"] - 1) for r in rows if r["t"] > 0)
            for name in ("iterative", "closed_form")
        },
        "per_timestep": rows,
    }
