"""The PyTorch ports of ``benchmarks/pytorch/torch_recipes.py`` are faithful to jaxdiff (issue #8).

The PyTorch-vs-jaxdiff benchmark (``benchmarks/pytorch/bench_vs_torch.py``) is only meaningful
if both sides run the same network and the same recipe. These tests check that: equal parameter
counts (abstract jaxdiff models, no compilation), equal forward passes after copying jaxdiff's
parameters into the port (:func:`load_jax_params`: HWIO -> OIHW conv kernels, transposed Linear
kernels, GroupNorm scale, attention layout), the recipes' hyper-parameters, schedules and data
equal to the experiments', and the DDPM step equal to :func:`jaxdiff.reverse.ddpm_step`.

Skipped when PyTorch is not installed: it is the optional ``bench`` extra
(``pip install -e ".[bench]"``), never a runtime dependency.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdiff.models import (
    PRESETS,
    ConditionalMLP,
    UNet,
    count_params,
    improved_denoiser_8x8,
    split_model,
    unet_compact,
    unet_mnist,
    unet_mnist_small,
)

torch = pytest.importorskip(
    "torch",
    reason="PyTorch is not installed; the PyTorch ports of benchmarks/pytorch/torch_recipes.py are "
    "checked only with the optional extra: pip install -e '.[bench]'",
)

ROOT = Path(__file__).resolve().parents[1]


def _load_ports():
    path = ROOT / "benchmarks" / "pytorch" / "torch_recipes.py"
    spec = importlib.util.spec_from_file_location("torch_recipes", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


tr = _load_ports()


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """PyTorch's spinning OpenMP threads crawl on a shared CPU; these checks need none."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rngs() -> nnx.Rngs:
    # An "rbg" key: abstract models never run the initialisers, and it traces fast.
    return nnx.Rngs(jax.random.key(0, impl="rbg"))


def abstract_params(build):
    """``split_model`` of ``build(rngs)`` with shape-only parameters (nothing is compiled)."""
    return split_model(nnx.eval_shape(lambda: build(rngs())))


def compact(num_classes=None):
    return lambda r: unet_compact(1, 28, num_classes, rngs=r)


# The jaxdiff models the ports mirror; built (abstractly) once per session.
JAX_MODELS = {
    "conditional_mlp": lambda r: ConditionalMLP(2, 100, 128, rngs=r),
    "unet_compact": compact(),
    "unet_compact_conditional": compact(10),
    "improved_denoiser_8x8": lambda r: improved_denoiser_8x8(rngs=r),
    "unet_mnist_small": lambda r: unet_mnist_small(rngs=r),
    "unet_mnist": lambda r: unet_mnist(rngs=r),
}


@functools.cache
def jax_model(name: str):
    return abstract_params(JAX_MODELS[name])


def random_params(params, seed: int = 0):
    """Random values for every parameter (the zero-init output conv would hide most of a
    U-Net), scaled 1/sqrt(fan-in) for kernels and tables so activations stay O(1)."""
    rng = np.random.default_rng(seed)

    def draw(leaf):
        shape = tuple(leaf.shape)
        scale = 1.0 / math.sqrt(math.prod(shape[:-1])) if len(shape) > 1 else 0.5
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    return jax.tree.map(draw, params)


def flat_params(params) -> dict[str, np.ndarray]:
    """``{"down.0.blocks.0.conv1.kernel": array, ...}`` from an ``nnx.State``."""
    leaves = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(params))[0]
    return {".".join(str(k.key) for k in path): np.asarray(v) for path, v in leaves}


# --------------------------------------------------------------------------------------------
# Parameter counts


TORCH_MODELS = {
    "conditional_mlp": lambda: tr.ConditionalMLP(2, 100, 128),
    "unet_compact": lambda: tr.unet_compact(),
    "unet_compact_conditional": lambda: tr.unet_compact(num_classes=10),
    "improved_denoiser_8x8": lambda: tr.improved_denoiser_8x8(),
    "unet_mnist_small": lambda: tr.UNet(1, 28, 32, (1, 2, 2), 1, (7,), norm_groups=8),
    "unet_mnist": lambda: tr.unet_mnist(),
}


