"""Parity with diffusers' schedulers on identical inputs, from stored reference trajectories.

``tests/fixtures/diffusers_parity.npz`` was made by ``benchmarks/make_diffusers_fixtures.py``
(the diffusers and torch versions are stored in it): the DDPM linear betas, a fixed starting
noise, the analytic network :func:`model_eps` below and, for the stochastic schedulers, the
normal draws diffusers consumed. Every state after every network evaluation must match
diffusers' to float32 rounding; no PyTorch is needed here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.paths import EDM, RectifiedFlow
from jaxdiff.samplers import (
    DPMSolverPP2M,
    Euler,
    FlowEuler,
    FlowHeun,
    Loop,
    build_plan,
    make_solver,
    path_times,
    sample,
    sampling_timesteps,
)
from jaxdiff.samplers.guidance import to_eps_and_x0
from jaxdiff.samplers.path_plan import grid_from_times
from jaxdiff.samplers.plan import layout
from jaxdiff.schedules import schedule_from_betas

FIXTURES = np.load(Path(__file__).parent / "fixtures" / "diffusers_parity.npz")
# fixture name -> (sampler, solver options)
CASES = {
    "ddpm": ("ddpm", {}),
    "ddim": ("ddim", {}),
    "ddim_eta": ("ddim", {"eta": 0.6}),
    "dpm++": ("dpm++", {}),
    "dpm++_20": ("dpm++", {}),
    "dpm++3m": ("dpm++3m", {"reference_d2": True}),
    "dpm++2m-sde": ("dpm++2m-sde", {}),
    "euler": ("euler", {}),
    "euler-a": ("euler-a", {}),
    "heun": ("heun", {}),
    "unipc": ("unipc", {}),
}
# float32 rounding: diffusers computes its coefficients in float32 torch and we in float64
# NumPy (then cast to float32), so states differ by float32 ulps that accumulate over the steps:
# measured at most 2.6e-6 relative (about 20 ulps) over all cases. A real difference shows far
# above that: the 3M update with the doubled D2 is 3.6e-3 off at its first third-order step.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def schedule():
    return schedule_from_betas(FIXTURES["betas"], dtype=jnp.float32)


def model_eps(params, x, t, labels=None):
    """The fixtures' analytic network: ``0.7 tanh(x) + 0.3 x cos(t / 250)``."""
    t = jnp.reshape(t.astype(jnp.float32), (-1,) + (1,) * (x.ndim - 1))
    return 0.7 * jnp.tanh(x) + 0.3 * x * jnp.cos(t / 250.0)


def _solver(case):
    name, options = CASES[case]
    return make_solver(name, **options)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_state_matches_diffusers(schedule, case):
    solver = _solver(case)
    calls = FIXTURES[f"{case}/calls"]
    steps = len(FIXTURES[f"{case}/timesteps"])
    if solver.name == "heun":
        steps = (len(calls) + 1) // 2  # diffusers lists each inner timestep twice
    plan = build_plan(schedule, solver, steps, "trailing")
    np.testing.assert_array_equal(plan.ops["t_eval"], calls)  # the same network evaluations
    expected = FIXTURES[f"{case}/states"]
    noise = FIXTURES[f"{case}/noise"]
    assert len(expected) == len(plan) and (len(noise) == len(plan)) == solver.stochastic
    x = jnp.asarray(FIXTURES[f"{case}/x_T"])
    state = solver.init(x)
    for j in range(len(plan)):
        t = jnp.full((x.shape[0],), plan.ops["t_eval"][j], jnp.int32)
        a, s = (jnp.float32(plan.ops[k][j]) for k in ("alpha_eval", "sigma_eval"))
        eps, x0 = to_eps_and_x0(model_eps(None, x, t), x, a, s, "eps")
        c = {k: jnp.float32(v[j]) for k, v in plan.coefficients.items()}
        z = jnp.asarray(noise[j]) if solver.stochastic else None
        x, state = solver.step(state, x, eps, x0, c, z)
        np.testing.assert_allclose(x, expected[j], rtol=RTOL, atol=ATOL, err_msg=f"step {j}")


