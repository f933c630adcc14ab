"""Compiled samplers against closed forms on Gaussian data, plus determinism and bad input.

Data x0 ~ N(mu, sigma^2) per coordinate. With alpha_t = sqrt(abar_t) and s_t = sqrt(1 - abar_t),
x_t = alpha_t x0 + s_t eps is jointly Gaussian with eps, so the exact noise predictor is the
regression of eps on x_t:

    eps*(x_t, t) = Cov(eps, x_t) / Var(x_t) (x_t - E x_t)
                 = s_t (x_t - alpha_t mu) / (abar_t sigma^2 + 1 - abar_t).

The probability-flow ODE then maps x at step t to x at step t' by keeping the standardised value
z = (x - alpha_t mu) / sqrt(abar_t sigma^2 + 1 - abar_t) fixed (a monotone transport between
Gaussians), which gives the exact ODE solution the deterministic samplers are compared with. With
the exact eps every DDIM / DPM-Solver++ step is affine in x, so the whole sampler is
x_T -> A x_T + B and its output for x_T ~ N(0, 1) is exactly N(B, A^2): two sample points
(x_T = 0 and 1) give the sampled distribution without Monte-Carlo error.

All models here are analytic, so the file runs in seconds on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import ddim_step, make_schedule
from jaxdiff.parameterization import eps_to_x0, v_from_eps_x0
from jaxdiff.samplers import (
    DDIM,
    DDPM,
    SOLVERS,
    DPMSolverPP2M,
    Guidance,
    Inpaint,
    Loop,
    Points,
    Solver,
    default_loop_options,
    dpm_solver_pp_step,
    make_solver,
    respaced_schedule,
    sample,
    sampling_timesteps,
    step_sequence,
)
from jaxdiff.sharding import make_mesh

MU, SIGMA = 1.5, 0.5
T = 1000
# The whole loop in one rolled scan: the cheapest compile for these analytic models (the CPU
# default, fully unrolled chunks of 4 steps, is for conv nets; it is tested for equality below).
ONE_SCAN = Loop(steps_per_call=None, unroll=1)


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", T)


def _col(a, x):
    """Per-example values ``(b,)`` shaped to broadcast against ``x`` ``(b, ...)``."""
    return jnp.reshape(a, (-1,) + (1,) * (x.ndim - 1))


def gaussian_eps(s, mu=MU, sigma=SIGMA, prediction="eps"):
    """The exact predictor for data N(mu, sigma^2): ``apply(params, x, t)`` (params unused)."""

    def apply(params, x, t):
        abar = _col(s.alphas_cumprod[t], x)
        eps = jnp.sqrt(1 - abar) * (x - jnp.sqrt(abar) * mu) / (abar * sigma**2 + 1 - abar)
        if prediction == "eps":
            return eps
        x0 = eps_to_x0(s, x, t, eps)
        return x0 if prediction == "x0" else v_from_eps_x0(s, x0, t, eps)

    return apply


def class_gaussian_eps(s, sigma=SIGMA):
    """Class-conditional exact eps: class k is N(params[k], sigma^2); the last row is the null
    label's (unconditional) mean. ``params`` is a traced ``(K + 1,)`` array."""

    def apply(params, x, t, labels):
        mu = _col(params[labels], x)
        abar = _col(s.alphas_cumprod[t], x)
        return jnp.sqrt(1 - abar) * (x - jnp.sqrt(abar) * mu) / (abar * sigma**2 + 1 - abar)

    return apply


def _marginal(s, t, mu=MU, sigma=SIGMA):
    """(mean, std) of q(x_t) for the Gaussian data; t = -1 is the data itself (float64)."""
    abar = 1.0 if t < 0 else float(np.asarray(s.alphas_cumprod, np.float64)[t])
    return np.sqrt(abar) * mu, np.sqrt(abar * sigma**2 + 1 - abar)


def exact_flow(s, x_T, t_to):
    """The exact probability-flow ODE solution from step T-1 to ``t_to`` (float64)."""
    m_T, sd_T = _marginal(s, T - 1)
    m, sd = _marginal(s, t_to)
    return m + sd * (np.asarray(x_T, np.float64) - m_T) / sd_T


