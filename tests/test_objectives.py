"""Objectives (jaxdiff.objectives): DDPM's loss and conversion equal today's to the bit; EDM's
and flow matching's losses equal their closed forms in float64 (NumPy); EDM's preconditioning
meets the paper's unit-variance conditions; ``denoise`` with the exact network of Gaussian data
gives the exact posterior means on every objective; and a few Trainer steps lower each loss."""

from __future__ import annotations

import json
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdiff import data as jdata
from jaxdiff import objectives, paths
from jaxdiff.losses import denoising_loss
from jaxdiff.models import SinusoidalMLP, split_model
from jaxdiff.objectives import DDPM, EDM, Flow, make_objective, train_loss
from jaxdiff.outputs import read_metrics
from jaxdiff.parameterization import to_eps_and_x0
from jaxdiff.schedules import make_schedule
from jaxdiff.train import TrainConfig, Trainer

SCHEDULE = make_schedule("cosine", num_steps=50)


def _apply(params, x, c, labels=None, *, dropout_key=None):
    """A closed-form "network": ``w x + b c`` (``c`` per example), differentiable in params."""
    c = jnp.broadcast_to(jnp.asarray(c, x.dtype), x.shape[:1])
    return params["w"] * x + params["b"] * c.reshape(-1, *([1] * (x.ndim - 1)))


def _np_apply(params, x, c):
    return params["w"] * x + params["b"] * np.asarray(c).reshape(-1, *([1] * (x.ndim - 1)))


@pytest.mark.parametrize(
    "prediction,weighting,antithetic",
    [("eps", "simple", False), ("x0", "min_snr", False), ("v", "min_snr", True)],
)
def test_ddpm_loss_is_denoising_loss_to_the_bit(prediction, weighting, antithetic):
    obj = DDPM(SCHEDULE, prediction, weighting, 3.0, antithetic)
    params = {"w": jnp.float32(0.7), "b": jnp.float32(0.01)}
    x0 = jax.random.normal(jax.random.key(0), (6, 3))
    key, dk = jax.random.key(1), jax.random.key(2)
    got, aux = jax.jit(lambda p: obj.loss(_apply, p, x0, None, key, dk))(params)
    want, want_aux = jax.jit(
        lambda p: denoising_loss(
            lambda x, t: _apply(p, x, t), SCHEDULE, x0, key, prediction=prediction,
            antithetic=antithetic, weighting=weighting, snr_gamma=3.0,
        )
    )(params)  # fmt: skip
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(aux["per_example"], want_aux["per_example"])
    assert obj.discrete and isinstance(obj.path, paths.DiscreteVP)


def test_ddpm_objective_through_the_trainer_equals_the_default_step():
    """``loss=train_loss(DDPM(...), apply)`` gives the Trainer's default step to the bit."""
    params, apply = {"w": jnp.float32(0.5), "b": jnp.float32(0.01)}, _apply
    config = TrainConfig(learning_rate=1e-2, prediction="v", loss_weighting="min_snr")
    obj = DDPM(SCHEDULE, "v", "min_snr")
    batch = {"x": np.asarray(jax.random.normal(jax.random.key(3), (8, 2)))}
    states = []
    for loss in (None, train_loss(obj, apply)):
        trainer = Trainer(apply, SCHEDULE, config, loss=loss)
        state = trainer.init_state(params, 5)
        for _ in range(2):
            state, metrics = trainer.step(state, batch)
        states.append((jax.device_get(state.params), float(metrics["loss"])))
    jax.tree.map(np.testing.assert_array_equal, states[0][0], states[1][0])
    assert states[0][1] == states[1][1]


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_ddpm_denoise_is_todays_conversion(prediction):
    obj = DDPM(SCHEDULE, prediction)
    x_t = jax.random.normal(jax.random.key(4), (5, 4))
    t = jnp.asarray([0, 3, 17, 30, 49], jnp.int32)
    net = lambda x, c: 0.3 * x + 0.01 * c[:, None].astype(x.dtype)
    eps, x0 = to_eps_and_x0(SCHEDULE, net(x_t, t), x_t, t, prediction)
    for times in (t, t.astype(jnp.float32)):  # float times on the path round to the integers
        got_x0, got_eps = obj.denoise(net, x_t, times)
        np.testing.assert_array_equal(got_x0, x0)
        np.testing.assert_array_equal(got_eps, eps)


