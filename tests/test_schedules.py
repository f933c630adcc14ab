"""Schedules against their closed forms, computed independently in float64."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit

import jaxdiff
from jaxdiff import TerminalSignalWarning, make_schedule


def test_linear_alphas_cumprod_matches_float64_product():
    s = make_schedule("linear", num_steps=1000)
    ref = np.prod(1.0 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    assert ref == pytest.approx(4.036e-5, rel=1e-3)
    # Stored as float32 (relative spacing 6e-8) after a float64 computation.
    assert float(s.alphas_cumprod[-1]) == pytest.approx(ref, rel=1e-6)
    assert s.betas.dtype == jnp.float32 and s.num_steps == 1000


def test_cosine_matches_closed_form():
    T, s_ = 1000, 0.008
    s = make_schedule("cosine", num_steps=T)
    t = np.arange(T + 1) / T
    f = np.cos((t + s_) / (1 + s_) * np.pi / 2) ** 2
    abar = f[1:] / f[0]  # alphas_cumprod[t] is abar at (t + 1) / T with 0-based t
    betas = 1 - abar / np.append(1.0, abar[:-1])
    unclipped = betas < 0.999
    assert unclipped[: T - 1].all() and not unclipped[-1]  # only the last step is clipped
    np.testing.assert_allclose(s.alphas_cumprod[:-1], abar[:-1], rtol=1e-5)
    assert float(s.betas[-1]) == pytest.approx(0.999, rel=1e-6)


def test_quadratic_and_sigmoid_formulas():
    T = 200
    q = make_schedule("quadratic", num_steps=T, beta_start=1e-4, beta_end=0.02)
    ref_q = np.linspace(1e-2, math.sqrt(0.02), T) ** 2
    np.testing.assert_allclose(q.betas, ref_q, rtol=1e-6)
    sg = make_schedule("sigmoid", num_steps=T, beta_start=1e-5, beta_end=5e-3)
    ref_s = expit(np.linspace(-6, 6, T)) * (5e-3 - 1e-5) + 1e-5
    np.testing.assert_allclose(sg.betas, ref_s, rtol=1e-6)


def test_constant_gives_a_power_t_plus_one():
    s = make_schedule("constant", num_steps=500, a=0.99)
    ref = 0.99 ** (np.arange(500, dtype=np.float64) + 1)
    np.testing.assert_allclose(s.alphas_cumprod, ref, rtol=1e-6)


def test_user_betas_and_derived_terms():
    betas = np.array([0.1, 0.2, 0.3])
    s = make_schedule(betas=betas)
    assert s.kind == "custom" and s.num_steps == 3
    np.testing.assert_allclose(s.alphas_cumprod, [0.9, 0.72, 0.504], rtol=1e-6)
    np.testing.assert_allclose(s.alphas_cumprod_prev, [1.0, 0.9, 0.72], rtol=1e-6)
    # beta-tilde_1 = beta_1 (1 - abar_0) / (1 - abar_1) = 0.2 * 0.1 / 0.28, and the log at t=0
    # is clipped to it.
    assert float(s.posterior_variance[0]) == 0.0
    assert float(s.posterior_variance[1]) == pytest.approx(0.2 * 0.1 / 0.28, rel=1e-6)
    assert float(s.posterior_log_variance_clipped[0]) == pytest.approx(
        math.log(0.2 * 0.1 / 0.28), rel=1e-6
    )


def test_schedule_is_a_pytree_for_jit():
    s = make_schedule("linear", num_steps=10)
    leaves = jax.tree_util.tree_leaves(s)
    assert len(leaves) == 14 and all(leaf.shape == (10,) for leaf in leaves)
    out = jax.jit(lambda sch: sch.alphas_cumprod[-1])(s)
    assert float(out) == pytest.approx(float(s.alphas_cumprod[-1]))


def test_terminal_signal_warning():
    tutorial = make_schedule("sigmoid", num_steps=100, beta_start=1e-5, beta_end=5e-3)
    assert tutorial.final_alpha_bar == pytest.approx(0.778, abs=1e-3)
    with pytest.warns(TerminalSignalWarning, match="0.778"):
        jaxdiff.check_terminal_signal(tutorial)
    assert "alphas_cumprod[-1]=0.778" in repr(tutorial)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jaxdiff.check_terminal_signal(make_schedule("linear"))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(kind="linear", num_steps=0), ValueError, "num_steps must be >= 1, got 0"),
        (dict(kind="linear", num_steps=2.5), TypeError, "num_steps must be an int"),
        (dict(kind="exponential"), ValueError, "unknown schedule kind 'exponential'.*cosine"),
        (dict(betas=[0.1, 0.0, 0.2]), ValueError, r"betas\[1\] = 0.0"),
        (dict(betas=[0.1, 1.0]), ValueError, r"open interval \(0, 1\)"),
        (dict(betas=[0.1, float("nan")]), ValueError, "betas must be finite"),
        (dict(betas=[[0.1, 0.2]]), ValueError, r"1-D array of shape \(T,\)"),
        (dict(betas=[0.1, 0.2], num_steps=3), ValueError, "does not match len"),
        (dict(kind="constant"), ValueError, "needs a="),
        (dict(kind="constant", a=1.0), ValueError, r"a in \(0, 1\), got a=1.0"),
        (dict(kind="constant", a=0.0), ValueError, r"a in \(0, 1\)"),
        (dict(kind="cosine", beta_end=0.02), ValueError, "does not take"),
        (dict(kind="linear", beta_end=1.5), ValueError, r"beta_end must be in \(0, 1\)"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_schedule(**kwargs)
