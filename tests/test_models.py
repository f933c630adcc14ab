"""Denoiser models: shapes, documented parameter counts, conditioning, jit/eager, errors.

Kept fast for a 2-core CI runner, where nearly all the cost is XLA compilation:

* shape and parameter-count tests build *abstract* models with ``nnx.eval_shape`` and trace
  them with ``jax.eval_shape`` (no compilation, no parameter memory; presets included);
* numerical tests use one tiny model per kind (base 8 channels, batch 2) built once, one
  jitted function per input signature, and parameters perturbed in NumPy so predictions
  are not the zero-init output;
* every key is an ``"rbg"`` key: on XLA:CPU each distinct shape of a default (threefry)
  random draw -- every parameter initialiser, every dropout mask -- compiles for seconds to
  tens of seconds, an RngBitGenerator draw in well under a second. The models take any
  ``nnx.Rngs`` / dropout key, so this changes only the random numbers, not the code path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdiff import models
from jaxdiff.models import (
    ConditionalMLP,
    SinusoidalMLP,
    SmallCNN,
    UNet,
    count_params,
    improved_denoiser_8x8,
    split_model,
    unet_level_sizes,
    unet_mnist_small,
)

B = 2  # batch size of every test


def key(seed: int) -> jax.Array:
    """A PRNG key that compiles fast on CPU (see the module docstring)."""
    return jax.random.key(seed, impl="rbg")


def rngs(seed: int = 0) -> nnx.Rngs:
    return nnx.Rngs(key(seed))


def abstract(build):
    """``nnx.eval_shape`` of ``build(rngs)``: the module with shape-only parameters."""
    return nnx.eval_shape(lambda: build(rngs(0)))


def traced_shape(model, x_shape, labels=None):
    """Output shape of ``split_model(model)``'s ``apply`` traced on ``x_shape`` (no compile)."""
    _, params, apply = split_model(model)
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    t = jax.ShapeDtypeStruct((x_shape[0],), jnp.int32)
    return jax.eval_shape(apply, params, x, t, labels).shape