@pytest.mark.parametrize("name", sorted(JAX_MODELS))
def test_parameter_counts_equal(name):
    _, params, _ = jax_model(name)
    model = TORCH_MODELS[name]()
    assert tr.count_params(model) == count_params(params), name
    # Tensor by tensor too: load_jax_params maps every parameter exactly once.
    tr.load_jax_params(model, flat_params(random_params(params)))


def test_recipe_models_are_the_experiments_models():
    from experiments import digits, mnist

    assert PRESETS[digits.MODELS[digits.DigitsConfig().model]] is improved_denoiser_8x8
    assert PRESETS[mnist.MODELS[mnist.PRESETS["cpu"].defaults["model"]]] is unet_compact
    assert PRESETS[mnist.MODELS[mnist.PRESETS["gpu"].defaults["model"]]] is unet_mnist
    names = {
        "moons": "conditional_mlp",
        "digits": "improved_denoiser_8x8",
        "mnist": "unet_compact",
        "mnist_full": "unet_mnist",
    }
    counts = {recipe: count_params(jax_model(name)[1]) for recipe, name in names.items()}
    assert counts == {
        "moons": 72_066, "digits": 9_202_305, "mnist": 280_177, "mnist_full": 6_469_889
    }  # fmt: skip
    for name, recipe in tr.RECIPES.items():
        assert tr.count_params(tr.build_model(recipe)) == counts[name], name


# --------------------------------------------------------------------------------------------
# Forward passes with jaxdiff's parameters copied in


def assert_same_forward(build_jax, build_torch, x_nhwc, t, labels=None, atol=1e-4):
    """``build_jax``: a name of :data:`JAX_MODELS` or a builder ``rngs -> module``."""
    _, params, apply = (
        jax_model(build_jax) if isinstance(build_jax, str) else abstract_params(build_jax)
    )
    params = random_params(params)
    model = build_torch()
    tr.load_jax_params(model, flat_params(params))
    model.eval()
    y_jax = np.asarray(jax.jit(apply)(params, jnp.asarray(x_nhwc), jnp.asarray(t), labels))
    x = torch.from_numpy(x_nhwc)
    if x.ndim == 4:
        x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
    with torch.no_grad():
        y = model(
            x, torch.from_numpy(np.asarray(t)).long(),
            None if labels is None else torch.from_numpy(np.asarray(labels)).long(),
        )  # fmt: skip
    if y.ndim == 4:
        y = y.permute(0, 2, 3, 1)
    y_torch = y.numpy()
    assert np.abs(y_jax).max() > 0.1  # a non-trivial output
    np.testing.assert_allclose(y_torch, y_jax, rtol=1e-4, atol=atol)


def test_conditional_mlp_forward_matches():
    x = np.random.default_rng(1).standard_normal((6, 2)).astype(np.float32)
    t = np.array([0, 1, 17, 50, 98, 99], np.int32)
    assert_same_forward("conditional_mlp", TORCH_MODELS["conditional_mlp"], x, t)


@pytest.mark.slow  # one XLA compile of the U-Net (~7 s on a 2-core CPU)
def test_mnist_unet_compact_forward_matches():
    """The benchmarked MNIST U-Net: attention at 7x7 and in the middle, 28 -> 14 -> 7."""
    x = np.random.default_rng(1).standard_normal((2, 28, 28, 1)).astype(np.float32)
    assert_same_forward("unet_compact", tr.unet_compact, x, np.array([3, 700], np.int32))


def test_unet_odd_sizes_heads_labels_forward_matches():
    """7 -> 4 and back 4 -> 7 (nearest resize at pixel centres), 2 attention heads at 4x4 and
    in the middle, a label embedding with the null label."""
    cfg = dict(
        base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
        num_classes=10, norm_groups=4, num_heads=2,
    )  # fmt: skip
    x = np.random.default_rng(2).standard_normal((2, 7, 7, 1)).astype(np.float32)
    assert_same_forward(
        lambda r: UNet(1, 7, **cfg, rngs=r),
        lambda: tr.UNet(1, 7, **cfg),
        x,
        np.array([0, 999], np.int32),
        labels=np.array([3, 10], np.int32),
    )