@pytest.mark.parametrize("case", ["ddim", "dpm++_20", "euler", "heun", "unipc"])
def test_sample_reproduces_the_diffusers_output(schedule, case):
    """Through the public driver (one compiled scan): the final sample is diffusers'. (Not
    ``"dpm++3m"``: that name is the third-order update, which differs from diffusers' on
    purpose; the step test above checks diffusers' variant.)"""
    solver = _solver(case)
    steps = len(FIXTURES[f"{case}/timesteps"])
    if solver.name == "heun":
        steps = (len(FIXTURES[f"{case}/calls"]) + 1) // 2
    x_T = jnp.asarray(FIXTURES[f"{case}/x_T"])
    out = sample(model_eps, None, schedule, x_T.shape, jax.random.key(0),
                 solver=dataclasses.replace(solver, spacing="trailing"), steps=steps, x_T=x_T,
                 loop=Loop(steps_per_call=None, unroll=1)).samples  # fmt: skip
    np.testing.assert_allclose(out, FIXTURES[f"{case}/states"][-1], rtol=RTOL, atol=ATOL)


def test_grids_match_diffusers(schedule):
    """The leading, trailing and linspace spacings are diffusers' timesteps, and so are the
    Karras-sigma timesteps of ``DPMSolverMultistepScheduler(use_karras_sigmas=True)``."""
    for key in FIXTURES.files:
        if key.startswith("spacing/"):
            _, spacing, n = key.split("/")
            np.testing.assert_array_equal(sampling_timesteps(schedule, int(n), spacing),
                                          FIXTURES[key], err_msg=key)  # fmt: skip
        elif key.startswith("karras/"):
            n = int(key.split("/")[1])
            np.testing.assert_array_equal(sampling_timesteps(schedule, n, "karras"),
                                          FIXTURES[key], err_msg=key)  # fmt: skip


def test_fixture_records_its_versions():
    versions = [str(v) for v in FIXTURES["versions"]]
    assert any(v.startswith("diffusers ") for v in versions), versions


# --------------------------------------------------------------------------------------------
# EDM and flow matching on continuous paths: tests/fixtures/diffusers_paths.npz, made by
# benchmarks/make_diffusers_path_fixtures.py (EDMEuler, EDMDPMSolverMultistep, FlowMatchEuler and
# FlowMatchHeun with shift 3), replayed on diffusers' own grid through objectives of the contract
# of jaxdiff.samplers.sample.

PATH_FIXTURES = np.load(Path(__file__).parent / "fixtures" / "diffusers_paths.npz")


def path_model(x, c):
    """The path fixtures' analytic network: ``0.7 tanh(x) + 0.3 x cos(c / 250)``."""
    c = jnp.reshape(jnp.asarray(c, jnp.float32), (-1,) + (1,) * (x.ndim - 1))
    return 0.7 * jnp.tanh(x) + 0.3 * x * jnp.cos(c / 250.0)


@dataclasses.dataclass(frozen=True)
class EDMPrecond:
    """Karras et al. 2022, Table 1 (eps-style ``F``): ``D = c_skip x + c_out F(c_in x,
    c_noise)``, as diffusers' ``precondition_inputs`` / ``precondition_noise`` /
    ``precondition_outputs`` (``prediction_type="epsilon"``)."""

    path: object = EDM()
    discrete: bool = False

    def denoise(self, net, x_t, t):
        sd = self.path.sigma_data
        sigma = jnp.reshape(t, (-1,) + (1,) * (x_t.ndim - 1))
        norm = jnp.sqrt(sigma**2 + sd**2)
        out = net(x_t / norm, 0.25 * jnp.log(t))
        x0 = sd**2 / norm**2 * x_t + sigma * sd / norm * out
        return x0, (x_t - x0) / sigma


