"""Every solver of ``jaxdiff.samplers`` against closed forms on Gaussian data.

Data x0 ~ N(mu, sigma^2) per coordinate; the exact noise predictor and the exact
probability-flow ODE solution are in closed form (see ``tests/test_samplers.py``). Convergence
orders are measured in float64 on a fine linear schedule (T = 100,000, the DDPM betas scaled by
1000 / T: the same continuous process), so that rounding the grids to integer timesteps does
not blur the slopes; everything else runs on the usual T = 1000 in float32.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import ddim_step, ddpm_step, make_schedule
from jaxdiff.samplers import (
    SAMPLERS,
    Guidance,
    Inpaint,
    Loop,
    build_plan,
    karras_sigmas,
    make_solver,
    respaced_schedule,
    sample,
    sampling_timesteps,
    step_sequence,
)
from jaxdiff.samplers.grids import alpha_sigma

MU, SIGMA = 1.5, 0.5
ONE_SCAN = Loop(steps_per_call=None, unroll=1)
DETERMINISTIC = ("ddim", "euler", "dpm++", "dpm++3m", "heun", "unipc")
STOCHASTIC = ("ddpm", "euler-a", "dpm++2m-sde")
# The solvers that run on a Schedule (the flow solvers need a continuous path:
# tests/test_path_samplers.py covers every solver there).
ON_SCHEDULES = tuple(n for n in SAMPLERS if not make_solver(n).needs_rates)


def exact_eps(s, mu=MU, sigma=SIGMA):
    def apply(params, x, t, labels=None):
        abar = jnp.reshape(s.alphas_cumprod[t], (-1,) + (1,) * (x.ndim - 1))
        m = mu if labels is None else jnp.reshape(params[labels], (-1,) + (1,) * (x.ndim - 1))
        return jnp.sqrt(1 - abar) * (x - jnp.sqrt(abar) * m) / (abar * sigma**2 + 1 - abar)

    return apply


def marginal(s, t):
    """(mean, std) of q(x_t), float64; t = -1: the data."""
    a, sd = alpha_sigma(s, np.asarray(t))
    return a * MU, np.sqrt(a**2 * SIGMA**2 + sd**2)


def exact_flow(s, x_T, t_to):
    (m_T, sd_T), (m, sd) = marginal(s, s.num_steps - 1), marginal(s, t_to)
    return m + sd * (np.asarray(x_T, np.float64) - m_T) / sd_T


@pytest.fixture(scope="module")
def fine():
    """Float64 linear schedule with T = 100,000 (use inside ``jax.enable_x64(True)``)."""
    T = 100_000
    with jax.enable_x64(True):
        yield make_schedule("linear", T, beta_start=0.1 / T, beta_end=20.0 / T, dtype=jnp.float64)


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", 1000)


def _full_order(name):
    """The solver ``name`` with ``lower_order_final=False`` where it has that option."""
    solver = make_solver(name)
    if hasattr(solver, "lower_order_final"):
        solver = dataclasses.replace(solver, lower_order_final=False)
    return solver


def _global_errors(s, name, ns):
    x_T = jnp.linspace(-3.0, 3.0, 7, dtype=s.betas.dtype)[:, None]
    errors = {}
    for n in ns:
        out = sample(exact_eps(s), None, s, (7, 1), jax.random.key(0), solver=_full_order(name),
                     steps=n, x_T=x_T, loop=ONE_SCAN).samples  # fmt: skip
        t_final = int(step_sequence(s, name, n)[1][-1])
        errors[n] = float(np.max(np.abs(np.asarray(out, np.float64) - exact_flow(s, x_T, t_final))))
    return errors


@pytest.mark.parametrize(
    "name, order", [("ddim", 1), ("euler", 1), ("dpm++", 2), ("heun", 2), ("unipc", 3)]
)
def test_global_convergence_order(fine, name, order):
    """Slope of log2(error) against the exact ODE endpoint as the steps double (40 -> 160):
    DDIM and Euler 1, DPM-Solver++(2M) and Heun 2, UniPC-2 3 (its corrector lifts the order of
    the predictor by one, Zhao et al. 2023, Theorem 3.3)."""
    with jax.enable_x64(True):
        e = _global_errors(fine, name, (40, 80, 160))
    slopes = [np.log2(e[n] / e[2 * n]) for n in (40, 80)]
    assert all(abs(sl - order) < 0.25 for sl in slopes), (slopes, e)


def _local_error(s, name, n, **kw):
    """Error of one step from the exact solution with an exact history (the update's own
    truncation error, O(h^(order + 1))), at the middle step of an n-step run."""
    solver = dataclasses.replace(make_solver(name), **kw)
    plan = build_plan(s, solver, n, solver.default_spacing, lower_order_final=False)
    j = n // 2
    p = plan.points
    assert p.order[j] == solver.max_order
    z = np.linspace(-3.0, 3.0, 7)
    ts = plan.timesteps

    def x_at(t):  # the exact ODE solution through standardised value z
        m, sd = marginal(s, t)
        return m + sd * z

    def x0_at(t):  # the exact data prediction on it
        a, sd = alpha_sigma(s, np.asarray(t))
        x = x_at(t)
        eps = sd * (x - a * MU) / (a**2 * SIGMA**2 + sd**2)
        return (x - sd * eps) / a, eps

    x0, eps = x0_at(ts[j])
    state = tuple(jnp.asarray(x0_at(ts[j - 1 - k])[0]) for k in range(solver.history))
    c = {k: jnp.asarray(v[j]) for k, v in plan.coefficients.items()}
    out, _ = solver.step(state, jnp.asarray(x_at(ts[j])), jnp.asarray(eps), jnp.asarray(x0), c,
                         None)  # fmt: skip
    return float(np.max(np.abs(np.asarray(out) - x_at(plan.targets[j]))))


@pytest.mark.parametrize(
    "name, order, kw",
    [("ddim", 1, {}), ("dpm++", 2, {}), ("dpm++3m", 3, {}), ("dpm++3m", 2, {"reference_d2": True})],
)
def test_local_truncation_order(fine, name, order, kw):
    """One step from the exact state and history: local error O(h^(p+1)), slope p + 1.

    This is how DPM-Solver++(3M)'s third order shows: its global error is second order on
    this problem because the first two steps of any run use orders 1 and 2 (the warm-up that
    every multistep solver needs), and a first-order step leaves an O(h^2) error behind. With
    the reference code's halved D2 (diffusers' update) the update itself is second order.
    """
    with jax.enable_x64(True):
        e = {n: _local_error(fine, name, n, **kw) for n in (160, 320, 640)}
    slopes = [np.log2(e[n] / e[2 * n]) for n in (160, 320)]
    assert all(abs(sl - (order + 1)) < 0.3 for sl in slopes), (slopes, e)


def test_third_order_multistep_beats_second_order(fine):
    with jax.enable_x64(True):
        e3 = _global_errors(fine, "dpm++3m", (20, 40))
        e2 = _global_errors(fine, "dpm++", (20, 40))
    assert e3[20] < 0.8 * e2[20] and e3[40] < 0.6 * e2[40], (e3, e2)


def _affine_map(s, name, steps, **kw):
    """(A, B) with solver(x_T) = A x_T + B: exact for a deterministic solver with the exact
    eps, so its output distribution for x_T ~ N(0, 1) is N(B, A^2)."""
    x_T = jnp.array([[0.0], [1.0]])
    out = sample(exact_eps(s), None, s, (2, 1), jax.random.key(0), solver=make_solver(name, **kw),
                 steps=steps, x_T=x_T, loop=ONE_SCAN).samples  # fmt: skip
    out = np.asarray(out, np.float64)[:, 0]
    return out[1] - out[0], out[0]


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_solvers_reproduce_the_data_at_their_defaults(schedule, name):
    """Each ODE solver's output mean and std are within 2% of the data's: at their default
    steps and grid for the DPM-Solver++ family and UniPC (20); DDIM and Euler, first order,
    need 200 steps, and Heun 40 (79 network evaluations; at its default 25 the std is 3% high:
    its first steps, from ``k = sigma / alpha = 157``, are the least accurate)."""
    steps = {"ddim": 200, "euler": 200, "heun": 40}.get(name)
    A, B = _affine_map(schedule, name, steps)
    assert abs(B / MU - 1) < 0.02 and abs(abs(A) / SIGMA - 1) < 0.02, (A, B)


@pytest.mark.parametrize("name, steps", [("ddpm", 1000), ("euler-a", 500), ("dpm++2m-sde", 50),
                                          ("ddim-eta1", 500)])  # fmt: skip
def test_stochastic_solvers_reproduce_the_data(schedule, name, steps):
    """32,768 draws: mean and std within 2% of the data's (standard errors 0.1% and 0.4%).

    The first-order ancestral samplers need many steps for that (DDPM and Euler-ancestral
    leave the std 2.7% and 2.3% low at 250 steps); DPM-Solver++(2M) SDE is 1.6% high at 30."""
    solver = make_solver("ddim", eta=1.0) if name == "ddim-eta1" else make_solver(name)
    x = sample(exact_eps(schedule), None, schedule, (32, 1024), jax.random.key(3), solver=solver,
               steps=steps, loop=ONE_SCAN).samples  # fmt: skip
    x = np.asarray(x, np.float64)
    assert abs(x.mean() / MU - 1) < 0.02 and abs(x.std() / SIGMA - 1) < 0.02, (x.mean(), x.std())


# --------------------------------------------------------------------------------------------
# Solvers against other implementations and each other


def test_ddpm_and_ddim_solvers_equal_the_reverse_steps(schedule):
    """The DDPM solver on a 25-step grid is DDPM eq. 11 on the respaced schedule
    (:func:`jaxdiff.ddpm_step`), and DDIM with eta = 0.7 is :func:`jaxdiff.ddim_step`."""
    rng = np.random.default_rng(0)
    x, eps, z = (jnp.asarray(rng.standard_normal((3, 4)), jnp.float32) for _ in range(3))
    for variance in ("posterior", "beta"):
        solver = make_solver("ddpm", variance=variance)
        plan = build_plan(schedule, solver, 25, "trailing")
        resp = respaced_schedule(schedule, plan.timesteps)
        for i in (0, 11, 24):
            c = {k: v[i] for k, v in plan.coefficients.items()}
            x0 = (x - plan.points.sigma_s[i] * eps) / plan.points.alpha_s[i]
            ours, _ = solver.step((), x, eps, x0, c, z)
            ref = ddpm_step(resp, eps, x, 24 - i, z, variance)
            np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-5)
    solver = make_solver("ddim", eta=0.7)
    plan = build_plan(schedule, solver, 10, "trailing")
    for i in (0, 5, 9):
        c = {k: v[i] for k, v in plan.coefficients.items()}
        x0 = (x - plan.points.sigma_s[i] * eps) / plan.points.alpha_s[i]
        ours, _ = solver.step((), x, eps, x0, c, z)
        ref = ddim_step(schedule, eps, x, int(plan.timesteps[i]), int(plan.targets[i]), z, 0.7)
        np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-5)


def test_euler_is_ddim_in_the_sigma_form(schedule):
    """Euler in k = sigma / alpha and deterministic DDIM are one update (Karras et al. 2022,
    sec. 4): on the same grid they agree to float32 rounding."""
    x_T = jnp.linspace(-2.0, 2.0, 6).reshape(3, 2)
    run = lambda name: sample(exact_eps(schedule), None, schedule, (3, 2), jax.random.key(0),
                              solver=make_solver(name, spacing="karras"), steps=30, x_T=x_T,
                              loop=ONE_SCAN).samples  # fmt: skip
    np.testing.assert_allclose(run("euler"), run("ddim"), rtol=1e-5, atol=1e-5)


def test_unipc_predictor_is_dpm_solver_2m(schedule):
    """UniP-2 with B(h) = e^h - 1 is the DPM-Solver++(2M) update: the predictor's
    coefficients equal 2M's wherever both are second order."""
    unipc = build_plan(schedule, make_solver("unipc"), 20, "logsnr", lower_order_final=False)
    dpm = build_plan(schedule, make_solver("dpm++"), 20, "logsnr", lower_order_final=False)
    for k in ("x", "x0", "h0"):
        np.testing.assert_allclose(unipc.coefficients[k], dpm.coefficients[k], rtol=1e-12)
    assert unipc.coefficients["use_c"][0] == 0 and np.all(unipc.coefficients["use_c"][1:] == 1)