def test_unet_two_res_blocks_dropout_forward_matches():
    """``unet_mnist``'s structure (two residual blocks per level, three up, dropout 0.1 off in
    evaluation), smaller: base 8, 4 groups."""
    cfg = dict(
        base_channels=8, channel_mults=(1, 2), num_res_blocks=2, attention_resolutions=(4,),
        norm_groups=4, dropout=0.1,
    )  # fmt: skip
    x = np.random.default_rng(4).standard_normal((2, 7, 7, 1)).astype(np.float32)
    assert_same_forward(
        lambda r: UNet(1, 7, **cfg, rngs=r),
        lambda: tr.UNet(1, 7, **cfg),
        x,
        np.array([1, 600], np.int32),
    )


def test_unet_without_downsampling_forward_matches():
    """The digits recipe's structure (every level at 8x8, channel changes, skips), smaller."""
    cfg = dict(
        base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(),
        norm_groups=4, downsample=False,
    )  # fmt: skip
    x = np.random.default_rng(3).standard_normal((2, 8, 8, 1)).astype(np.float32)
    assert_same_forward(
        lambda r: UNet(1, 8, **cfg, rngs=r),
        lambda: tr.UNet(1, 8, **cfg),
        x,
        np.array([5, 500], np.int32),
    )


# --------------------------------------------------------------------------------------------
# Recipes, schedules, data, EMA and the DDPM step


def test_recipes_match_the_experiments_configs():
    from experiments import digits, mnist, toy2d
    from jaxdiff.train import TrainConfig

    moons = toy2d.resolve(toy2d.Toy2dConfig())
    dig = digits.DigitsConfig()
    mn, _ = mnist.resolve(mnist.MnistConfig(preset="cpu"))
    full, _ = mnist.resolve(mnist.MnistConfig(preset="gpu"))
    for recipe, cfg, warmup in (
        (tr.RECIPES["moons"], moons, 0),
        (tr.RECIPES["digits"], dig, 0),
        (tr.RECIPES["mnist"], mn, mn.warmup_steps),
        (tr.RECIPES["mnist_full"], full, full.warmup_steps),
    ):
        assert recipe.batch_size == cfg.batch_size
        assert recipe.ema_decay == cfg.ema_decay
        assert recipe.num_steps == cfg.num_timesteps
        assert recipe.warmup_steps == warmup
        assert recipe.grad_clip == getattr(cfg, "grad_clip", TrainConfig().grad_clip_norm)
        if recipe.name == "mnist":
            # The tutorial recipe the CPU preset started from (bench_vs_torch.py says so): the
            # preset moved on to the cosine schedule and a higher learning rate, which cost the
            # same per step.
            assert (recipe.schedule, recipe.learning_rate) == ("linear", 1e-3)
            assert (cfg.schedule, cfg.learning_rate) == ("cosine", 2e-3)
            continue
        assert recipe.learning_rate == cfg.learning_rate
        assert recipe.schedule == cfg.schedule
    assert tr.RECIPES["moons"].antithetic == moons.antithetic
    assert tr.RECIPES["digits"].optimizer == "adamw"
    assert tr.RECIPES["digits"].weight_decay == dig.weight_decay
    assert (tr.RECIPES["moons"].beta_start, tr.RECIPES["moons"].beta_end) == (
        moons.beta_start,
        moons.beta_end,
    )
    assert moons.hidden == 128 and moons.dataset == "moons" and moons.num_points == 10_000
    assert dig.model == "improved" and mn.model == "compact" and full.model == "full"
    # torch.optim.Adam(W)'s defaults are jaxdiff's.
    defaults = TrainConfig()
    assert (defaults.b1, defaults.b2, defaults.adam_eps) == (0.9, 0.999, 1e-8)
    assert defaults.ema_warmup