@dataclasses.dataclass(frozen=True)
class Velocity:
    """A velocity network on the rectified flow at ``c = 1000 t`` (SD3's timesteps):
    ``u = eps - x0``, so ``x0 = x - t u`` and ``eps = x + (1 - t) u``."""

    path: object = RectifiedFlow()
    discrete: bool = False

    def denoise(self, net, x_t, t):
        u = net(x_t, 1000.0 * t)
        tt = jnp.reshape(t, (-1,) + (1,) * (x_t.ndim - 1))
        return x_t - tt * u, x_t + (1 - tt) * u


PATH_CASES = {  # fixture name -> (objective, solver)
    "edm_euler": (EDMPrecond(), Euler()),
    "edm_dpm": (EDMPrecond(), DPMSolverPP2M()),
    "flow_euler": (Velocity(), FlowEuler(shift=3.0)),
    "flow_heun": (Velocity(), FlowHeun(shift=3.0)),
}


@pytest.mark.parametrize("case", sorted(PATH_CASES))
def test_every_state_matches_diffusers_on_paths(case):
    """Every state after every network evaluation is diffusers' to float32 rounding, on
    diffusers' sigmas (their grid: ``shift`` applied to a linspace from 1 to ``shift(1/1000)``
    for the flow schedulers, which jaxdiff's own shifted grid from 1 to 0 does not copy).
    Measured: at most 2.8e-7 of the largest state (a few float32 ulps; diffusers' coefficients
    are float32, ours float64), while another method is far off (Euler on the EDM DPM-Solver
    fixture: 8.5e-3), so ``RTOL`` with ``ATOL`` scaled by the states' size is a tight bound."""
    objective, solver = PATH_CASES[case]
    sigmas = PATH_FIXTURES[f"{case}/sigmas"].astype(np.float64)
    plan = layout(grid_from_times(objective.path, solver, sigmas), solver)
    expected = PATH_FIXTURES[f"{case}/states"]
    assert len(plan) == len(expected)
    x = jnp.asarray(PATH_FIXTURES[f"{case}/x_T"])
    state = solver.init(x)
    for j in range(len(plan)):
        t = jnp.full((x.shape[0],), plan.ops["t_eval"][j], jnp.float32)
        x0, eps = objective.denoise(path_model, x, t)
        c = {k: jnp.float32(v[j]) for k, v in plan.coefficients.items()}
        x, state = solver.step(state, x, eps, x0, c, None)
        np.testing.assert_allclose(x, expected[j], rtol=RTOL, atol=ATOL * np.abs(expected).max(),
                                   err_msg=f"step {j}")  # fmt: skip


def test_sample_reproduces_diffusers_edm_euler():
    """Through :func:`sample` on jaxdiff's own grid: Karras' rho = 7 sigmas on ``EDM()``, which
    are diffusers' (``EDMEulerScheduler``; ours float64, theirs cast to float32)."""
    x_T = jnp.asarray(PATH_FIXTURES["edm_euler/x_T"])
    sigmas = PATH_FIXTURES["edm_euler/sigmas"]
    steps = len(sigmas) - 1
    np.testing.assert_allclose(path_times(EDM(), steps, "karras"), sigmas[:-1], rtol=1e-6)
    out = sample(lambda p, x, c: path_model(x, c), None, EDMPrecond(), x_T.shape,
                 jax.random.key(0), solver=Euler(), steps=steps, x_T=x_T,
                 loop=Loop(steps_per_call=None, unroll=1)).samples  # fmt: skip
    expected = PATH_FIXTURES["edm_euler/states"][-1]
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL * np.abs(expected).max())


def test_path_fixture_records_its_versions():
    versions = [str(v) for v in PATH_FIXTURES["versions"]]
    assert any(v.startswith("diffusers ") for v in versions), versions