def affine_map(s, sampler, steps, **kw):
    """(A, B) with sampler(x_T) = A x_T + B (exact for the Gaussian eps, see module docstring)."""
    x_T = jnp.array([[0.0], [1.0]])
    out = sample(gaussian_eps(s), None, s, (2, 1), jax.random.key(0), solver=sampler,
                 steps=steps, x_T=x_T, loop=ONE_SCAN, **kw).samples  # fmt: skip
    out = np.asarray(out, np.float64)[:, 0]
    return out[1] - out[0], out[0]


def exact_ddpm_moments(s, variance="posterior", mu=MU, sigma=SIGMA):
    """Mean and std of DDPM's output with the exact eps and x_T ~ N(0, 1), in closed form.

    Each step x_{t-1} = (x_t - beta_t / s_t eps*) / sqrt(alpha_t) + sigma_t z (DDPM eq. 11) is
    affine in x_t, so the mean and variance propagate exactly (float64).
    """
    betas = np.asarray(s.betas, np.float64)
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    mean, var = 0.0, 1.0
    for t in range(T - 1, -1, -1):
        c = np.sqrt(1 - abar[t]) / (abar[t] * sigma**2 + 1 - abar[t])  # eps* = c (x - a mu)
        k = betas[t] / np.sqrt(1 - abar[t])
        a = (1 - k * c) / np.sqrt(1 - betas[t])
        b = k * c * np.sqrt(abar[t]) * mu / np.sqrt(1 - betas[t])
        post = betas[t] * (1 - abar_prev[t]) / (1 - abar[t])
        noise_var = 0.0 if t == 0 else post if variance == "posterior" else betas[t]
        mean, var = a * mean + b, a * a * var + noise_var
    return mean, np.sqrt(var)


# --------------------------------------------------------------------------------------------
# Step sequences and the DPM-Solver++ step


def test_sampling_timesteps_spacings(schedule):
    np.testing.assert_array_equal(sampling_timesteps(schedule, 50, "leading")[[0, 1, -1]],
                                  [980, 960, 0])  # fmt: skip
    np.testing.assert_array_equal(sampling_timesteps(schedule, 50, "trailing")[[0, 1, -1]],
                                  [999, 979, 19])  # fmt: skip
    np.testing.assert_array_equal(sampling_timesteps(schedule, 50, "linspace")[[0, -1]], [999, 0])
    for spacing in ("leading", "trailing", "linspace", "logsnr"):
        np.testing.assert_array_equal(sampling_timesteps(schedule, T, spacing), np.arange(T)[::-1])
        for n in (1, 7, 20, 999):
            ts = sampling_timesteps(schedule, n, spacing)
            assert len(ts) == n and np.all(np.diff(ts) < 0) and 0 <= ts[-1] and ts[0] < T
    lam = sampling_timesteps(schedule, 20, "logsnr")
    assert lam[0] == T - 1 and lam[-1] > 0
    # the last target: x0 (-1) for DDIM/DDPM; t = 0 for DPM-Solver++ unless t[-1] is already 0
    assert step_sequence(schedule, "ddim", 10)[1][-1] == -1
    assert step_sequence(schedule, "dpm++", 10)[1][-1] == 0
    assert step_sequence(schedule, "dpm++", 10, "linspace")[1][-1] == -1


def test_respaced_schedule_keeps_alphas_cumprod(schedule):
    ts = sampling_timesteps(schedule, 25, "trailing")
    r = respaced_schedule(schedule, ts)
    np.testing.assert_allclose(r.alphas_cumprod, np.asarray(schedule.alphas_cumprod)[ts[::-1]],
                               rtol=1e-5)  # fmt: skip
    assert respaced_schedule(schedule, np.arange(T)) is schedule