def _edm_reference(obj, params, x0, key):
    """EDM eq. 2 with Table 1's choices in NumPy float64: ``lambda ||D - x0||^2``."""
    k_sigma, k_noise = jax.random.split(key)
    n = np.asarray(jax.random.normal(k_sigma, x0.shape[:1], jnp.float64))
    eps = np.asarray(jax.random.normal(k_noise, x0.shape, jnp.float64))
    sigma = np.exp(-1.2 + 1.2 * n)
    s, sd = sigma[:, None], obj.sigma_data
    x = x0 + s * eps
    c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / np.sqrt(s**2 + sd**2)
    c_in, c_noise = 1 / np.sqrt(s**2 + sd**2), np.log(sigma) / 4
    d = c_skip * x + c_out * _np_apply(params, c_in * x, c_noise)
    lam = (sigma**2 + sd**2) / (sigma * sd) ** 2
    return np.mean(lam * np.mean((d - x0) ** 2, axis=1)), sigma


def _flow_reference(obj, params, x0, key):
    """Flow matching in NumPy float64: ``||u_hat(x_t, 1000 t) - (eps - x0)||^2``."""
    k_t, k_noise = jax.random.split(key)
    if obj.time_sampling == "uniform":
        t = np.asarray(jax.random.uniform(k_t, x0.shape[:1], jnp.float64))
    else:
        t = 1 / (1 + np.exp(-np.asarray(jax.random.normal(k_t, x0.shape[:1], jnp.float64))))
    eps = np.asarray(jax.random.normal(k_noise, x0.shape, jnp.float64))
    x_t = (1 - t[:, None]) * x0 + t[:, None] * eps
    u = _np_apply(params, x_t, 1000 * t)
    return np.mean(np.mean((u - (eps - x0)) ** 2, axis=1)), t


@pytest.mark.parametrize(
    "obj,reference",
    [
        (EDM(sigma_data=0.7), _edm_reference),
        (Flow("uniform"), _flow_reference),
        (Flow("logit_normal"), _flow_reference),
    ],
    ids=["edm", "flow-uniform", "flow-logit-normal"],
)
def test_continuous_losses_equal_their_closed_forms(obj, reference):
    with jax.enable_x64(True):
        params = {"w": np.float64(0.6), "b": np.float64(0.002)}
        x0 = np.asarray(jax.random.normal(jax.random.key(6), (16, 3), jnp.float64))
        key = jax.random.key(7)
        loss, aux = jax.jit(lambda p: obj.loss(_apply, p, x0, None, key, None))(params)
        want, times = reference(obj, params, x0, key)
        assert loss.dtype == jnp.float64
        # Same draws; EDM's eq. 8 form and the lambda ||D - x0||^2 form differ by rounding only.
        np.testing.assert_allclose(aux["t"], times, rtol=1e-14)
        np.testing.assert_allclose(loss, want, rtol=1e-12)
        grad = jax.grad(lambda p: obj.loss(_apply, p, x0, None, key, None)[0])(params)
        assert np.isfinite(grad["w"]) and grad["w"] != 0


def test_noise_level_distributions():
    """EDM: ln sigma ~ N(-1.2, 1.2^2); flow logit-normal: logit t ~ N(0, 1); 20k draws, so the
    sample mean and std are within 4 standard errors (0.03 or less) of the target."""
    n = 20_000
    x0 = jnp.zeros((n, 1))
    edm = jax.jit(lambda k: EDM().loss(_apply, {"w": 0.0, "b": 0.0}, x0, None, k, None))
    _, aux = edm(jax.random.key(8))
    log_sigma = np.log(np.asarray(aux["t"]))
    assert abs(log_sigma.mean() + 1.2) < 4 * 1.2 / np.sqrt(n)
    assert abs(log_sigma.std() - 1.2) < 0.03
    t = np.asarray(Flow("logit_normal").sample_t(jax.random.key(9), n))
    logit = np.log(t / (1 - t))
    assert abs(logit.mean()) < 4 / np.sqrt(n) and abs(logit.std() - 1) < 0.03
    u = np.asarray(Flow("uniform").sample_t(jax.random.key(9), n))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n)


