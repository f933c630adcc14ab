"""Every solver on every Gaussian path, sampling from an objective instead of a ``Schedule``.

Data x0 ~ N(M, S^2) per coordinate on a path ``x_t = alpha x0 + sigma eps``: ``x_t`` is Gaussian
with variance ``v = alpha^2 S^2 + sigma^2``, and the exact denoiser is the regression on it,

    x0_hat = M + alpha S^2 (x_t - alpha M) / v,     eps_hat = sigma (x_t - alpha M) / v.

The probability-flow ODE keeps the standardised value ``(x_t - alpha M) / sqrt(v)`` fixed, so
its exact endpoint is known. The objectives here call a "network" that returns the data mean
(``params``, or ``params[labels]``): the estimates are affine in it, as for any objective.
Convergence is measured in float64 with the plan and the solvers' own steps in NumPy (no
compile); the driver's objective path is checked against that loop once per solver.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import make_schedule
from jaxdiff.paths import EDM, CosineVP, DiscreteVP, LinearVP, RectifiedFlow
from jaxdiff.samplers import (
    SAMPLERS,
    EDMSampler,
    FlowEuler,
    FlowHeun,
    Guidance,
    Inpaint,
    Loop,
    build_path_plan,
    make_solver,
    path_times,
    sample,
)
from jaxdiff.samplers.path_plan import path_levels

M, S = 1.5, 0.5
ONE_SCAN = Loop(steps_per_call=None, unroll=1)
PATHS = {
    "cosine": CosineVP(t_min=1e-3),
    "linear": LinearVP(),
    "edm": EDM(),
    "flow": RectifiedFlow(t_min=1e-3, t_max=0.999),
}
# solver -> the order of its global error (DPM-Solver++(3M): at least 3, see below)
ORDERS = {"ddim": 1, "euler": 1, "flow-euler": 1, "dpm++": 2, "heun": 2, "edm": 2,
          "flow-heun": 2, "unipc": 3, "dpm++3m": 3}  # fmt: skip


def gaussian_estimates(alpha, sigma, x, mean):
    v = alpha**2 * S**2 + sigma**2
    return mean + alpha * S**2 * (x - alpha * mean) / v, sigma * (x - alpha * mean) / v


@dataclasses.dataclass(frozen=True)
class GaussianObjective:
    """The exact denoiser of N(mean, S^2) data on ``path``; the network gives the mean."""

    path: Any
    discrete: bool = False

    def denoise(self, net, x_t, t):
        mean = net(x_t, t)
        col = lambda a: jnp.reshape(a, (-1,) + (1,) * (x_t.ndim - 1))
        return gaussian_estimates(col(self.path.alpha(t)), col(self.path.sigma(t)), x_t, mean)


def mean_net(params, x, c, labels=None):
    """``params`` (a scalar mean) or ``params[labels]`` broadcast to ``x``'s shape."""
    m = params if labels is None else jnp.reshape(params[labels], (-1,) + (1,) * (x.ndim - 1))
    return jnp.broadcast_to(jnp.asarray(m, x.dtype), x.shape)


def full_order(name, **kw):
    solver = make_solver(name, **kw)
    if hasattr(solver, "lower_order_final"):
        solver = dataclasses.replace(solver, lower_order_final=False)
    return solver


def spacing_for(path_name, solver):
    """EDM's path spans k = 0.002..80: only its own rho = 7 grid is in the asymptotic regime
    at a few dozen steps (the t-uniform grid leaves DDIM's error flat from 8 to 64 steps)."""
    return "karras" if path_name == "edm" else solver.grid


def run_plan(plan, solver, x, rng=None, mean=M):
    """The driver's scan body in float64 NumPy: churn/jump, exact denoiser, the solver's step."""
    state = tuple(np.zeros_like(x) for _ in solver.init(jnp.zeros(1)))
    for j in range(len(plan)):
        op = {k: v[j] for k, v in plan.ops.items()}
        if op["jump"]:
            x = op["jump_scale"] * x + op["jump_std"] * rng.standard_normal(x.shape)
        x0, eps = gaussian_estimates(op["alpha_eval"], op["sigma_eval"], x, mean)
        c = {k: v[j] for k, v in plan.coefficients.items()}
        z = rng.standard_normal(x.shape) if solver.stochastic else None
        x, state = solver.step(state, x, eps, x0, c, z)
        x, state = np.asarray(x), tuple(np.asarray(s) for s in state)
    return x