# --------------------------------------------------------------------------------------------
# Grids


def test_karras_grid(schedule):
    """Karras et al. eq. 5: the 5 levels between 0.1 and 10 with rho = 7, and the timesteps of
    the "karras" spacing are the schedule's nearest ones: first T-1, last 0, decreasing."""
    sig = karras_sigmas(0.1, 10.0, 5)
    ramp = np.linspace(0, 1, 5)
    np.testing.assert_allclose(sig, (10 ** (1 / 7) + ramp * (0.1 ** (1 / 7) - 10 ** (1 / 7))) ** 7)
    for n in (2, 10, 50, 500, 1000):
        ts = sampling_timesteps(schedule, n, "karras")
        assert len(ts) == n and ts[0] == 999 and ts[-1] == 0 and np.all(np.diff(ts) < 0)
    ts = sampling_timesteps(schedule, 10, "karras")
    a_all, s_all = alpha_sigma(schedule, np.arange(1000))
    target = karras_sigmas(s_all[0] / a_all[0], s_all[-1] / a_all[-1], 10)
    level = s_all / a_all
    for k, t in zip(target[1:-1], ts[1:-1], strict=True):  # the nearest timestep in log level
        assert abs(np.log(level[t] / k)) <= np.min(np.abs(np.log(level / k))) + 0.5 * np.max(
            np.abs(np.diff(np.log(level[max(t - 1, 0) : t + 2]))))  # fmt: skip


