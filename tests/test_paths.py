"""Gaussian paths (jaxdiff.paths) in float64: each against its closed form, the derivatives
against finite differences, the discrete path against today's schedule to the bit, and every
conversion between eps, x0, v and the flow velocity round-tripping on every path."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import paths
from jaxdiff.paths import EDM, CosineVP, DiscreteVP, LinearVP, RectifiedFlow
from jaxdiff.schedules import make_schedule

CONTINUOUS = [CosineVP(), LinearVP(), EDM(), RectifiedFlow()]


def _times(path, n=7):
    # interior points (the ends of RectifiedFlow and CosineVP make one coefficient 0)
    return np.linspace(path.t_min, path.t_max, n + 2)[1:-1]


def test_closed_forms():
    with jax.enable_x64(True):
        t = jnp.asarray([0.1, 0.5, 0.9], jnp.float64)
        c = CosineVP(s=0.008)
        f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
        np.testing.assert_allclose(c.alpha(t) ** 2, f(np.asarray(t)) / f(0.0), rtol=1e-14)
        assert float(c.alpha(0.99) ** 2) == pytest.approx(2.43e-4, rel=1e-2)  # the docstring
        lin = LinearVP(beta_min=0.1, beta_max=20.0)
        log_ab = -0.1 * np.asarray(t) - 0.5 * 19.9 * np.asarray(t) ** 2
        np.testing.assert_allclose(lin.alpha(t), np.exp(log_ab / 2), rtol=1e-14)
        np.testing.assert_allclose(lin.sigma(t), np.sqrt(1 - np.exp(log_ab)), rtol=1e-13)
        np.testing.assert_array_equal(EDM().sigma(t), t)
        np.testing.assert_array_equal(EDM().alpha(t), np.ones(3))
        np.testing.assert_allclose(RectifiedFlow().alpha(t), 1 - np.asarray(t), rtol=0)
        assert (EDM().t_min, EDM().t_max) == (0.002, 80.0)


@pytest.mark.parametrize("path", [CosineVP(), LinearVP()], ids=lambda p: type(p).__name__)
def test_variance_preserving(path):
    with jax.enable_x64(True):
        t = jnp.asarray(_times(path))
        np.testing.assert_allclose(path.alpha(t) ** 2 + path.sigma(t) ** 2, 1.0, rtol=1e-14)


def test_the_discrete_path_is_the_schedule_to_the_bit():
    s = make_schedule("cosine", num_steps=50)
    path = DiscreteVP(s)
    t = jnp.arange(50)
    np.testing.assert_array_equal(path.alpha(t), s.sqrt_alphas_cumprod)
    np.testing.assert_array_equal(path.sigma(t), s.sqrt_one_minus_alphas_cumprod)
    assert (path.t_min, path.t_max) == (0.0, 49.0)


@pytest.mark.parametrize("path", CONTINUOUS, ids=lambda p: type(p).__name__)
def test_rates_match_central_differences(path):
    with jax.enable_x64(True):
        for t in _times(path, 3):
            h = 1e-6 * max(1.0, t)
            da, ds = paths._rates(path, jnp.float64(t))
            fd = lambda f, t=t, h=h: (f(jnp.float64(t + h)) - f(jnp.float64(t - h))) / (2 * h)
            assert float(da) == pytest.approx(float(fd(path.alpha)), rel=1e-7, abs=1e-9)
            assert float(ds) == pytest.approx(float(fd(path.sigma)), rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("prediction", paths.PREDICTIONS)
@pytest.mark.parametrize("path", CONTINUOUS, ids=lambda p: type(p).__name__)
def test_every_prediction_round_trips_on_every_path(path, prediction):
    """target = from_x0_eps(x0, eps); to_x0_eps(target, x_t) gives x0 and eps back."""
    with jax.enable_x64(True):
        key0, key1 = jax.random.split(jax.random.key(0))
        x0 = jax.random.normal(key0, (4, 3), jnp.float64)
        eps = jax.random.normal(key1, (4, 3), jnp.float64)
        for t in _times(path, 4):
            t = jnp.float64(t)
            x_t = path.alpha(t) * x0 + path.sigma(t) * eps
            target = paths.from_x0_eps(path, prediction, x0, eps, t)
            x0_back, eps_back = paths.to_x0_eps(path, prediction, target, x_t, t)
            scale = max(1.0, float(path.sigma(t)))  # EDM at sigma 80: x0 = x_t - 80 eps
            np.testing.assert_allclose(x0_back, x0, rtol=0, atol=1e-12 * scale)
            np.testing.assert_allclose(eps_back, eps, rtol=0, atol=1e-12 * scale)


def test_rectified_flow_velocity_and_v_on_the_discrete_path():
    with jax.enable_x64(True):
        x0, eps = jnp.asarray([1.0, -2.0]), jnp.asarray([0.5, 0.25])
        u = paths.from_x0_eps(RectifiedFlow(), "velocity", x0, eps, jnp.float64(0.3))
        np.testing.assert_allclose(u, eps - x0, rtol=0, atol=1e-15)  # Liu et al. 2022, eq. 1
    s = make_schedule("linear", num_steps=20)
    a, sig = float(s.sqrt_alphas_cumprod[7]), float(s.sqrt_one_minus_alphas_cumprod[7])
    v = paths.from_x0_eps(DiscreteVP(s), "v", x0, eps, 7)
    np.testing.assert_allclose(v, a * eps - sig * x0, rtol=1e-6)  # Salimans & Ho, sec. 4


def test_paths_compose_with_jit_vmap_and_grad():
    path = CosineVP()
    f = jax.jit(jax.vmap(jax.grad(lambda t: path.alpha(t) * path.sigma(t))))
    t = jnp.asarray([0.2, 0.6])
    # d/dt (alpha sigma) = alpha' sigma + alpha sigma'
    da, ds = paths._rates(path, t)
    np.testing.assert_allclose(f(t), da * path.sigma(t) + path.alpha(t) * ds, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        paths.to_x0_eps(path, "score", t, t, 0.5)
    assert math.isclose(float(path.alpha(0.0)), 1.0, rel_tol=1e-6)