def exact_endpoint(path, plan, x_T):
    a0, s0 = path_levels(path, plan.timesteps[:1])[:2]
    z = (x_T - a0 * M) / np.sqrt(a0**2 * S**2 + s0**2)
    if plan.points.clean[-1]:
        return M + S * z
    a, s = path_levels(path, plan.targets[-1:])[:2]
    return a * M + np.sqrt(a**2 * S**2 + s**2) * z


def endpoint_error(path_name, name, steps):
    path = PATHS[path_name]
    solver = full_order(name)
    plan = build_path_plan(path, solver, steps, spacing_for(path_name, solver))
    a0, s0 = path_levels(path, plan.timesteps[:1])[:2]
    x_T = a0 * M + np.sqrt(a0**2 * S**2 + s0**2) * np.linspace(-2.0, 2.0, 5)
    return float(np.max(np.abs(run_plan(plan, solver, x_T) - exact_endpoint(path, plan, x_T))))


@pytest.mark.parametrize("path_name", sorted(PATHS))
@pytest.mark.parametrize("name", sorted(ORDERS))
def test_every_ode_solver_converges_at_its_order_on_every_path(path_name, name):
    """Slope of log2(error) against the exact ODE endpoint as the steps double (32 -> 128).

    DPM-Solver++(3M) is third order in its update (``tests/test_solvers.py``); with the exact
    denoiser of Gaussian data on these grids its global error falls with slope 3 to 4, so only
    "at least 3" is asserted. Heun's slope on LinearVP's Karras grid is 2.3 at these steps (its
    error constant still settling), hence the band [order - 0.3, order + 0.5]."""
    order = ORDERS[name]
    with jax.enable_x64(True):
        e = [endpoint_error(path_name, name, n) for n in (32, 64, 128)]
    slopes = np.log2(np.array(e[:-1]) / np.array(e[1:]))
    if name == "dpm++3m":
        assert np.all(slopes > 2.7), (slopes, e)
    else:
        assert np.all((slopes > order - 0.3) & (slopes < order + 0.5)), (slopes, e)


STOCHASTIC = {
    "ddpm": (make_solver("ddpm"), 500),
    "ddim-eta1": (make_solver("ddim", eta=1.0), 500),
    "euler-a": (make_solver("euler-a"), 500),
    "dpm++2m-sde": (make_solver("dpm++2m-sde"), 50),
    # churn where 0.05 <= sigma / alpha <= 10: CosineVP(t_max=0.99) ends at 64, below 50 x 1.4
    "edm-churn": (EDMSampler(s_churn=40.0, s_tmin=0.05, s_tmax=10.0), 120),
}


@pytest.mark.parametrize("path_name", sorted(PATHS))
@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_every_stochastic_solver_reproduces_the_data_on_every_path(path_name, name):
    """32,768 draws (NumPy's generator, float64): mean within 1% and std within 3% of the
    data's (standard errors 0.2% and 0.4%; the rest is the first-order samplers' bias at these
    steps, e.g. DDPM's std 1.4% low at 500 steps on LinearVP, EDM's churned Heun 2.8% high at
    80 steps on the flow path)."""
    solver, steps = STOCHASTIC[name]
    path = PATHS[path_name]
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        plan = build_path_plan(path, solver, steps, spacing_for(path_name, solver))
        a0, s0 = path_levels(path, plan.timesteps[:1])[:2]
        x = run_plan(plan, solver, np.hypot(a0, s0) * rng.standard_normal(1 << 15), rng)
    assert abs(x.mean() / M - 1) < 0.01 and abs(x.std() / S - 1) < 0.03, (x.mean(), x.std())


