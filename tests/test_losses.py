"""Timestep sampling, L_simple and the variational bound in bits/dim."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from jaxdiff import (
    bits_per_dim,
    denoising_loss,
    discretized_gaussian_log_likelihood,
    eps_from_x0,
    loss_weight,
    make_schedule,
    normal_kl,
    prior_bpd,
    q_sample,
    sample_timesteps,
    v_from_eps_x0,
    vlb_terms,
)


def test_sample_timesteps_uniform_and_antithetic():
    t = sample_timesteps(jax.random.key(0), 100_000, 10)
    assert t.dtype == jnp.int32 and int(t.min()) == 0 and int(t.max()) == 9
    counts = np.bincount(np.asarray(t), minlength=10)
    assert np.all(np.abs(counts - 10_000) < 5 * np.sqrt(10_000 * 0.9))  # binomial, 5 sigma
    t = sample_timesteps(jax.random.key(1), 7, 100, antithetic=True)
    assert t.shape == (7,)
    np.testing.assert_array_equal(t[4:], 99 - t[:3])  # pairs (t, T-1-t), first 7 of 8 kept


def test_denoising_loss_targets():
    s = make_schedule("linear", 1000)
    x0 = jax.random.normal(jax.random.key(0), (512, 2))
    key = jax.random.key(1)
    zero = lambda x_t, t: jnp.zeros_like(x_t)
    # predicting 0 for the x0 target costs exactly mean(x0^2)
    loss, _ = denoising_loss(zero, s, x0, key, prediction="x0")
    assert float(loss) == pytest.approx(float(jnp.mean(x0**2)), rel=1e-6)
    # predicting 0 for eps costs E[eps^2] = 1 (512*2 draws: standard error 0.044)
    loss, aux = denoising_loss(zero, s, x0, key, prediction="eps", antithetic=True)
    assert abs(float(loss) - 1.0) < 5 * math.sqrt(2 / 1024)
    assert aux["t"].shape == (512,) and aux["per_example"].shape == (512,)
    # an oracle that knows x0 predicts eps and v exactly: zero loss
    oracle_eps = lambda x_t, t: eps_from_x0(s, x_t, t, x0)
    assert float(denoising_loss(oracle_eps, s, x0, key)[0]) < 1e-8
    oracle_v = lambda x_t, t: v_from_eps_x0(s, x0, t, oracle_eps(x_t, t))
    assert float(denoising_loss(oracle_v, s, x0, key, prediction="v")[0]) < 1e-8
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        denoising_loss(zero, s, x0, key, prediction="score")
    with pytest.raises(ValueError, match="denoise_fn output and x0 must have the same shape"):
        denoising_loss(lambda x_t, t: x_t[:, :1], s, x0, key)


def test_min_snr_weighting_is_the_same_loss_in_every_parameterisation():
    """Min-SNR-gamma (Hang et al. 2023): whatever the network predicts, the weighted loss is
    ``min(SNR, gamma) ||x0 - x0_hat||^2`` for the same underlying denoiser.

    For one denoiser with eps error d: ``x0 - x0_hat = -d / sqrt(SNR)`` and ``v - v_hat =
    d / sqrt(a)`` (a = alphas_cumprod), so the squared errors are ``|d|^2 / SNR`` and
    ``|d|^2 / a``; the references are float64 from the betas, the weights float32.
    """
    s = make_schedule("linear", 1000)
    t = np.array([0, 10, 100, 300, 700, 999])
    a = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[t]
    snr = a / (1 - a)
    mse_eps = np.linspace(0.5, 2.0, 6)
    expected = np.minimum(snr, 5.0) * mse_eps / snr
    for prediction, mse in (("eps", mse_eps), ("x0", mse_eps / snr), ("v", mse_eps / a)):
        w = np.asarray(loss_weight(s, jnp.asarray(t), prediction, "min_snr", 5.0), np.float64)
        np.testing.assert_allclose(w * mse, expected, rtol=1e-5)
    w_eps = np.asarray(loss_weight(s, jnp.asarray(t), "eps", "min_snr", 5.0))
    np.testing.assert_array_equal(w_eps[snr <= 5], 1.0)  # only the nearly clean steps shrink
    assert np.all(w_eps[snr > 5] < 1)
    np.testing.assert_array_equal(loss_weight(s, jnp.asarray(t), "v", "simple"), 1.0)


def test_denoising_loss_weighting():
    s = make_schedule("cosine", 100)
    x0 = jax.random.normal(jax.random.key(0), (64, 2))
    key = jax.random.key(1)
    zero = lambda x_t, t: jnp.zeros_like(x_t)
    plain, aux = denoising_loss(zero, s, x0, key)
    assert float(plain) == float(jnp.mean(aux["per_example"]))
    weighted, aux_w = denoising_loss(zero, s, x0, key, weighting="min_snr", snr_gamma=2.0)
    np.testing.assert_array_equal(aux_w["per_example"], aux["per_example"])  # unweighted
    w = loss_weight(s, aux["t"], "eps", "min_snr", 2.0)
    assert float(weighted) == pytest.approx(float(jnp.mean(w * aux["per_example"])), rel=1e-6)
    assert float(weighted) < float(plain)
    with pytest.raises(ValueError, match="unknown weighting 'snr'; choose one of"):
        denoising_loss(zero, s, x0, key, weighting="snr")
    with pytest.raises(ValueError, match="gamma must be finite and > 0, got 0"):
        denoising_loss(zero, s, x0, key, weighting="min_snr", snr_gamma=0)


def test_normal_kl_closed_form():
    # KL(N(0,1) || N(1,4)) = log 2 + (1 + 1) / 8 - 1/2
    kl = normal_kl(0.0, 0.0, 1.0, math.log(4.0))
    assert float(kl) == pytest.approx(math.log(2.0) + 0.25 - 0.5, rel=1e-6)
    assert float(normal_kl(0.3, -1.0, 0.3, -1.0)) == 0.0


@pytest.mark.usefixtures("x64")
def test_vlb_kl_terms_nonnegative_and_zero_at_the_posterior_mean():
    s = make_schedule("linear", 1000, dtype=jnp.float64)
    k = jax.random.split(jax.random.key(0), 3)
    x0 = jnp.round(jax.random.uniform(k[0], (6, 4, 4, 1), jnp.float64, -1, 1) * 127.5) / 127.5
    eps = jax.random.normal(k[1], x0.shape, jnp.float64)
    t = jnp.array([1, 2, 50, 400, 800, 999])
    x_t = q_sample(s, x0, t, eps)
    exact = vlb_terms(s, x0, x_t, t, eps)  # model mean == posterior mean
    np.testing.assert_allclose(exact, 0.0, atol=1e-10)
    wrong = vlb_terms(s, x0, x_t, t, eps + 0.1 * jax.random.normal(k[2], x0.shape, jnp.float64))
    assert bool(jnp.all(wrong > 0))
    beta_var = vlb_terms(s, x0, x_t, t, eps, variance="beta")  # wrong variance: KL > 0
    assert bool(jnp.all(beta_var > 0))


def test_discretized_gaussian_log_likelihood_sums_to_one():
    x = jnp.linspace(-1, 1, 256)  # every 8-bit level
    for mean, log_scale in ((0.0, math.log(0.1)), (0.7, math.log(0.02)), (-1.0, 0.0)):
        logp = discretized_gaussian_log_likelihood(x, mean, log_scale)
        assert float(jnp.sum(jnp.exp(logp))) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.usefixtures("x64")
def test_bits_per_dim_matches_hand_computation():
    """T = 2, a zero-eps model, four pixels: every term computed by hand with SciPy."""
    betas = np.array([0.1, 0.3])
    s = make_schedule(betas=betas, dtype=jnp.float64)
    x0 = (np.array([[0.0, 100.0, 200.0, 255.0]]) / 127.5) - 1.0
    key = jax.random.key(7)
    zero = lambda x_t, t: jnp.zeros_like(x_t)
    total, terms = bits_per_dim(zero, s, jnp.asarray(x0), key)

    abar = np.cumprod(1 - betas)
    post_var1 = betas[1] * (1 - abar[0]) / (1 - abar[1])
    n0, n1 = (
        np.asarray(jax.random.normal(jax.random.fold_in(key, t), x0.shape, jnp.float64))
        for t in (0, 1)
    )
    ln2 = math.log(2.0)
    # t = 1: KL between the posterior and the model, same variance beta-tilde_1
    x1 = np.sqrt(abar[1]) * x0 + np.sqrt(1 - abar[1]) * n1
    c1 = betas[1] * np.sqrt(abar[0]) / (1 - abar[1])
    c2 = (1 - abar[0]) * np.sqrt(1 - betas[1]) / (1 - abar[1])
    true_mean = c1 * x0 + c2 * x1
    model_mean = c1 * (x1 / np.sqrt(abar[1])) + c2 * x1  # eps = 0 => x0_hat = x1 / sqrt(abar_1)
    kl1 = np.mean((true_mean - model_mean) ** 2 / (2 * post_var1)) / ln2
    # t = 0: decoder, a Gaussian of std sqrt(beta-tilde_1) integrated over 8-bit bins
    xt0 = np.sqrt(abar[0]) * x0 + np.sqrt(1 - abar[0]) * n0
    mean0, std0 = xt0 / np.sqrt(abar[0]), np.sqrt(post_var1)
    upper = np.where(x0 > 0.999, np.inf, x0 + 1 / 255)
    lower = np.where(x0 < -0.999, -np.inf, x0 - 1 / 255)
    prob = norm.cdf(upper, mean0, std0) - norm.cdf(lower, mean0, std0)
    nll0 = -np.mean(np.log(prob)) / ln2
    # prior: KL(N(sqrt(abar_1) x0, 1 - abar_1) || N(0, 1))
    m, v = np.sqrt(abar[1]) * x0, 1 - abar[1]
    prior = np.mean(0.5 * (-1 - np.log(v) + v + m**2)) / ln2

    np.testing.assert_allclose(terms[0], [nll0, kl1], rtol=1e-9)
    np.testing.assert_allclose(prior_bpd(s, jnp.asarray(x0)), [prior], rtol=1e-9)
    np.testing.assert_allclose(total, [nll0 + kl1 + prior], rtol=1e-9)
