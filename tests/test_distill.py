"""jaxdiff.distill against closed forms: Gaussian data x0 ~ N(mu, s0^2) and its exact denoiser.

For such data ``E[x0 | x_t] = mu + k (x_t - alpha mu)``, ``k = alpha s0^2 / (alpha^2 s0^2 +
sigma^2)``, so every DDIM step is affine and the references below are written out in float64
NumPy, apart from the library.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import distill, make_schedule
from jaxdiff.train import TrainConfig

SCHEDULE = make_schedule("cosine", 64)
MU, S0 = 0.7, 0.4


def exact_eps(params, x, t, labels=None, *, dropout_key=None):
    """The exact noise prediction of N(mu, s0^2) data (params = (mu, s0), traced)."""
    mu, s0 = params
    a = SCHEDULE.sqrt_alphas_cumprod[t][:, None]
    s = SCHEDULE.sqrt_one_minus_alphas_cumprod[t][:, None]
    x0 = mu + a * s0**2 / (a**2 * s0**2 + s**2) * (x - a * mu)
    return (x - a * x0) / s


TEACHER = distill.discrete_denoiser(exact_eps, SCHEDULE, "eps")
PARAMS = (jnp.float32(MU), jnp.float32(S0))


def _ab(t):
    """float64 (alpha, sigma) at integer t, (1, 0) at the clean end -1."""
    ac = np.asarray(SCHEDULE.alphas_cumprod, np.float64)
    return (1.0, 0.0) if t < 0 else (np.sqrt(ac[t]), np.sqrt(1 - ac[t]))


def _ddim64(x, t, t_next):
    a, s = _ab(t)
    x0 = MU + a * S0**2 / (a**2 * S0**2 + s**2) * (x - a * MU)
    eps = (x - a * x0) / s
    a_n, s_n = _ab(t_next)
    return a_n * x0 + s_n * eps


def test_halving_grids_nest_and_end_clean():
    path = TEACHER.path
    for n in (1, 2, 4, 8, 16, 32):
        fine, coarse = distill.halving_grid(path, True, 2 * n), distill.halving_grid(path, True, n)
        np.testing.assert_array_equal(fine[::2], coarse)
        assert coarse[0] == 63 and coarse[-1] == distill.CLEAN and np.all(np.diff(coarse) < 0)
    with pytest.raises(ValueError, match="T=64"):
        distill.halving_grid(path, True, 128)


def test_progressive_target_reproduces_two_teacher_ddim_steps():
    """The one-step student target x~ takes z_t to the teacher's two-step result exactly (in
    closed form, float64), for every student step of a 4-step student."""
    n = 4
    fine = distill.halving_grid(TEACHER.path, True, 2 * n)
    x = np.linspace(-2.0, 3.0, 7)[:, None]
    for i in range(1, n + 1):
        t, t_mid, t_next = (int(v) for v in fine[2 * i - 2 : 2 * i + 1])
        z_next64 = _ddim64(_ddim64(x, t, t_mid), t_mid, t_next)  # float64 reference
        tb = lambda v: jnp.full((len(x),), v, jnp.int32)
        z_t = jnp.asarray(x, jnp.float32)
        z_next = distill.teacher_two_steps(TEACHER, PARAMS, z_t, tb(t), tb(t_mid), tb(t_next))
        np.testing.assert_allclose(z_next, z_next64, rtol=2e-5, atol=2e-5)
        target = distill.progressive_target(TEACHER.path, z_t, tb(t), z_next, tb(t_next))
        # x~ in float64: one DDIM step from z_t with x0 = x~ lands on z_next.
        a, s = _ab(t)
        a_n, s_n = _ab(t_next)
        x_tilde64 = (z_next64 - s_n / s * x) / (a_n - s_n / s * a)
        np.testing.assert_allclose(target, x_tilde64, rtol=1e-4, atol=1e-4)
        eps = (x_tilde64 - a * x_tilde64) * 0 + (x - a * x_tilde64) / s
        np.testing.assert_allclose(a_n * x_tilde64 + s_n * eps, z_next64, rtol=1e-12, atol=1e-12)


def test_one_step_student_target_is_the_teachers_two_step_sample():
    """For a 1-step student the target at t = T-1 is the clean end of two teacher DDIM steps:
    exactly what ddim_sample of the teacher at 2 steps draws."""
    x_T = jax.random.normal(jax.random.key(0), (256, 1))
    two = distill.ddim_sample(TEACHER, PARAMS, x_T, 2)
    grid = distill.halving_grid(TEACHER.path, True, 2)
    tb = lambda v: jnp.full((256,), v, jnp.int32)
    z = distill.teacher_two_steps(TEACHER, PARAMS, x_T, tb(grid[0]), tb(grid[1]), tb(grid[2]))
    target = distill.progressive_target(TEACHER.path, x_T, tb(grid[0]), z, tb(grid[2]))
    # x~ = z_t'' at the clean end; eager against one compiled loop: float32 rounding of the
    # near-cancellation x_t - alpha x0 in the teacher's eps (|x| ~ 3, results ~ 1) differs.
    np.testing.assert_allclose(target, two, rtol=1e-4, atol=1e-4)
    ref = _ddim64(_ddim64(np.asarray(x_T, np.float64), 63, int(grid[1])), int(grid[1]), -1)
    np.testing.assert_allclose(two, ref, rtol=1e-4, atol=1e-4)


def test_truncated_snr_weight_is_max_snr_one():
    t = jnp.arange(64)
    ac = np.asarray(SCHEDULE.alphas_cumprod, np.float64)
    np.testing.assert_allclose(
        distill.truncated_snr_weight(TEACHER.path, t), np.maximum(ac / (1 - ac), 1), rtol=1e-5
    )


def test_consistency_boundary_condition_is_exact():
    """c_skip(t_min) = 1 and c_out(t_min) = 0 exactly, so f(x, t_min) = x to the bit, whatever
    the network; elsewhere the coefficients are eq. 7 on s = sigma / alpha."""
    c_skip, c_out = distill.consistency_coefficients(TEACHER.path, jnp.int32(0), 0.5)
    assert float(c_skip) == 1.0 and float(c_out) == 0.0
    x = jax.random.normal(jax.random.key(1), (5, 3)) * 3
    f = distill.consistency_function(TEACHER, PARAMS, x, jnp.zeros(5, jnp.int32))
    np.testing.assert_array_equal(f, x)
    ac = np.asarray(SCHEDULE.alphas_cumprod, np.float64)
    s = np.sqrt((1 - ac) / ac)
    d = s - s[0]
    c_skip, c_out = distill.consistency_coefficients(TEACHER.path, jnp.arange(64), 0.5)
    np.testing.assert_allclose(c_skip, 0.25 / (d**2 + 0.25), rtol=1e-5)
    np.testing.assert_allclose(c_out, 0.5 * d / np.sqrt(0.25 + s**2), rtol=1e-5, atol=1e-7)


def test_teacher_ode_steps_against_the_exact_flow():
    """On Gaussian data the probability-flow ODE is affine in y = x / alpha with noise level s:
    y(s') = mu + (y - mu) sqrt(s0^2 + s'^2) / sqrt(s0^2 + s^2). Heun (second order) is closer
    to it than DDIM (first order) on one step of 3 of 64 (on a step of 20 neither is: there
    the second-order error term dominates)."""
    x = np.linspace(-2.0, 2.0, 9)[:, None]
    t, t_next = 30, 27
    (a, sg), (a_n, sg_n) = _ab(t), _ab(t_next)
    s, s_n = sg / a, sg_n / a_n
    exact = a_n * (MU + (x / a - MU) * np.sqrt(S0**2 + s_n**2) / np.sqrt(S0**2 + s**2))
    tb = lambda v: jnp.full((9,), v, jnp.int32)
    errs = {}
    for solver in distill.ODE_SOLVERS:
        got = distill.teacher_ode_step(TEACHER, PARAMS, jnp.asarray(x, jnp.float32), tb(t),
                                       tb(t_next), solver=solver)  # fmt: skip
        errs[solver] = float(np.max(np.abs(np.asarray(got, np.float64) - exact)))
    np.testing.assert_allclose(errs["ddim"], np.max(np.abs(_ddim64(x, t, t_next) - exact)),
                               rtol=1e-3, atol=1e-5)  # fmt: skip
    assert errs["heun"] < errs["ddim"] / 4, errs


def test_consistency_sampling_one_step_is_f_at_t_max():
    x_T = jax.random.normal(jax.random.key(2), (16, 1))
    taus = distill.consistency_sample_times(TEACHER.path, True, 1, 18)
    assert taus.tolist() == [63]
    one = distill.consistency_sample(TEACHER, PARAMS, x_T, taus, jax.random.key(3))
    f = distill.consistency_function(TEACHER, PARAMS, x_T, jnp.full((16,), 63, jnp.int32))
    # Compiled loop against eager: x0 = (x_t - sigma eps) / alpha at t = T-1 divides float32
    # rounding by alpha(63) = 7.7e-4, hence 1e-4.
    np.testing.assert_allclose(one, f, rtol=1e-4, atol=1e-4)
    assert distill.consistency_sample_times(TEACHER.path, True, 4, 18).tolist()[0] == 63


def test_frozen_teacher_needs_an_optimiser_without_weight_decay():
    with pytest.raises(ValueError, match="weight_decay"):
        distill.check_frozen_teacher(TrainConfig(optimizer="adamw", weight_decay=0.01))
    config = distill.student_train_config(TrainConfig(num_classes=10, label_dropout=0.1),
                                          learning_rate=1e-4, ema_decay=0.99)  # fmt: skip
    assert config.optimizer == "adam" and config.weight_decay == 0
    assert config.num_classes == 10 and config.label_dropout == 0.1