def test_edm_preconditioning_unit_variance():
    """Appendix B.6 of Karras et al.: for data of std sigma_data, ``c_in x`` and the effective
    target ``(x0 - c_skip x) / c_out`` have unit variance at every sigma (exact in the
    variances; and by Monte Carlo for non-Gaussian, uniform data), and ``lambda c_out^2 = 1``."""
    with jax.enable_x64(True):
        obj = EDM(sigma_data=0.62)
        sigma = np.geomspace(0.002, 80.0, 9)
        c_skip, c_out, c_in, c_noise = map(np.asarray, obj.preconditioning(sigma))
        sd2 = 0.62**2
        np.testing.assert_allclose(c_in**2 * (sd2 + sigma**2), 1, rtol=1e-14)
        target_var = ((1 - c_skip) ** 2 * sd2 + c_skip**2 * sigma**2) / c_out**2
        np.testing.assert_allclose(target_var, 1, rtol=1e-13)
        np.testing.assert_allclose(np.asarray(obj.weight(sigma)) * c_out**2, 1, rtol=1e-14)
        np.testing.assert_allclose(c_noise, np.log(sigma) / 4, rtol=1e-15)
        # c_skip minimises the target's variance (eq. 138): no other skip weight does better.
        rng = np.random.default_rng(0)
        y = rng.uniform(-1, 1, 200_000) * 0.62 * np.sqrt(3)  # std 0.62, not Gaussian
        n = rng.standard_normal(y.shape)
        for i in (0, 4, 8):
            x = y + sigma[i] * n
            assert abs(np.var(c_in[i] * x) - 1) < 0.01
            assert abs(np.var((y - c_skip[i] * x) / c_out[i]) - 1) < 0.01


def _exact_net(obj, s):
    """The network that outputs ``obj``'s target at its minimum for data ``N(0, s^2 I)``: the
    posterior means ``E[x0 | x_t] = a s^2 x_t / (a^2 s^2 + sig^2)``, ``E[eps | x_t] = sig x_t /
    (a^2 s^2 + sig^2)``, written in the objective's own input and output."""

    def means(x_t, a, sig):
        den = a**2 * s**2 + sig**2
        return a * s**2 * x_t / den, sig * x_t / den

    def column(c, x):  # a scalar or (B,) c as (B, 1)
        return jnp.broadcast_to(c, x.shape[:1])[:, None]

    if isinstance(obj, DDPM):

        def net(x, c):
            c = column(c, x)
            a, sig = obj.path.alpha(c), obj.path.sigma(c)
            x0, eps = means(x, a, sig)
            return {"eps": eps, "x0": x0, "v": a * eps - sig * x0}[obj.prediction]

    elif isinstance(obj, EDM):

        def net(x_in, c):
            sigma = jnp.exp(4 * column(c, x_in))
            c_skip, c_out, c_in, _ = obj.preconditioning(sigma)
            x_t = x_in / c_in
            return (means(x_t, 1.0, sigma)[0] - c_skip * x_t) / c_out

    else:

        def net(x, c):
            t = column(c, x) / obj.time_scale
            x0, eps = means(x, 1 - t, t)
            return eps - x0

    return net