# --------------------------------------------------------------------------------------------
# Guidance and inpainting compose with every solver

MUS = jnp.array([-2.0, 0.5, 3.0, 1.0])  # classes 0..2, then the null label's mean (index 3)
K = 3


@pytest.mark.parametrize("name", ON_SCHEDULES)
def test_guidance_is_its_closed_form_for_every_solver(schedule, name):
    """The exact eps is affine in the class mean, so guidance with weight w samples exactly as
    the unguided model of mean ``mu_c + w (mu_c - mu_u)`` with the same noise (same key)."""
    apply = exact_eps(schedule)
    labels = jnp.array([0, 1, 2, 0])
    x_T = jnp.asarray(np.random.default_rng(3).standard_normal((4, 2)), jnp.float32)
    kw = dict(solver=name, steps=8, x_T=x_T, loop=ONE_SCAN)
    guided = sample(
        apply,
        MUS,
        schedule,
        (4, 2),
        jax.random.key(5),
        guidance=Guidance(2.0, labels=labels, num_classes=K),
        **kw,
    ).samples
    mean = 3 * MUS[labels] - 2 * MUS[K]
    ref = sample(lambda p, x, t: apply(p, x, t, jnp.arange(4)), mean, schedule, (4, 2),
                 jax.random.key(5), **kw).samples  # fmt: skip
    np.testing.assert_allclose(guided, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ON_SCHEDULES)
