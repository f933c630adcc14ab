"""The forward process: moments of q(x_t | x_0), the iterative chain, batching and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import make_schedule, q_mean_variance, q_sample, q_sample_iterative, q_step

N = 200_000  # draws per moment check: standard errors ~ 0.2% of the std


def _check_moments(samples, mean, var, n):
    """Sample mean and variance within 5 standard errors of the true Gaussian moments."""
    se_mean = np.sqrt(var / n)
    se_var = var * np.sqrt(2.0 / (n - 1))
    assert abs(float(np.mean(samples)) - mean) < 5 * se_mean
    assert abs(float(np.var(samples, ddof=1)) - var) < 5 * se_var


@pytest.mark.parametrize("t", [0, 10, 250, 999])
def test_q_sample_moments(t):
    s = make_schedule("linear", 1000)
    x0 = jnp.full((N,), 0.7)
    noise = jax.random.normal(jax.random.key(t), (N,))
    x_t = np.asarray(q_sample(s, x0, jnp.full((N,), t), noise), np.float64)
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[t]
    _check_moments(x_t, np.sqrt(abar) * 0.7, 1 - abar, N)


@pytest.mark.parametrize("t", [0, 50, 199])
def test_iterative_chain_reaches_closed_form_moments(t):
    s = make_schedule("cosine", 200)
    x0 = jnp.full((N,), -0.4)
    x_t = np.asarray(q_sample_iterative(s, x0, t, jax.random.key(1)), np.float64)
    betas = np.asarray(s.betas, np.float64)
    abar = np.prod(1 - betas[: t + 1])
    _check_moments(x_t, np.sqrt(abar) * -0.4, 1 - abar, N)


def test_iterative_chain_per_example_t_and_q_step():
    s = make_schedule("linear", 50)
    x0 = jax.random.normal(jax.random.key(0), (4, 3))
    t = jnp.array([0, 3, 7, 49])
    key = jax.random.key(5)
    out = q_sample_iterative(s, x0, t, key)
    # Each example runs its own number of steps with the same per-step noise as a step loop.
    for i in range(4):
        x = x0[i]
        for k in range(int(t[i]) + 1):
            noise = jax.random.normal(jax.random.fold_in(key, k), (4, 3))[i]
            x = q_step(s, x, k, noise)
        np.testing.assert_allclose(out[i], x, rtol=1e-6, atol=1e-6)


def test_q_mean_variance():
    s = make_schedule("linear", 100)
    x0 = jnp.ones((2, 5))
    mean, var, log_var = q_mean_variance(s, x0, jnp.array([0, 99]))
    np.testing.assert_allclose(mean[1], jnp.sqrt(s.alphas_cumprod[99]) * jnp.ones(5), rtol=1e-6)
    # 1 - abar_0 = beta_0 exactly; computing it as 1 - float32(abar_0) would lose 4 digits.
    np.testing.assert_allclose(var[0], 1e-4, rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(log_var), var, rtol=1e-5)


def test_jit_vmap_and_loop_agree():
    s = make_schedule("cosine", 100)
    k1, k2 = jax.random.split(jax.random.key(3))
    x0 = jax.random.normal(k1, (8, 4, 4, 1))
    noise = jax.random.normal(k2, x0.shape)
    t = jnp.arange(8) * 12
    batched = q_sample(s, x0, t, noise)
    jitted = jax.jit(q_sample)(s, x0, t, noise)
    vmapped = jax.vmap(q_sample, in_axes=(None, 0, 0, 0))(s, x0, t, noise)
    looped = jnp.stack([q_sample(s, x0[i], int(t[i]), noise[i]) for i in range(8)])
    for other in (jitted, vmapped, looped):
        np.testing.assert_allclose(batched, other, rtol=1e-6, atol=1e-6)


def test_bad_inputs():
    s = make_schedule("linear", 100)
    x0 = jnp.zeros((4, 2))
    with pytest.raises(
        ValueError, match=r"x0 and noise must have the same shape.*\(4, 2\).*\(4, 3\)"
    ):
        q_sample(s, x0, jnp.zeros(4, jnp.int32), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape.*t.shape=\(3,\)"):
        q_sample(s, x0, jnp.zeros(3, jnp.int32), x0)
    with pytest.raises(TypeError, match="integer timestep indices"):
        q_sample(s, x0, jnp.zeros(4), x0)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 100\).*\[0, 100\]"):
        q_sample(s, x0, jnp.array([0, 1, 2, 100]), x0)
    with pytest.raises(TypeError, match="x0 must be a floating-point array"):
        q_sample(s, jnp.zeros((4, 2), jnp.int32), jnp.zeros(4, jnp.int32), x0)