@pytest.mark.parametrize(
    "obj",
    [DDPM(SCHEDULE, "eps"), DDPM(SCHEDULE, "x0"), DDPM(SCHEDULE, "v"), EDM(), Flow()],
    ids=["ddpm-eps", "ddpm-x0", "ddpm-v", "edm", "flow"],
)
def test_denoise_with_the_exact_network_is_exact(obj):
    s = 0.8
    with jax.enable_x64(True):
        path = obj.path
        lo, hi = path.t_min, path.t_max
        t = np.linspace(lo, hi, 7)[1:-1]
        t = np.round(t) if obj.discrete else t
        x_t = np.asarray(jax.random.normal(jax.random.key(10), (5, 3), jnp.float64)) * 2
        a = np.asarray(path.alpha(jnp.asarray(t)))[:, None]
        sig = np.asarray(path.sigma(jnp.asarray(t)))[:, None]
        den = a**2 * s**2 + sig**2
        x0, eps = obj.denoise(_exact_net(obj, s), jnp.asarray(x_t), jnp.asarray(t))
        rtol = 1e-5 if obj.discrete else 1e-12  # the schedule's tables are float32
        np.testing.assert_allclose(x0, a * s**2 * x_t / den, rtol=rtol)
        np.testing.assert_allclose(eps, sig * x_t / den, rtol=rtol)
        # A scalar t gives the same as that t for every example.
        x0_1, _ = obj.denoise(_exact_net(obj, s), jnp.asarray(x_t), jnp.asarray(t[2]))
        np.testing.assert_allclose(x0_1, a[2] * s**2 * x_t / den[2], rtol=rtol)


def test_flow_denoise_matches_the_paths_velocity_conversion():
    with jax.enable_x64(True):
        obj = Flow()
        x_t = jax.random.normal(jax.random.key(11), (4, 3), jnp.float64)
        t = jnp.asarray([0.1, 0.4, 0.7, 0.95])
        net = lambda x, c: jnp.sin(x) + 1e-3 * c[:, None]
        x0, eps = obj.denoise(net, x_t, t)
        want = jax.vmap(
            lambda o, x, ti: paths.to_x0_eps(paths.RectifiedFlow(), "velocity", o, x, ti)
        )(net(x_t, 1000 * t), x_t, t)
        np.testing.assert_allclose(x0, want[0], rtol=1e-12)
        np.testing.assert_allclose(eps, want[1], rtol=1e-12)


@pytest.fixture(scope="module")
def toy_model():
    model = SinusoidalMLP(2, hidden=16, depth=1, time_dim=8, rngs=nnx.Rngs(0))
    return split_model(model)[1:]


@pytest.mark.parametrize("name", objectives.OBJECTIVES)
def test_training_lowers_each_loss(name, toy_model):
    """60 Adam steps on two Gaussian blobs lower the loss on a fixed batch and key."""
    params, apply = toy_model
    obj = make_objective(name, SCHEDULE, sigma_data=0.6)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((512, 2)) * 0.1 + rng.choice([-0.5, 0.5], (512, 1))).astype("f4")
    trainer = Trainer(
        apply, SCHEDULE, TrainConfig(learning_rate=3e-3, steps_per_call=60, unroll=1),
        loss=train_loss(obj, apply),
    )  # fmt: skip
    state = trainer.init_state(params, 1)
    evaluate = jax.jit(lambda p: obj.loss(apply, p, x, None, jax.random.key(12), None)[0])
    before = float(evaluate(state.params))
    data = trainer.put_data({"x": x})
    state, metrics = trainer.steps_on_data(state, data, 64)  # one compiled call of 60 steps
    after = float(evaluate(state.params))
    assert np.isfinite(metrics["loss"]).all()
    assert after < 0.8 * before, (before, after)


def test_constructors_validate():
    assert typing.get_args(objectives.ObjectiveName) == objectives.OBJECTIVES
    with pytest.raises(ValueError, match="prediction"):
        DDPM(SCHEDULE, "velocity")
    with pytest.raises(ValueError, match="weighting"):
        DDPM(SCHEDULE, weighting="snr")
    with pytest.raises(ValueError, match="sigma_data"):
        EDM(sigma_data=0.0)
    with pytest.raises(ValueError, match="sigma_min must be below"):
        EDM(sigma_min=10.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="time_sampling"):
        Flow("lognormal")
    with pytest.raises(ValueError, match="schedule="):
        make_objective("ddpm")
    with pytest.raises(ValueError, match="choose one of ddpm, edm"):
        make_objective("score")
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(B,\)"):
        Flow().denoise(lambda x, c: x, jnp.zeros((3, 2)), jnp.zeros(4))