def test_dpm_solver_first_order_is_ddim(schedule):
    """DPM-Solver++(1) is DDIM (Lu et al. 2022, sec. 4.1); the 2M step uses the history."""
    dpm_step = jax.jit(dpm_solver_pp_step)
    x_t, eps, x0_prev = jnp.asarray(
        np.random.default_rng(1).standard_normal((3, 4, 5)), jnp.float32
    )
    t, t_next, t_prev = 600, 450, 750

    @jax.jit
    def x0_and_ddim(x_t, eps):
        return eps_to_x0(schedule, x_t, t, eps), ddim_step(schedule, eps, x_t, t, t_next, None, 0.0)

    x0, ddim = x0_and_ddim(x_t, eps)
    first = dpm_step(schedule, x0, x_t, t, t_next)
    np.testing.assert_allclose(first, ddim, rtol=1e-5, atol=1e-5)
    off = dpm_step(schedule, x0, x_t, t, t_next, x0_prev, t_prev, second_order=False)
    np.testing.assert_allclose(off, first, rtol=1e-6, atol=1e-6)
    # to the clean sample (t_next = -1) the update is the data prediction itself
    clean = dpm_step(schedule, x0, x_t, 20, -1, x0_prev, t_prev)
    np.testing.assert_allclose(clean, x0, rtol=1e-6, atol=1e-6)
    # second order: D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev in the first-order formula
    abar = np.asarray(schedule.alphas_cumprod, np.float64)
    lam = lambda u: 0.5 * np.log(abar[u] / (1 - abar[u]))
    r = (lam(t) - lam(t_prev)) / (lam(t_next) - lam(t))
    d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
    second = dpm_step(schedule, x0, x_t, t, t_next, x0_prev, t_prev)
    np.testing.assert_allclose(second, dpm_step(schedule, d, x_t, t, t_next),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Distributions on analytic Gaussian data


def test_ddpm_1000_matches_data(schedule):
    """DDPM-1000 ancestral sampling with the exact eps reproduces N(mu, sigma^2).

    The closed-form output moments (exact_ddpm_moments) are within 1% of the data's; 16,384
    samples match them within 4 standard errors and the data's within 2%.
    """
    exact_mean, exact_std = exact_ddpm_moments(schedule)
    assert abs(exact_mean / MU - 1) < 0.01 and abs(exact_std / SIGMA - 1) < 0.01
    x = np.asarray(sample(gaussian_eps(schedule), None, schedule, (64, 256), jax.random.key(0),
                          solver="ddpm", loop=ONE_SCAN).samples, np.float64)  # fmt: skip
    n = x.size
    assert abs(x.mean() - exact_mean) < 4 * exact_std / np.sqrt(n)
    assert abs(x.std() - exact_std) < 4 * exact_std / np.sqrt(2 * n)
    assert abs(x.mean() / MU - 1) < 0.02 and abs(x.std() / SIGMA - 1) < 0.02


def test_ddpm_beta_variance_closed_form(schedule):
    """variance="beta" (sigma_t^2 = beta_t): closed-form moments, and 4,096 samples match them."""
    exact_mean, exact_std = exact_ddpm_moments(schedule, "beta")
    assert abs(exact_mean / MU - 1) < 0.01 and abs(exact_std / SIGMA - 1) < 0.01
    x = np.asarray(sample(gaussian_eps(schedule), None, schedule, (16, 256), jax.random.key(1),
                          solver=DDPM(variance="beta"), loop=ONE_SCAN).samples,
                   np.float64)  # fmt: skip
    n = x.size
    assert abs(x.mean() - exact_mean) < 4 * exact_std / np.sqrt(n)
    assert abs(x.std() - exact_std) < 4 * exact_std / np.sqrt(2 * n)


def test_dpm_solver_20_matches_data(schedule):
    """DPM-Solver++(2M), 20 steps (the default): output mean and std within 2% of the data's."""
    A, B = affine_map(schedule, "dpm++", 20)
    mean, std = _marginal(schedule, 0)  # it ends at t = 0, sigma_0 = 0.01
    assert abs(B / mean - 1) < 0.02 and abs(abs(A) / std - 1) < 0.02
    assert abs(B / MU - 1) < 0.02 and abs(abs(A) / SIGMA - 1) < 0.02


def test_ddim_is_first_order_and_converges_to_data(schedule):
    """DDIM (eta = 0) is a first-order ODE solver: its std error halves when steps double.

    With sigma = 0.5 data DDIM-50 leaves the std about 5.7% low (first order, not a bug); the
    error shrinks as 1/N, and 200 steps are within 2% of the data.
    """
    rel = {}
    for n in (50, 100, 200):
        A, B = affine_map(schedule, "ddim", n)
        assert abs(B / MU - 1) < 0.01
        rel[n] = abs(A) / SIGMA - 1
    assert -0.08 < rel[50] < -0.03
    assert 1.7 < rel[50] / rel[100] < 2.3 and 1.7 < rel[100] / rel[200] < 2.3
    assert abs(rel[200]) < 0.02


def _flow_error(s, sampler, n):
    x_T = jnp.linspace(-3.0, 3.0, 7)[:, None]
    out = sample(gaussian_eps(s), None, s, (7, 1), jax.random.key(0), solver=sampler, steps=n,
                 x_T=x_T, loop=ONE_SCAN).samples  # fmt: skip
    t_final = int(step_sequence(s, sampler, n)[1][-1])
    return float(np.max(np.abs(np.asarray(out, np.float64) - exact_flow(s, x_T, t_final))))


def test_convergence_orders_against_exact_ode(schedule):
    """Error against the exact ODE solution: order 1 for DDIM, 2 for DPM-Solver++(2M); and at
    equal step counts (10 and 20) DPM-Solver++ is several times more accurate than DDIM."""
    ddim = {n: _flow_error(schedule, "ddim", n) for n in (10, 20, 40, 80)}
    dpm = {n: _flow_error(schedule, "dpm++", n) for n in (10, 20, 40, 80)}
    order = lambda e, n: np.log2(e[n] / e[2 * n])
    for n in (20, 40):
        assert 0.85 < order(ddim, n) < 1.15, ddim
        assert 1.7 < order(dpm, n) < 2.3, dpm
    for n in (10, 20):
        assert dpm[n] < 0.2 * ddim[n], (dpm, ddim)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_x0_and_v_predictions_match_eps(schedule, prediction):
    x_T = jnp.linspace(-2.0, 2.0, 5)[:, None]
    ref = sample(gaussian_eps(schedule), None, schedule, (5, 1), jax.random.key(0), steps=10,
                 x_T=x_T, loop=ONE_SCAN).samples  # fmt: skip
    out = sample(gaussian_eps(schedule, prediction=prediction), None, schedule, (5, 1),
                 jax.random.key(0), solver=DPMSolverPP2M(prediction=prediction), steps=10,
                 x_T=x_T, loop=ONE_SCAN).samples  # fmt: skip
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Guidance, inpainting, trajectories, determinism

MUS = jnp.array([-2.0, 0.5, 3.0, 1.0])  # classes 0..2, then the null label's mean (index 3)
K = 3


def test_guidance_scales(schedule):
    """eps~ = eps_c + w (eps_c - eps_u) (Ho & Salimans eq. 6): w = 0 is conditional sampling,
    w = -1 unconditional, and since eps* is affine in mu, any w samples the Gaussian of mean
    mu_c + w (mu_c - mu_u). Guided steps call the model once on the 2b stacked batch."""
    apply = class_gaussian_eps(schedule)
    batch_sizes = []

    def counting(params, x, t, labels):
        batch_sizes.append(x.shape[0])  # at trace time
        return apply(params, x, t, labels)

    labels = jnp.array([0, 1, 2, 0, 2])
    x_T = jnp.asarray(np.random.default_rng(3).standard_normal((5, 2)), jnp.float32)
    kw = dict(solver="ddim", steps=8, x_T=x_T, loop=ONE_SCAN)
    guide = lambda w: Guidance(w, labels=labels, num_classes=K)
    key = jax.random.key(0)

    def with_mean(mu):  # unconditional exact-eps sampling of N(mu, sigma^2), mu per example
        return sample(
            lambda p, x, t: apply(p, x, t, jnp.arange(5)), mu, schedule, (5, 2), key, **kw
        ).samples

    cond = sample(counting, MUS, schedule, (5, 2), key, guidance=guide(0.0), **kw).samples
    assert set(batch_sizes) == {5}
    np.testing.assert_allclose(cond, with_mean(MUS[labels]), rtol=1e-5, atol=1e-5)
    batch_sizes.clear()
    uncond = sample(counting, MUS, schedule, (5, 2), key, guidance=guide(-1.0), **kw).samples
    assert set(batch_sizes) == {10}
    null = sample(
        apply,
        MUS,
        schedule,
        (5, 2),
        key,
        guidance=Guidance(labels=jnp.full(5, K), num_classes=K),
        **kw,
    ).samples
    np.testing.assert_allclose(uncond, null, rtol=1e-5, atol=1e-5)
    guided = sample(apply, MUS, schedule, (5, 2), key, guidance=guide(2.0), **kw).samples
    np.testing.assert_allclose(guided, with_mean(3 * MUS[labels] - 2 * MUS[K]), rtol=1e-4,
                               atol=1e-4)  # fmt: skip
    # no labels with a conditional model: the null label, i.e. unconditional
    none = sample(apply, MUS, schedule, (5, 2), key, guidance=Guidance(num_classes=K), **kw).samples
    np.testing.assert_array_equal(none, null)


@pytest.mark.parametrize(
    "solver, jumps, kw",
    [("ddpm", dict(resample_jumps=2, jump_length=3), dict(steps=12)),
     (DDIM(eta=0.5), {}, dict(steps=10)),
     ("dpm++", dict(resample_jumps=1, jump_length=4), dict(steps=9, record=(0, 3, -1)))],
)  # fmt: skip
def test_inpainting_keeps_known_pixels_exactly(schedule, solver, jumps, kw):
    shape = (3, 5, 5, 1)
    rng = np.random.default_rng(7)
    known = jnp.asarray(rng.uniform(-1.0, 1.0, shape), jnp.float32)
    mask = jnp.asarray(rng.random(shape) < 0.5)
    res = sample(gaussian_eps(schedule), None, schedule, shape, jax.random.key(0), solver=solver,
                 inpaint=Inpaint(mask, known, **jumps), loop=ONE_SCAN, **kw)  # fmt: skip
    out = np.asarray(res.samples)
    m = np.asarray(mask)
    np.testing.assert_array_equal(out[m], np.asarray(known)[m])  # bit for bit
    assert np.all(np.isfinite(out)) and not np.any(out[~m] == np.asarray(known)[~m])
    if "record" in kw:
        np.testing.assert_array_equal(res.trajectory[-1], res.samples)


def test_record_trajectory(schedule):
    """record keeps the state after the named steps: here DDIM's exact intermediate states."""
    x_T = jnp.linspace(-2.0, 2.0, 4)[:, None]
    res = sample(gaussian_eps(schedule), None, schedule, (4, 1), jax.random.key(0),
                 solver="ddim", steps=40, x_T=x_T, record=(0, 19, -1), loop=ONE_SCAN)  # fmt: skip
    assert res.trajectory.shape == (3, 4, 1)
    np.testing.assert_array_equal(res.trajectory[2], res.samples)
    _, t_next = step_sequence(schedule, "ddim", 40)
    for j, step in enumerate((0, 19)):  # each state is near the exact ODE solution there
        exact = exact_flow(schedule, x_T, int(t_next[step]))
        np.testing.assert_allclose(res.trajectory[j], exact, atol=0.05)
    empty = sample(gaussian_eps(schedule), None, schedule, (4, 1), jax.random.key(0),
                   solver="ddim", steps=40, x_T=x_T, loop=ONE_SCAN)  # fmt: skip
    assert empty.trajectory.shape == (0, 4, 1)
    np.testing.assert_array_equal(empty.samples, res.samples)


def test_determinism_and_chunk_independence(schedule):
    """Same key -> bit-identical samples; another key -> other samples; chunk_size and
    steps_per_call do not change them. Exercised with DDPM (noise at every step), guidance,
    inpainting with resampling and a trajectory at once.

    Across chunk sizes the samples agree to float32 rounding, not always bit for bit: XLA:CPU
    may round the last bit differently for arrays of different shapes (measured: 2 of 45
    values differed by 1 ulp), which no per-example key scheme can remove.
    """
    apply = class_gaussian_eps(schedule)
    shape = (5, 3, 3, 1)
    known = jnp.linspace(-1.0, 1.0, 45).reshape(shape)
    mask = jnp.broadcast_to(jnp.arange(3)[None, :, None, None] == 1, shape)
    # 8 steps + 3 jumps back of 2 steps each = 14 scan steps: steps_per_call=7 gives 2 calls
    kw = dict(solver="ddpm", steps=8,
              guidance=Guidance(1.5, labels=jnp.array([0, 1, 2, 1, 0]), num_classes=K),
              inpaint=Inpaint(mask, known, resample_jumps=1, jump_length=2),
              record=(1, 4, -1))  # fmt: skip
    run = lambda key, **extra: sample(apply, MUS, schedule, shape, key, **kw, **extra)
    ref = run(jax.random.key(42), loop=ONE_SCAN)
    again = run(jax.random.key(42), loop=ONE_SCAN)
    np.testing.assert_array_equal(again.samples, ref.samples)
    np.testing.assert_array_equal(again.trajectory, ref.trajectory)
    assert not np.allclose(run(jax.random.key(43), loop=ONE_SCAN).samples, ref.samples)
    for loop in (Loop(chunk_size=2, steps_per_call=None, unroll=1),
                 Loop(chunk_size=2, steps_per_call=7, unroll=1)):  # fmt: skip
        other = run(jax.random.key(42), loop=loop)
        np.testing.assert_allclose(other.samples, ref.samples, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(other.trajectory, ref.trajectory, rtol=1e-6, atol=1e-6)
    # Split over a mesh of one device (the per-device program, shard_map): the same bits.
    # Several devices: tests/test_sharding.py.
    split = run(jax.random.key(42), mesh=make_mesh(jax.devices()[:1]), loop=ONE_SCAN)
    np.testing.assert_array_equal(split.samples, ref.samples)
    np.testing.assert_array_equal(split.trajectory, ref.trajectory)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_loop_structure_does_not_change_samples(schedule, sampler):
    """One rolled scan, unrolled chunks of 3 steps (DPM-Solver++ carries its multistep history
    across calls) and the backend default give the same samples."""
    x_T = jnp.linspace(-2.0, 2.0, 6).reshape(3, 2)
    run = lambda **kw: sample(gaussian_eps(schedule), None, schedule, (3, 2), jax.random.key(0),
                              solver=sampler, steps=12, x_T=x_T, record=(5,), **kw)  # fmt: skip
    ref = run(loop=ONE_SCAN)
    for kw in (dict(loop=Loop(steps_per_call=3)), {}):
        other = run(**kw)
        np.testing.assert_allclose(other.samples, ref.samples, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(other.trajectory, ref.trajectory, rtol=1e-6, atol=1e-6)


def test_default_loop_options():
    assert default_loop_options("cpu") == (4, True)
    assert default_loop_options("gpu") == (None, 1)
    assert default_loop_options("tpu") == (None, 1)


# --------------------------------------------------------------------------------------------
# Bad input: clear errors, raised before anything is traced or compiled


def _must_not_run(params, x, t, labels=None):
    raise AssertionError("the model must not be called when the arguments are invalid")


MASK, KNOWN = jnp.ones((4, 2, 3, 1)), jnp.zeros((4, 2, 3, 1))


@pytest.mark.parametrize(
    "kw, match",
    [
        (lambda: dict(steps=0), r"steps must lie in \[1, 1000\]"),
        (lambda: dict(steps=1001), r"steps must lie in \[1, 1000\].*T=1000"),
        (lambda: dict(solver="plms"),
         r"unknown sampler 'plms'; choose one of 'ddpm', 'ddim', 'dpm"),
        (lambda: dict(solver=DDIM(spacing="uniform")),
         r"unknown spacing 'uniform'; choose one of 'leading'"),
        (lambda: dict(solver=DDPM(variance="large")), r"unknown variance 'large'"),
        (lambda: dict(solver=DDIM(prediction="score")), r"unknown prediction 'score'"),
        (lambda: dict(guidance=Guidance(3.0)), r"scale=3.0 needs a class-conditional model"),
        (lambda: dict(guidance=Guidance(3.0, num_classes=10)), r"needs labels"),
        (lambda: dict(guidance=Guidance(labels=jnp.zeros(3, jnp.int32), num_classes=10)),
         r"labels must have shape \(B,\) = \(4,\).*got shape \(3,\)"),
        (lambda: dict(guidance=Guidance(labels=jnp.zeros(4, jnp.int32))),
         r"labels were given but num_classes is None"),
        (lambda: dict(guidance=Guidance(labels=jnp.full(4, 11), num_classes=10)),
         r"labels must lie in \[0, 10\]"),
        (lambda: dict(guidance=Guidance(num_classes=0)), r"num_classes must be >= 1"),
        (lambda: dict(inpaint=Inpaint(jnp.ones((4, 2, 2, 1)), KNOWN)),
         r"mask and known must have the same shape"),
        (lambda: dict(inpaint=Inpaint(jnp.ones((1, 2, 3, 1)), jnp.zeros((1, 2, 3, 1)))),
         r"mask and known must have the sample shape \(4, 2, 3, 1\)"),
        (lambda: dict(inpaint=Inpaint(MASK, None)), r"inpainting needs both mask .* and known"),
        (lambda: dict(inpaint=Inpaint(jnp.full((4, 2, 3, 1), 0.5), KNOWN)),
         r"mask must hold 0 \(unknown\) or 1 \(known\)"),
        (lambda: dict(inpaint=Inpaint(MASK, KNOWN, resample_jumps=-1)),
         r"resample_jumps must be >= 0"),
        (lambda: dict(steps=5, inpaint=Inpaint(MASK, KNOWN, resample_jumps=1, jump_length=6)),
         r"jump_length must lie in \[1, steps=5\]"),
        (lambda: dict(solver=DDIM(eta=-0.1)), r"eta must be >= 0"),
        (lambda: dict(record=(20,), steps=20), r"record indices must lie in \[-20, 20\)"),
        (lambda: dict(loop=Loop(chunk_size=0)), r"chunk_size must be >= 1"),
        (lambda: dict(loop=Loop(steps_per_call="fast")), r"steps_per_call must be 'auto', None"),
        (lambda: dict(x_T=jnp.zeros((4, 2, 2, 1))), r"x_T must have shape \(4, 2, 3, 1\)"),
        (lambda: dict(solver=DDIM(clip_x0=0.0)), r"clip_x0 must be > 0"),
        (lambda: dict(loop=Loop(unroll=0)), r"unroll must be >= 1"),
    ],
)  # fmt: skip
def test_bad_arguments_raise_before_compute(schedule, kw, match):
    with pytest.raises(ValueError, match=match):
        sample(_must_not_run, None, schedule, (4, 2, 3, 1), jax.random.key(0), **kw())


def test_solver_options_belong_to_their_solver():
    """An option of another solver is a TypeError of the dataclass (DPM-Solver++ has no eta);
    the string path means the class's defaults, and the registry names every solver."""
    with pytest.raises(TypeError, match="eta"):
        DPMSolverPP2M(eta=0.5)
    with pytest.raises(ValueError, match=r"eta=0.5 does not apply to sampler='dpm\+\+'"):
        make_solver("dpm++", eta=0.5)
    assert make_solver("ddim") == DDIM() and make_solver("ddim", eta=0.5) == DDIM(eta=0.5)
    assert DDIM(0.5).eta == 0.5  # the solver's own option is its first positional field
    with pytest.raises(TypeError, match=r"got the class DDIM; write DDIM\(\)"):
        sample(
            _must_not_run,
            None,
            make_schedule("linear", 100),
            (4, 2),
            jax.random.key(0),
            solver=DDIM,
        )
    with pytest.raises(TypeError, match=r"guidance must be a jaxdiff\.samplers\.Guidance"):
        sample(
            _must_not_run,
            None,
            make_schedule("linear", 100),
            (4, 2),
            jax.random.key(0),
            guidance=3.0,
        )
    assert list(SOLVERS) == ["ddpm", "ddim", "dpm++", "dpm++3m", "dpm++2m-sde", "euler",
                             "euler-a", "heun", "unipc", "edm", "flow-euler",
                             "flow-heun"]  # fmt: skip


# A new solver is one class (here in the test file) plus, to be named by a string, one line
# in the registry.
@dataclasses.dataclass(frozen=True)
class HalfDDIM(Solver):
    """A toy solver: DDIM's deterministic step with its eps coefficient scaled by ``gain``."""

    name = "half-ddim"
    default_steps = 10
    gain: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.gain < 0:
            raise ValueError(f"gain must be >= 0, got {self.gain}")

    def coefficients(self, p: Points) -> dict[str, np.ndarray]:
        return {"x0": p.alpha_t, "eps": self.gain * p.sigma_t}


def test_a_new_solver_is_one_class(schedule, monkeypatch):
    x_T = jnp.linspace(-2.0, 2.0, 6).reshape(3, 2)
    run = lambda solver, **kw: sample(gaussian_eps(schedule), None, schedule, (3, 2),
                                      jax.random.key(0), solver=solver, x_T=x_T, loop=ONE_SCAN,
                                      **kw).samples  # fmt: skip
    # gain 1 is deterministic DDIM on DDIM's grid, bit for bit
    np.testing.assert_array_equal(run(HalfDDIM()), run(DDIM(), steps=10))
    assert not np.allclose(run(HalfDDIM(gain=0.5)), run(HalfDDIM()))
    with pytest.raises(ValueError, match="gain must be >= 0"):
        HalfDDIM(gain=-1.0)
    monkeypatch.setitem(SOLVERS, "half-ddim", HalfDDIM)
    np.testing.assert_array_equal(run("half-ddim"), run(HalfDDIM()))
    assert step_sequence(schedule, "half-ddim")[0].shape == (10,)


def test_bad_types_raise_type_error(schedule):
    with pytest.raises(TypeError, match="steps must be an int"):
        sample(_must_not_run, None, schedule, (4, 2), jax.random.key(0), steps=2.5)
    with pytest.raises(TypeError, match="schedule must be a jaxdiff Schedule"):
        sample(_must_not_run, None, np.ones(10), (4, 2), jax.random.key(0))
    with pytest.raises(ValueError, match="shape must be"):
        sample(_must_not_run, None, schedule, (4,), jax.random.key(0))
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh with an axis 'data'"):
        sample(_must_not_run, None, schedule, (4, 2), jax.random.key(0), mesh="data")
    two_axes = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    with pytest.raises(ValueError, match="mesh must have the one axis 'data'"):
        sample(_must_not_run, None, schedule, (4, 2), jax.random.key(0), mesh=two_axes)


def test_model_output_shape_is_checked(schedule):
    with pytest.raises(ValueError, match=r"must return an array of x's shape \(2, 3\)"):
        sample(lambda p, x, t: x[:, :1], None, schedule, (2, 3), jax.random.key(0), steps=2)


def test_raw_and_typed_keys_give_the_same_samples():
    """``jax.random.PRNGKey(0)`` (raw uint32 data) and ``jax.random.key(0)`` are one key."""
    s = make_schedule("cosine", num_steps=20)

    def apply(params, x, t, labels=None):
        return 0.1 * x

    raw = sample(apply, None, s, (3, 2), jax.random.PRNGKey(0), solver="ddim", steps=4)
    typed = sample(apply, None, s, (3, 2), jax.random.key(0), solver="ddim", steps=4)
    np.testing.assert_array_equal(np.asarray(raw.samples), np.asarray(typed.samples))