def test_schedules_and_data_match_jaxdiff():
    from experiments import toy2d
    from jaxdiff import data as jdata
    from jaxdiff.schedules import make_schedule

    moons_schedule = toy2d.build_schedule(toy2d.resolve(toy2d.Toy2dConfig()))
    for recipe, ref in (
        (tr.RECIPES["moons"], moons_schedule),
        (tr.RECIPES["mnist"], make_schedule("linear", 1000)),
    ):
        betas = tr.make_betas(recipe.schedule, recipe.num_steps, recipe.beta_start, recipe.beta_end)
        s = tr.TorchSchedule(betas)
        np.testing.assert_array_equal(s.betas.numpy(), np.asarray(ref.betas))
        for name in ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
                     "posterior_log_variance_clipped", "posterior_mean_coef1"):  # fmt: skip
            np.testing.assert_array_equal(getattr(s, name).numpy(), np.asarray(getattr(ref, name)))
    np.testing.assert_array_equal(tr.moons_points(), jdata.make_points("moons", 10_000, seed=0))
    np.testing.assert_array_equal(tr.digits_images(), jdata.load_digits(scale="unit")[0])


def test_ema_matches_jaxdiff_decay_with_warmup():
    from jaxdiff.train import ema_decay_at

    model = torch.nn.Linear(1, 1, bias=False)
    ema = tr.EMA(model, 0.995)
    for step in (0, 1, 5, 300):
        with torch.no_grad():
            model.weight.fill_(float(step + 1))
        before = ema.shadow["weight"].clone()
        ema.update(model, step)
        d = float(ema_decay_at(step, 0.995))
        expected = d * before + (1 - d) * (step + 1)
        torch.testing.assert_close(ema.shadow["weight"], expected)


def test_ddpm_step_and_respacing_match_jaxdiff():
    from jaxdiff.reverse import ddpm_step
    from jaxdiff.samplers import respaced_schedule, sampling_timesteps
    from jaxdiff.schedules import make_schedule

    schedule = make_schedule("linear", 1000)
    betas = tr.make_betas("linear", 1000)
    for steps in (10, 1000):
        ts = tr.trailing_timesteps(1000, steps)
        np.testing.assert_array_equal(ts, sampling_timesteps(schedule, steps, "trailing"))
        ref = respaced_schedule(schedule, ts)
        s = tr.TorchSchedule(tr.respaced_betas(betas, ts))
        np.testing.assert_allclose(s.betas.numpy(), np.asarray(ref.betas), rtol=1e-6)
        rng = np.random.default_rng(steps)
        x, eps, z = (rng.standard_normal((3, 4, 4, 1)).astype(np.float32) for _ in range(3))
        for index in (0, 1, steps // 2, steps - 1):
            for clip in (1.0, None):
                want = ddpm_step(ref, eps, x, index, z, "posterior", clip_x0=clip)
                got = tr.ddpm_step(s, *(torch.from_numpy(a) for a in (eps, x)), index,
                                   torch.from_numpy(z), clip)  # fmt: skip
                np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_torch_training_loops_and_sampler_run():
    moons = tr.TorchTrainer(tr.RECIPES["moons"], tr.moons_points(512), seed=0)
    loss = moons.train(5)
    assert math.isfinite(float(loss)) and moons.step_count == 5
    assert moons.data.shape == (512, 2)

    recipe = dataclasses.replace(tr.RECIPES["mnist"], batch_size=4)
    mnist = tr.TorchTrainer(recipe, tr.random_images(16), seed=0)
    assert mnist.data.shape == (16, 1, 28, 28)  # NCHW
    mnist.train(2)
    # Step n used jaxdiff's warm-up lr * min(1, (n + 1) / 100); the next step uses n = 2.
    assert mnist.opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 3 / 100)

    digits = tr.TorchTrainer(tr.RECIPES["digits"], tr.digits_images()[:8], batch_size=2)
    assert isinstance(digits.opt, torch.optim.AdamW)
    assert digits.opt.param_groups[0]["weight_decay"] == 0.01
    assert digits.data.shape == (8, 1, 8, 8) and digits.lr_schedule is None

    betas = tr.make_betas("linear", 1000)
    out = tr.ddpm_sample(mnist.model, betas, (2, 1, 28, 28), steps=3)
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all()