# --------------------------------------------------------------------------------------------
# The driver with an objective: guidance, inpainting, chunked loops, discrete objectives

MEANS = jnp.array([-2.0, 0.5, 3.0, 1.0])  # classes 0..2, then the null label's mean (index 3)
LINEAR = GaussianObjective(LinearVP())


@pytest.mark.parametrize("name", SAMPLERS)
def test_driver_runs_every_solver_from_an_objective_with_guidance(name):
    """Through :func:`sample` (float32): guidance with weight w samples as the unguided model of
    mean ``m_c + w (m_c - m_u)`` with the same key (the estimates are affine in the network
    output), and for the deterministic solvers that is the float64 NumPy loop of the plan."""
    labels = jnp.array([0, 1, 2, 0])
    x_T = jnp.asarray(np.random.default_rng(3).standard_normal((4, 2)), jnp.float32)
    kw = dict(solver=name, steps=8, x_T=x_T, loop=ONE_SCAN)
    guided = sample(mean_net, MEANS, LINEAR, (4, 2), jax.random.key(5),
                    guidance=Guidance(2.0, labels=labels, num_classes=3), **kw).samples  # fmt: skip
    mean = 3 * MEANS[labels] - 2 * MEANS[3]
    ref = sample(lambda p, x, c: mean_net(p, x, c, jnp.arange(4)), mean, LINEAR, (4, 2),
                 jax.random.key(5), **kw).samples  # fmt: skip
    np.testing.assert_allclose(guided, ref, rtol=1e-4, atol=1e-4)
    solver = make_solver(name)
    if solver.stochastic:
        return
    with jax.enable_x64(True):
        plan = build_path_plan(LINEAR.path, solver, 8, solver.grid)
        x = run_plan(plan, solver, np.asarray(x_T, np.float64), mean=np.asarray(mean)[:, None])
    np.testing.assert_allclose(guided, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("solver", [FlowHeun(shift=3.0), EDMSampler(s_churn=10.0)])
def test_inpainting_and_chunked_loops_on_a_path(solver):
    """RePaint keeps the known pixels bit for bit on a continuous path (its jumps re-noise with
    the path's transition, composed with EDM's churn), and chunks of 3 scan steps equal one
    scan (Heun's stage state crosses the chunk boundaries)."""
    obj = GaussianObjective(EDM(sigma_max=20.0))
    shape = (2, 4, 4, 1)
    rng = np.random.default_rng(7)
    known = jnp.asarray(rng.uniform(-1.0, 1.0, shape), jnp.float32)
    mask = jnp.asarray(rng.random(shape) < 0.5)
    run = lambda loop: sample(mean_net, M, obj, shape, jax.random.key(0), solver=solver, steps=6,
                              inpaint=Inpaint(mask, known, resample_jumps=1, jump_length=2),
                              record=(2, -1), loop=loop)  # fmt: skip
    res, chunked = run(ONE_SCAN), run(Loop(steps_per_call=3))
    out, m = np.asarray(res.samples), np.asarray(mask)
    np.testing.assert_array_equal(out[m], np.asarray(known)[m])
    assert np.all(np.isfinite(out)) and not np.any(out[~m] == np.asarray(known)[~m])
    np.testing.assert_array_equal(res.trajectory[-1], res.samples)
    np.testing.assert_allclose(chunked.samples, res.samples, rtol=1e-5, atol=1e-5)


def test_edm_churn_through_the_driver_reproduces_the_data():
    """EDM's Algorithm 2 on its own path through :func:`sample` (the churn is the plan's
    re-noising op, x_T ~ N(0, sigma_max^2 + 1)): 32,768 draws, mean within 1%, std within 3%."""
    solver = EDMSampler(s_churn=40.0, s_tmin=0.05, s_tmax=50.0)
    x = sample(mean_net, M, GaussianObjective(EDM()), (32, 1024), jax.random.key(1),
               solver=solver, steps=60, loop=ONE_SCAN).samples  # fmt: skip
    x = np.asarray(x, np.float64)
    assert abs(x.mean() / M - 1) < 0.01 and abs(x.std() / S - 1) < 0.03, (x.mean(), x.std())


@dataclasses.dataclass(frozen=True)
class EpsObjective:
    """A network that predicts eps at integer t, on a DDPM schedule (DiscreteVP)."""

    path: Any
    discrete: bool = True

    def denoise(self, net, x_t, t):
        eps = net(x_t, t.astype(jnp.int32))
        col = lambda a: jnp.reshape(a, (-1,) + (1,) * (x_t.ndim - 1))
        return (x_t - col(self.path.sigma(t)) * eps) / col(self.path.alpha(t)), eps


def test_a_discrete_objective_samples_as_its_schedule():
    """An eps objective on ``DiscreteVP(schedule)`` runs the schedule's integer grid and gives
    the samples of ``sample(apply, params, schedule, ...)`` (same key, same draws) to float32
    rounding (the objective's ``alpha``, ``sigma`` are the schedule's float32 tables, the
    driver's the float64 plan's)."""
    s = make_schedule("linear", 1000)

    def eps_net(params, x, t):
        abar = jnp.reshape(s.alphas_cumprod[t], (-1,) + (1,) * (x.ndim - 1))
        return jnp.sqrt(1 - abar) * (x - jnp.sqrt(abar) * M) / (abar * S**2 + 1 - abar)

    kw = dict(solver="ddpm", steps=20, loop=ONE_SCAN)  # stochastic: the draws agree too
    ref = sample(eps_net, None, s, (8, 3), jax.random.key(2), **kw).samples
    out = sample(eps_net, None, EpsObjective(DiscreteVP(s)), (8, 3), jax.random.key(2),
                 **kw).samples  # fmt: skip
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Flow matching: Euler is DDIM on the rectified flow; Heun averages velocities in t


def test_flow_euler_on_rectified_flow_is_ddim():
    """``x_s + (t - s)(eps - x0) = (1 - t) x0 + t eps`` when ``x_s = (1 - s) x0 + s eps``: flow
    Euler is deterministic DDIM on :class:`RectifiedFlow` (from pure noise, t = 1), to float64
    rounding on the same grid, with and without SD3's shift."""
    path = RectifiedFlow()
    x_T = np.linspace(-2.0, 2.0, 7)
    with jax.enable_x64(True):
        for shift in (1.0, 3.0):
            flow = FlowEuler(shift=shift)
            plan = build_path_plan(path, flow, 12, "linspace")
            ddim = make_solver("ddim")
            times = np.append(plan.timesteps, plan.targets[-1])
            from jaxdiff.samplers.path_plan import grid_from_times
            from jaxdiff.samplers.plan import layout

            ddim_plan = layout(grid_from_times(path, ddim, times), ddim)
            np.testing.assert_array_equal(ddim_plan.timesteps, plan.timesteps)
            np.testing.assert_allclose(run_plan(plan, flow, x_T), run_plan(ddim_plan, ddim, x_T),
                                       rtol=1e-12, atol=1e-12)  # fmt: skip


def test_flow_heun_differs_from_heun_in_sigma_form():
    """On a VP path Heun in t (average of velocities) and Heun in ``k = sigma / alpha``
    (average of eps) are different second-order methods: on the same grid their endpoints
    differ by more than either's error difference would allow if they were one method."""
    path = PATHS["cosine"]
    times = path_times(path, 17, "linspace")
    from jaxdiff.samplers.path_plan import grid_from_times
    from jaxdiff.samplers.plan import layout

    x_T = np.linspace(-2.0, 2.0, 5)
    with jax.enable_x64(True):
        outs = [run_plan(layout(grid_from_times(path, sv, times), sv), sv, x_T)
                for sv in (FlowHeun(), make_solver("heun"))]  # fmt: skip
    assert np.max(np.abs(outs[0] - outs[1])) > 1e-4


def test_path_grids():
    """Karras' grid on EDM's path is eq. 5 itself; logsnr is uniform in lambda; SD3's shift is
    ``shift t / (1 + (shift - 1) t)`` on the rectified flow."""
    from jaxdiff.samplers import karras_sigmas

    np.testing.assert_allclose(path_times(EDM(), 10, "karras"), karras_sigmas(0.002, 80.0, 10),
                               rtol=1e-13)  # fmt: skip
    a, s = path_levels(LinearVP(), path_times(LinearVP(), 9, "logsnr"))[:2]
    lam = np.log(a / s)
    np.testing.assert_allclose(np.diff(lam), np.full(8, lam[1] - lam[0]), rtol=1e-9)
    u = np.linspace(1.0, 0.0, 11)
    np.testing.assert_allclose(path_times(RectifiedFlow(), 11, "linspace", shift=3.0),
                               3 * u / (1 + 2 * u), rtol=1e-15, atol=1e-15)  # fmt: skip


def test_bad_combinations_raise_before_compute():
    s = make_schedule("linear", 1000)  # T = 100 would warn of its terminal signal first

    def never(*args):
        raise AssertionError("must not run")

    key = jax.random.key(0)
    with pytest.raises(ValueError, match="needs a continuous path"):
        sample(never, None, s, (2, 1), key, solver="flow-euler")
    with pytest.raises(ValueError, match="churn needs a continuous path"):
        sample(never, None, s, (2, 1), key, solver=EDMSampler(s_churn=10.0))
    with pytest.raises(TypeError, match=r"or an objective with \.path"):
        sample(never, None, object(), (2, 1), key)
    with pytest.raises(ValueError, match="prediction='v' does not apply with an objective"):
        sample(never, None, LINEAR, (2, 1), key, solver=make_solver("ddim", prediction="v"))
    with pytest.raises(ValueError, match="where alpha = 0"):
        sample(
            never,
            None,
            GaussianObjective(RectifiedFlow()),
            (2, 1),
            key,
            solver=make_solver("heun", spacing="linspace"),
        )
    with pytest.raises(ValueError, match="s_churn >= 0"):
        EDMSampler(s_churn=-1.0)
    with pytest.raises(ValueError, match="shift must be > 0"):
        FlowEuler(shift=0.0)


def test_edm_without_churn_is_heun_and_churn_is_a_renoising_op():
    """``s_churn = 0`` is Algorithm 1 (the plan of :class:`Heun`, to the bit); with churn, the
    steps with ``s_tmin <= k <= s_tmax`` start at ``k (1 + gamma)``, ``gamma = min(s_churn / N,
    sqrt(2) - 1)``, reached by ``x <- x + sqrt(k_hat^2 - k^2) s_noise z`` on EDM's path."""
    path, n = EDM(), 10
    heun = build_path_plan(path, make_solver("heun"), n, "karras")
    edm = build_path_plan(path, EDMSampler(), n, "karras")
    for k in heun.coefficients:
        np.testing.assert_array_equal(edm.coefficients[k], heun.coefficients[k])
    np.testing.assert_array_equal(edm.ops["t_eval"], heun.ops["t_eval"])
    churned = build_path_plan(path, EDMSampler(s_churn=5.0, s_tmin=1.0, s_tmax=30.0, s_noise=1.1),
                              n, "karras")  # fmt: skip
    k = heun.timesteps
    active = (k >= 1.0) & (k <= 30.0)
    first = churned.points.stage == 0
    step_k = np.repeat(k, [2] * (n - 1) + [1])[first]
    k_hat = np.where(active, k * (1 + min(5.0 / n, np.sqrt(2) - 1)), k)  # clamped: 0.414
    np.testing.assert_allclose(churned.ops["t_eval"][first], k_hat, rtol=1e-12)
    std = 1.1 * np.sqrt(k_hat**2 - k**2)
    np.testing.assert_allclose(churned.ops["jump_std"][first], std, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(churned.ops["jump"][first], active)
    assert np.all(churned.ops["jump_scale"] == 1.0) and len(step_k) == n