TOY2D_TINY = [
    "--num-points", "256", "--batch-size", "32", "--train-steps", "10", "--hidden", "16",
    "--steps-per-call", "10", "--checkpoint-every", "10", "--no-progress",
]  # fmt: skip


def test_toy2d_objective_flag_end_to_end(tmp_path):
    """``--objective edm --num-samples 0`` trains (config.json records the objective and the
    measured sigma_data), resumes with the same flags, and refuses another objective, also for a
    run whose config.json predates the flag (it was trained with ddpm)."""
    from experiments import toy2d
    from experiments._cli import parse_config

    def run(*flags):
        return toy2d.main(parse_config(toy2d.Toy2dConfig, [*TOY2D_TINY, *flags]))

    out = tmp_path / "edm"
    flags = ["--objective", "edm", "--num-samples", "0", "--out", str(out)]
    metrics = run(*flags)
    config = json.loads((out / "config.json").read_text())
    std = np.std(jdata.make_points("moons", 256, seed=0), dtype=np.float64)
    assert config["objective"] == "edm" and config["sigma_data"] == round(float(std), 4)
    assert parse_config(toy2d.Toy2dConfig, []).objective == "ddpm"  # the default stays ddpm
    assert metrics["objective"] == "edm" and np.isfinite(metrics["final_loss_mean_last_epoch"])
    assert not (out / "samples.npy").exists() and (out / "report.md").is_file()
    run(*flags, "--resume", "--train-steps", "20")
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 21))

    with pytest.raises(ValueError, match="objective: 'edm' -> 'flow'"):
        run("--objective", "flow", "--num-samples", "0", "--out", str(out), "--resume")
    for key in ("objective", "sigma_data"):  # a run written before the flag: trained with ddpm
        del config[key]
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="objective: 'ddpm' -> 'edm'"):
        run(*flags, "--resume")
    with pytest.raises(ValueError, match="--objective flow cannot be sampled yet"):
        toy2d.Toy2dConfig(objective="flow")
    with pytest.raises(ValueError, match="--sigma-data applies to --objective edm only"):
        toy2d.Toy2dConfig(sigma_data=0.5)
    with pytest.raises(ValueError, match="--sampler flow-euler steps in a flow's own time"):
        toy2d.Toy2dConfig(sampler="flow-euler")


def test_mnist_and_digits_objective_flags():
    """The flags' checks and defaults in the other two experiments (their runs share the
    toy2d code path above: experiments/_objective.py)."""
    from experiments._objective import data_std
    from experiments.digits.config import DigitsConfig
    from experiments.mnist.config import MnistConfig, resolve

    for cls in (MnistConfig, DigitsConfig):
        assert cls().objective == "ddpm"
        with pytest.raises(ValueError, match="--objective edm cannot be sampled yet"):
            cls(objective="edm")
        with pytest.raises(ValueError, match="--sigma-data applies to --objective edm only"):
            cls(objective="flow", num_samples=0, sigma_data=0.5)
        for sampler in ("flow-euler", "flow-heun"):  # refused before any training
            with pytest.raises(ValueError, match=f"--sampler {sampler} steps in a flow's own"):
                cls(sampler=sampler)
    x = np.random.default_rng(1).standard_normal((1000, 4, 4, 1)).astype(np.float32) * 0.6 - 0.7
    assert data_std(x, chunk=300) == pytest.approx(np.std(x, dtype=np.float64), rel=1e-12)
    config, _ = resolve(MnistConfig(objective="flow", num_samples=0), backend="cpu")
    assert config.sample_every == 0  # no progress grids without samples
    with pytest.raises(ValueError, match="--sample-every draws progress grids"):
        MnistConfig(objective="flow", num_samples=0, sample_every=100)
    with pytest.raises(ValueError, match="--prediction applies to --objective ddpm only"):
        MnistConfig(objective="edm", num_samples=0, prediction="v")