def test_inpainting_keeps_known_pixels_for_every_solver(schedule, name):
    shape = (2, 4, 4, 1)
    rng = np.random.default_rng(7)
    known = jnp.asarray(rng.uniform(-1.0, 1.0, shape), jnp.float32)
    mask = jnp.asarray(rng.random(shape) < 0.5)
    res = sample(exact_eps(schedule), None, schedule, shape, jax.random.key(0), solver=name,
                 steps=6, inpaint=Inpaint(mask, known, resample_jumps=1, jump_length=2),
                 record=(2, -1), loop=ONE_SCAN)  # fmt: skip
    out, m = np.asarray(res.samples), np.asarray(mask)
    np.testing.assert_array_equal(out[m], np.asarray(known)[m])  # bit for bit
    assert np.all(np.isfinite(out)) and not np.any(out[~m] == np.asarray(known)[~m])
    np.testing.assert_array_equal(res.trajectory[-1], res.samples)


@pytest.mark.parametrize("name", ["heun", "unipc", "dpm++3m", "dpm++2m-sde"])
def test_solver_state_survives_chunked_calls(schedule, name):
    """Multi-stage and multistep state crosses ``steps_per_call`` boundaries: chunks of 3
    scan steps equal one scan."""
    x_T = jnp.linspace(-2.0, 2.0, 6).reshape(3, 2)
    run = lambda **kw: sample(exact_eps(schedule), None, schedule, (3, 2), jax.random.key(0),
                              solver=name, steps=9, x_T=x_T, record=(4,), **kw)  # fmt: skip
    ref, other = run(loop=ONE_SCAN), run(loop=Loop(steps_per_call=3))
    np.testing.assert_allclose(other.samples, ref.samples, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(other.trajectory, ref.trajectory, rtol=1e-6, atol=1e-6)


def test_heun_costs_two_evaluations_per_step(schedule):
    """N Heun steps evaluate the network 2N - 1 times (none at the clean sample)."""
    assert len(build_plan(schedule, make_solver("heun"), 10, "karras")) == 19
    assert len(build_plan(schedule, make_solver("unipc"), 10, "logsnr")) == 10


def test_sampler_name_type_lists_every_solver():
    """The command-line choices (``SamplerName``) are exactly the registered solvers."""
    import typing

    from jaxdiff.samplers import SamplerName

    assert typing.get_args(SamplerName) == SAMPLERS


@pytest.mark.parametrize("name", SAMPLERS)
def test_solver_state_starts_at_zero(name):
    """The driver allocates the state as zeros of ``init``'s structure (see Solver.init)."""
    x = jnp.ones((2, 3))
    state = make_solver(name).init(x)
    assert all(a.shape == x.shape and not np.any(np.asarray(a)) for a in state)