def perturbed(params, seed=0, scale=0.2):
    """``params`` plus N(0, scale^2) noise, computed in NumPy (no XLA compilation)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: jnp.asarray(np.asarray(p) + scale * rng.standard_normal(p.shape), p.dtype),
        params,
    )


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# --------------------------------------------------------------------------------------
# Shapes (abstract: traced, never compiled)
# --------------------------------------------------------------------------------------


def test_unet_level_sizes_round_up_odd_sides():
    assert unet_level_sizes(28, 4) == [(28, 28), (14, 14), (7, 7), (4, 4)]
    assert unet_level_sizes(32, 4) == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert unet_level_sizes((7, 10), 2) == [(7, 10), (4, 5)]
    assert unet_level_sizes(8, 3, downsample=False) == [(8, 8)] * 3


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_point_mlp_output_shapes(dim):
    cmlp = abstract(lambda r: ConditionalMLP(dim, num_steps=100, rngs=r))
    assert traced_shape(cmlp, (B, dim)) == (B, dim)
    smlp = abstract(lambda r: SinusoidalMLP(dim, num_classes=10, rngs=r))
    assert traced_shape(smlp, (B, dim)) == (B, dim)
    assert traced_shape(smlp, (B, dim), labels=jnp.array([0, 10])) == (B, dim)


# Per input size, a U-Net with as many down-sampling levels as the size allows: 8 -> 4 -> 2,
# 28 -> 14 -> 7 -> 4 (odd sizes: 7 -> 4 down, 4 -> 7 up, nothing cropped), 32 -> ... -> 4.
UNET_SHAPE_CONFIGS = {
    8: dict(channel_mults=(1, 2, 2), attention_resolutions=(4,)),
    28: dict(channel_mults=(1, 2, 2, 2), attention_resolutions=(7,)),
    32: dict(channel_mults=(1, 2, 2, 2), attention_resolutions=(8, 4)),
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 28, 32])
def test_image_model_output_shapes(size, channels):
    """SmallCNN (both time features), and a U-Net: unconditional for C=1, conditional for C=3."""
    shape = (B, size, size, channels)
    cnn = abstract(lambda r: SmallCNN(channels, hidden=8, rngs=r))
    assert traced_shape(cnn, shape) == shape
    cnn_tutorial = abstract(
        lambda r: SmallCNN(channels, hidden=8, num_steps=1000, activation="relu", rngs=r)
    )
    assert traced_shape(cnn_tutorial, shape) == shape
    num_classes = 10 if channels == 3 else None
    unet = abstract(
        lambda r: UNet(
            channels,
            size,
            base_channels=8,
            num_res_blocks=1,
            norm_groups=4,
            num_classes=num_classes,
            rngs=r,
            **UNET_SHAPE_CONFIGS[size],
        )
    )
    labels = jnp.array([0, 10]) if num_classes else None
    assert traced_shape(unet, shape, labels=labels) == shape


# --------------------------------------------------------------------------------------
# Presets and documented parameter counts (abstract: no initialisation)
# --------------------------------------------------------------------------------------

SMALL_PARAM_COUNTS = [
    # (id, builder, count, object whose docstring documents it)
    ("ConditionalMLP(2, num_steps=100)", lambda r: ConditionalMLP(2, 100, rngs=r), 72_066),
    ("ConditionalMLP(1, num_steps=100)", lambda r: ConditionalMLP(1, 100, rngs=r), 71_809),
    ("ConditionalMLP(3, num_steps=100)", lambda r: ConditionalMLP(3, 100, rngs=r), 72_323),
    ("SinusoidalMLP(2)", lambda r: SinusoidalMLP(2, rngs=r), 108_034),
    ("SinusoidalMLP(1)", lambda r: SinusoidalMLP(1, rngs=r), 107_777),
    ("SinusoidalMLP(3)", lambda r: SinusoidalMLP(3, rngs=r), 108_291),
    ("SmallCNN()", lambda r: SmallCNN(rngs=r), 46_465),
    ("SmallCNN(num_steps=1000)", lambda r: SmallCNN(num_steps=1000, rngs=r), 42_433),
    ("SmallCNN(channels=3)", lambda r: SmallCNN(3, rngs=r), 48_771),
]


@pytest.mark.parametrize(
    ("build", "expected"),
    [p[1:] for p in SMALL_PARAM_COUNTS],
    ids=[p[0] for p in SMALL_PARAM_COUNTS],
)
def test_documented_parameter_counts(build, expected, record_property):
    model = abstract(build)
    n = count_params(model)
    record_property("num_params", n)  # reported in the JUnit XML (pytest --junitxml)
    assert n == expected
    assert f"{expected:,}" in type(model).__doc__, "docstring parameter count is stale"


def test_conditional_parameter_counts_add_label_table():
    """Documented: ``num_classes=K`` adds a (K + 1)-row label table of the time width."""
    base = count_params(abstract(lambda r: SinusoidalMLP(2, rngs=r)))
    cond = count_params(abstract(lambda r: SinusoidalMLP(2, num_classes=10, rngs=r)))
    assert cond - base == 11 * 128


# Input shape of each library preset (labels: None; the conditional row adds 11 * 4 * base).
PRESET_SHAPES = {name: (B, p.image_size, p.image_size, 1) for name, p in models.PRESETS.items()}


@pytest.mark.parametrize("name", sorted(models.PRESETS))
def test_presets_parameter_counts_and_shapes(name, record_property):
    preset = models.PRESETS[name]
    model = abstract(lambda r: preset(num_steps=1000, rngs=r))
    n = count_params(model)
    record_property("num_params", n)  # reported in the JUnit XML (pytest --junitxml)
    assert f"({n:,} parameters" in preset.description, f"{name}: description count is stale"
    assert traced_shape(model, PRESET_SHAPES[name]) == PRESET_SHAPES[name]


def test_conditional_preset_adds_the_label_embedding():
    model = abstract(lambda r: unet_mnist_small(num_classes=10, rngs=r))
    assert count_params(model) == 1_112_801 + 11 * 128
    labels = jnp.array([3, 10])
    assert traced_shape(model, (B, 28, 28, 1), labels=labels) == (B, 28, 28, 1)
    built = nnx.eval_shape(lambda: models.make_model("unet_tiny", num_classes=10, rngs=nnx.Rngs(0)))
    assert built.num_classes == 10
    with pytest.raises(ValueError, match="unknown model preset 'unet_huge'; choose one of"):
        models.make_model("unet_huge", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="small_cnn feeds the network t / T: pass num_steps=T"):
        models.make_model("small_cnn", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="small_cnn is unconditional"):
        models.make_model("small_cnn", num_classes=10, num_steps=10, rngs=nnx.Rngs(0))


def test_improved_denoiser_8x8_architecture():
    """64 -> 128 -> 256 residual blocks, no down-sampling, attention only in the middle."""
    model = abstract(lambda r: improved_denoiser_8x8(rngs=r))
    assert model.downsample is False
    assert all(level.resample is None for level in [*model.down, *model.up])
    assert [b.conv2.out_features for level in model.down for b in level.blocks] == [64, 128, 256]
    assert model.mid_attn is not None
    assert not any(level.attns for level in [*model.down, *model.up])
    assert model.out_conv.in_features == 64 and model.out_conv.out_features == 1


# --------------------------------------------------------------------------------------
# Numerical tests on a tiny real U-Net
# --------------------------------------------------------------------------------------

# A tiny class-conditional U-Net with every feature on the numerical path: a 7x7 input
# down-sampled once to an odd 4x4 level (so the up path resizes 4 -> 7, like MNIST's
# 7 -> 4 -> 7), middle attention with 2 heads, dropout, 3 classes plus the null label and
# 2 image channels. Channel multipliers (1, 1) keep the number of distinct parameter shapes
# (each an initialiser compilation) small.
TINY_UNET = dict(
    channels=2,
    image_size=7,
    base_channels=8,
    channel_mults=(1, 1),
    num_res_blocks=1,
    attention_resolutions=(),
    dropout=0.1,
    num_classes=3,
    norm_groups=4,
    num_heads=2,
)
K = TINY_UNET["num_classes"]  # the null label


@pytest.fixture(scope="module")
def unet():
    """``(model, graphdef, params at init, apply, jitted apply)`` of the tiny U-Net."""
    model = UNet(**TINY_UNET, rngs=rngs(0))
    graphdef, params, apply = split_model(model)
    return model, graphdef, params, apply, jax.jit(apply)


@pytest.fixture(scope="module")
def unet_perturbed(unet):
    """Perturbed parameters, so predictions are not the zero-init output."""
    return perturbed(unet[2])


@pytest.fixture(scope="module")
def unet_grad(unet):
    """Jitted ``value_and_grad`` of an MSE loss through ``apply`` with dropout on."""
    apply = unet[3]

    def loss(params, x, t, labels, dropout_key):
        eps = apply(params, x, t, labels, dropout_key=dropout_key)
        return jnp.mean((eps - x) ** 2)

    return jax.jit(jax.value_and_grad(loss))


X7 = normal(1, (B, 7, 7, 2))
T7 = jnp.array([3, 40], jnp.int32)


def test_unet_zero_init_output(unet):
    model, _, params, _, apply_jit = unet
    assert not np.any(np.asarray(model.out_conv.kernel[...]))
    assert not np.any(np.asarray(model.out_conv.bias[...]))
    y = apply_jit(params, X7, T7, jnp.array([0, 2]))
    assert y.shape == X7.shape
    np.testing.assert_array_equal(np.asarray(y), 0.0)


def test_unet_deterministic_init_from_seed(unet):
    params = unet[2]
    assert leaves_equal(split_model(UNet(**TINY_UNET, rngs=rngs(0)))[1], params)
    assert not leaves_equal(split_model(UNet(**TINY_UNET, rngs=rngs(1)))[1], params)


def test_unet_jit_matches_eager_and_null_label(unet, unet_perturbed):
    """jit(apply) == the eager module; ``labels=None`` is the null label K."""
    _, graphdef, _, _, apply_jit = unet
    null = jnp.full((B,), K, jnp.int32)  # int32 like every label array: no recompilation
    eager = nnx.merge(graphdef, unet_perturbed)(X7, T7, None)  # eager module call, null path
    assert eager.shape == X7.shape and max_diff(eager, 0.0) > 1e-3  # not the zero-init output
    np.testing.assert_allclose(apply_jit(unet_perturbed, X7, T7, null), eager, rtol=1e-4, atol=1e-5)
    cond = apply_jit(unet_perturbed, X7, T7, jnp.zeros((B,), jnp.int32))
    assert max_diff(cond, eager) > 1e-3  # class 0 differs from the null label


def test_unet_bfloat16_compute_keeps_float32_params_and_tracks_float32(unet, unet_perturbed):
    """``dtype=bfloat16``: same parameters (float32), bf16 convolutions, float32 output.

    The bf16 forward pass of the tiny U-Net must agree with the float32 one to bf16
    accuracy: each layer rounds its inputs to 8 significant bits (relative error up to
    2^-9 ~ 2e-3 per rounding); through ~20 layers the errors add up (measured: RMS error
    1.5e-2 of the output's RMS), so the bound is 4e-2. The error must also exceed 1e-4,
    float32's level, or the model did not compute in bf16. Gradients flow to the float32
    parameters and point the same way as in float32 (cosine > 0.99).
    """
    model16 = UNet(**TINY_UNET, dtype=jnp.bfloat16, rngs=rngs(0))
    _, params16, apply16 = split_model(model16)
    assert leaves_equal(params16, unet[2])  # same init, float32 storage
    assert {p.dtype for p in jax.tree.leaves(params16)} == {jnp.dtype(jnp.float32)}
    labels = jnp.array([0, 2], jnp.int32)
    jaxpr = str(jax.make_jaxpr(apply16)(unet_perturbed, X7, T7, labels))
    assert "conv_general_dilated" in jaxpr and "bf16[2,7,7,8]" in jaxpr  # activations in bf16
    y16 = jax.jit(apply16)(unet_perturbed, X7, T7, labels)
    y32 = unet[4](unet_perturbed, X7, T7, labels)
    assert y16.dtype == jnp.float32 and y16.shape == X7.shape
    rms = float(np.sqrt(np.mean(np.asarray(y32) ** 2)))
    rel = float(np.sqrt(np.mean((np.asarray(y16) - np.asarray(y32)) ** 2))) / rms
    assert rms > 1e-2 and 1e-4 < rel < 4e-2

    def loss(apply):
        return lambda p: jnp.mean((apply(p, X7, T7, labels) - X7) ** 2)

    g16 = jax.jit(jax.grad(loss(apply16)))(unet_perturbed)
    g32 = jax.jit(jax.grad(loss(unet[3])))(unet_perturbed)
    assert {g.dtype for g in jax.tree.leaves(g16)} == {jnp.dtype(jnp.float32)}
    a, b = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]) for g in (g16, g32))
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.99


def test_unet_timesteps_and_labels_change_output(unet, unet_perturbed):
    apply_jit = unet[4]
    x = jnp.broadcast_to(normal(2, (1, 7, 7, 2)), (B, 7, 7, 2))  # the same image twice
    y = apply_jit(unet_perturbed, x, jnp.array([5, 5]), jnp.array([1, 1]))
    np.testing.assert_allclose(y[0], y[1], rtol=1e-5, atol=1e-6)  # same inputs, same output
    y = apply_jit(unet_perturbed, x, jnp.array([5, 500]), jnp.array([1, 1]))
    assert max_diff(y[0], y[1]) > 1e-3
    y = apply_jit(unet_perturbed, x, jnp.array([5, 5]), jnp.array([0, 2]))
    assert max_diff(y[0], y[1]) > 1e-3


def test_unet_out_of_range_label_under_jit_is_nan_not_silent(unet, unet_perturbed):
    apply_jit = unet[4]
    for bad in (K + 1, -1):
        y = np.asarray(apply_jit(unet_perturbed, X7, T7, jnp.array([bad, 0])))
        assert np.all(np.isnan(y[0])) and np.all(np.isfinite(y[1]))


def test_unet_gradients_finite_and_dropout_follows_key(unet_perturbed, unet_grad):
    labels = jnp.array([0, K])  # a class and the null label
    value, grads = unet_grad(unet_perturbed, X7, T7, labels, key(0))
    assert np.isfinite(float(value))
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
    # dropout: the same key reproduces the loss, another key changes it
    assert float(unet_grad(unet_perturbed, X7, T7, labels, key(0))[0]) == float(value)
    assert float(unet_grad(unet_perturbed, X7, T7, labels, key(1))[0]) != float(value)


# --------------------------------------------------------------------------------------
# Numerical tests on tiny point MLPs and the small CNN
# --------------------------------------------------------------------------------------

SMALL_MODELS = {
    "conditional_mlp": (lambda r: ConditionalMLP(2, num_steps=50, hidden=16, rngs=r), (B, 2)),
    "sinusoidal_mlp": (
        lambda r: SinusoidalMLP(3, hidden=16, time_dim=8, num_classes=3, dropout=0.1, rngs=r),
        (B, 3),
    ),
    "small_cnn": (lambda r: SmallCNN(1, hidden=8, rngs=r), (B, 5, 6, 1)),
}


@pytest.mark.parametrize("name", list(SMALL_MODELS))
def test_small_models_init_jit_eager_timesteps_grads(name):
    build, shape = SMALL_MODELS[name]
    model = build(rngs(0))
    _, params, apply = split_model(model)
    # deterministic init from a seed
    assert leaves_equal(split_model(build(rngs(0)))[1], params)
    assert not leaves_equal(split_model(build(rngs(1)))[1], params)
    # output shape; split_model's apply and jit(apply) equal the eager module call
    x = jnp.broadcast_to(normal(3, (1, *shape[1:])), shape)  # the same input twice
    t = jnp.array([2, 30], jnp.int32)
    eager = model(x, t)
    assert eager.shape == shape
    np.testing.assert_allclose(apply(params, x, t), eager, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.jit(apply)(params, x, t), eager, rtol=1e-5, atol=1e-5)
    # different timesteps, otherwise identical inputs: different outputs
    assert max_diff(eager[0], eager[1]) > 1e-5
    # gradients are finite and not all zero
    grads = jax.jit(jax.grad(lambda p: jnp.mean(apply(p, x, t) ** 2)))(params)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


def test_sinusoidal_mlp_labels_and_null_label():
    model = SinusoidalMLP(2, hidden=16, time_dim=8, num_classes=3, rngs=rngs(0))
    _, params, apply = split_model(model)
    apply_jit = jax.jit(apply)
    x = jnp.broadcast_to(normal(4, (1, 2)), (B, 2))
    t = jnp.array([7, 7])
    y = apply_jit(params, x, t, jnp.array([0, 2]))
    assert max_diff(y[0], y[1]) > 1e-5
    null = apply_jit(params, x, t, jnp.array([3, 3]))
    np.testing.assert_allclose(model(x, t), null, rtol=1e-5, atol=1e-6)  # labels=None
    np.testing.assert_allclose(model(x, t, 3), null, rtol=1e-5, atol=1e-6)  # scalar label


def test_conditional_mlp_is_the_tutorial_model():
    """Conditional linear layers, step embeddings U[0, 1), softplus, 3 hidden layers of 128."""
    model = ConditionalMLP(2, num_steps=40, rngs=rngs(0))
    for layer in (model.lin1, model.lin2, model.lin3):
        table = np.asarray(layer.embed.embedding[...])
        assert table.shape == (40, 128)
        assert table.min() >= 0.0 and table.max() < 1.0 and 0.4 < table.mean() < 0.6
    assert model.lin1.lin.kernel.shape == (2, 128) and model.lin4.kernel.shape == (128, 2)
    # every weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch nn.Linear default)
    for lin in (model.lin1.lin, model.lin2.lin, model.lin3.lin, model.lin4):
        bound = 1.0 / np.sqrt(lin.in_features)
        for p in (lin.kernel[...], lin.bias[...]):
            assert np.abs(np.asarray(p)).max() <= bound
    # y = lin4(softplus(cl3(softplus(cl2(softplus(cl1(x, t))))))), cl(h, t) = (h W + b) * e[t]
    x, t = normal(5, (B, 2)), jnp.array([0, 39])

    def cl(layer, h):
        lin = layer.lin
        return (h @ lin.kernel[...] + lin.bias[...]) * layer.embed.embedding[...][t]

    h = jax.nn.softplus(cl(model.lin1, x))
    h = jax.nn.softplus(cl(model.lin2, h))
    h = jax.nn.softplus(cl(model.lin3, h))
    expected = h @ model.lin4.kernel[...] + model.lin4.bias[...]
    np.testing.assert_allclose(model(x, t), expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# Bad input: clear errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(image_size=8, channel_mults=(1, 2, 2, 2)),
         r"image_size=8x8 is too small for 3 down-sampling steps.*8x8 -> 4x4 -> 2x2 -> 1x1"
         r".*works for H, W >= 9"),
        (dict(image_size=3, channel_mults=(1, 2, 2)), r"works for H, W >= 5"),
        (dict(base_channels=12, norm_groups=8),
         r"norm_groups=8 must divide channels=12.*choose norm_groups from \[1, 2, 3, 4, 6, 12\]"),
        (dict(base_channels=16, norm_groups=5), r"norm_groups=5 must divide"),
        (dict(base_channels=8, norm_groups=4, num_heads=3),
         r"num_heads=3 must divide channels=16 .*choose num_heads from"),
        (dict(image_size=28, attention_resolutions=(5,)),
         r"contains 5, which is not the size of any level.*\[28, 14, 7\]"),
        (dict(channel_mults=()), r"channel_mults must be a non-empty"),
        (dict(num_classes=0), r"num_classes must be None or >= 1"),
        (dict(dropout=1.0), r"dropout must lie in \[0, 1\)"),
        (dict(dtype=jnp.int32), r"dtype must be a floating dtype such as jnp.float32"),
    ],
    ids=["too-small-8", "too-small-3", "groups-12-8", "groups-16-5", "heads", "attn-res",
         "no-levels", "num-classes", "dropout", "dtype"],
)  # fmt: skip
def test_unet_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(rngs=nnx.Rngs(0), **kwargs)


def test_unet_call_errors(unet):
    model = unet[0]
    x, t = jnp.zeros((B, 7, 7, 2)), jnp.array([1, 2])
    with pytest.raises(ValueError, match=r"expects a batch of NHWC images .*x\[None\]"):
        model(x[0], t)
    with pytest.raises(ValueError, match=r"built with channels=2 but x has 3 channels"):
        model(jnp.zeros((B, 7, 7, 3)), t)
    with pytest.raises(ValueError, match=r"built for image_size=7x7 .* x is 8x8"):
        model(jnp.zeros((B, 8, 8, 2)), t)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\] .*got values in \[0, 4\]"):
        model(x, t, jnp.array([0, 4]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        model(x, t, jnp.array([-1, 0]))
    with pytest.raises(ValueError, match=r"labels must be a scalar or have shape \(B,\) = \(2,\)"):
        model(x, t, jnp.array([0, 1, 2]))
    with pytest.raises(TypeError, match=r"labels must be integer class indices"):
        model(x, t, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(B,\) = \(2,\)"):
        model(x, jnp.array([1, 2, 3]))
    with pytest.raises(TypeError, match=r"floating-point"):
        model(x.astype(jnp.int32), t)


def test_labels_passed_to_unconditional_models():
    match = r"labels were passed to an unconditional model \(num_classes=None\)"
    unet = abstract(lambda r: UNet(1, 8, base_channels=8, channel_mults=(1, 2), norm_groups=4,
                                   attention_resolutions=(), rngs=r))  # fmt: skip
    with pytest.raises(ValueError, match=match):
        unet(jnp.zeros((B, 8, 8, 1)), jnp.array([1, 2]), jnp.array([0, 1]))
    cnn = abstract(lambda r: SmallCNN(hidden=8, rngs=r))
    with pytest.raises(ValueError, match=match):
        cnn(jnp.zeros((B, 8, 8, 1)), jnp.array([1, 2]), jnp.array([0, 1]))
    mlp = abstract(lambda r: SinusoidalMLP(2, hidden=8, rngs=r))
    with pytest.raises(ValueError, match=match):
        mlp(jnp.zeros((B, 2)), jnp.array([1, 2]), jnp.array([0, 1]))
    cmlp = abstract(lambda r: ConditionalMLP(2, 10, hidden=8, rngs=r))
    with pytest.raises(ValueError, match=match):
        cmlp(jnp.zeros((B, 2)), jnp.array([1, 2]), jnp.array([0, 1]))


def test_point_and_cnn_call_errors():
    cmlp = abstract(lambda r: ConditionalMLP(2, num_steps=10, hidden=8, rngs=r))
    with pytest.raises(ValueError, match=r"built for dim=2 .*shape \(B, 2\); got shape \(2, 3\)"):
        cmlp(jnp.zeros((B, 3)), jnp.array([0, 1]))
    with pytest.raises(ValueError, match=r"built for dim=2"):
        cmlp(jnp.zeros((2,)), jnp.array([0, 1]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, num_steps\) = \[0, 10\)"):
        cmlp(jnp.zeros((B, 2)), jnp.array([0, 10]))
    with pytest.raises(TypeError, match=r"integer timestep indices"):
        cmlp(jnp.zeros((B, 2)), jnp.array([0.5, 1.0]))
    cnn = abstract(lambda r: SmallCNN(1, hidden=8, num_steps=100, rngs=r))
    with pytest.raises(ValueError, match=r"built with channels=1 but x has 3 channels"):
        cnn(jnp.zeros((B, 8, 8, 3)), jnp.array([0, 1]))
    with pytest.raises(ValueError, match=r"expects a batch of NHWC images"):
        cnn(jnp.zeros((B, 8, 8)), jnp.array([0, 1]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, num_steps\) = \[0, 100\)"):
        cnn(jnp.zeros((B, 8, 8, 1)), jnp.array([0, 100]))
    with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'silu'\]"):
        SmallCNN(activation="gelu", rngs=nnx.Rngs(0))
