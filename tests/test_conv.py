"""jaxdiff.models.conv: the matmul kernel gradient against XLA's and a float64 reference.

The forward pass and the input gradient are XLA's own ops, so they must match
``lax.conv_general_dilated`` bit for bit. The kernel gradient sums the same products in another
order; float32 summation of n terms errs by ~sqrt(n) * 6e-8 relative to the largest partial
sums, so with n <= 2,000 products per entry here a relative error below 1e-5 (of the largest
entry) is float32 rounding, while any wrong tap, stride or padding gives errors of order 1.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jaxdiff.models import UNet
from jaxdiff.models.conv import conv_general_dilated, conv_kernel_grad, conv_kernel_tangent

NHWC = ("NHWC", "HWIO", "NHWC")

# (input shape, kernel (kh, kw), strides, padding, kernel dilation)
CASES = [
    ((2, 9, 7, 3), (3, 3), (1, 1), "SAME", (1, 1)),  # odd sizes, the U-Net's 3x3
    ((2, 9, 7, 3), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),  # the U-Net's Downsample
    ((2, 8, 8, 4), (1, 1), (1, 1), "SAME", (1, 1)),  # the ResBlock skip
    ((2, 10, 10, 2), (3, 3), (1, 1), "VALID", (2, 2)),  # kernel dilation
    ((1, 9, 9, 2), (5, 3), (2, 1), ((2, 1), (0, 3)), (1, 2)),  # asymmetric everything
]


def _loss(conv, strides, padding, dilation):
    def f(x, w):
        y = conv(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=NHWC)
        return jnp.sum(jnp.sin(y))  # a non-quadratic loss: the cotangent is not y itself

    return f


def _explicit_pads(shape, kernel, strides, padding, dilation):
    """``((lo, hi), (lo, hi))`` for a ``padding`` string or pair list."""
    if isinstance(padding, str):
        eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
        padding = lax.padtype_to_pads(shape[1:3], eff, strides, padding)
    return tuple(tuple(p) for p in padding)


def _reference_kernel_grad(x, g, kernel, strides, padding, dilation):
    """dW[i, j] = sum_{b,p,q} x_pad[b, p*s + i*d, q*s + j*d] g[b, p, q] in float64 NumPy."""
    x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
    padding = _explicit_pads(x.shape, kernel, strides, padding, dilation)
    xp = np.pad(x, ((0, 0), *padding, (0, 0)))
    _, p, q, _ = g.shape
    out = np.zeros((*kernel, x.shape[-1], g.shape[-1]))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            oi, oj = i * dilation[0], j * dilation[1]
            win = xp[:, oi : oi + strides[0] * (p - 1) + 1 : strides[0],
                     oj : oj + strides[1] * (q - 1) + 1 : strides[1]]  # fmt: skip
            out[i, j] = np.einsum("bpqc,bpqo->co", win, g)
    return out


@pytest.mark.parametrize("shape, kernel, strides, padding, dilation", CASES)
def test_matches_xla_and_float64(shape, kernel, strides, padding, dilation):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal((*kernel, shape[-1], 5)) / 3, jnp.float32)
    ours = _loss(conv_general_dilated, strides, padding, dilation)
    xla = _loss(lax.conv_general_dilated, strides, padding, dilation)

    y_ours = conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                  dimension_numbers=NHWC)  # fmt: skip
    y_xla = lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                     dimension_numbers=NHWC)  # fmt: skip
    np.testing.assert_array_equal(y_ours, y_xla)  # the forward pass is XLA's

    (v1, (dx1, dw1)) = jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))(x, w)
    (v2, (dx2, dw2)) = jax.jit(jax.value_and_grad(xla, argnums=(0, 1)))(x, w)
    assert v1 == v2
    np.testing.assert_array_equal(dx1, dx2)  # so is the input gradient
    scale = float(jnp.max(jnp.abs(dw2)))
    np.testing.assert_allclose(dw1, dw2, rtol=0, atol=1e-5 * scale)

    g = jnp.cos(y_xla)  # d sum(sin(y)) / dy
    ref = _reference_kernel_grad(x, g, kernel, strides, padding, dilation)
    np.testing.assert_allclose(dw1, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    pads = _explicit_pads(shape, kernel, strides, padding, dilation)
    direct = conv_kernel_grad(x, g, kernel, strides, pads, dilation)
    assert direct.shape == w.shape and direct.dtype == jnp.float32
    np.testing.assert_allclose(direct, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("shape, kernel, strides, padding, dilation", CASES)
def test_forward_mode_matches_float64(shape, kernel, strides, padding, dilation):
    """``jax.jvp`` in both arguments and in each alone (the rule's symbolic zeros), and the
    per-tap products of :func:`conv_kernel_tangent`, against float64 convolutions. Float32
    products of <= 45 terms: a relative error of 1e-5 of the largest entry is rounding."""
    rng = np.random.default_rng(4)
    x, tx = (rng.standard_normal(shape) for _ in range(2))
    w, tw = (rng.standard_normal((*kernel, shape[-1], 5)) / 3 for _ in range(2))
    conv = lambda f: lambda x, w: f(x, w, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=NHWC)  # fmt: skip
    ours = conv(conv_general_dilated)
    x32, w32, tx32, tw32 = (jnp.asarray(a, jnp.float32) for a in (x, w, tx, tw))
    with jax.enable_x64(True):
        ref = conv(lax.conv_general_dilated)
        expected = {
            "both": jax.jvp(ref, (x, w), (tx, tw))[1],
            "x": jax.jvp(lambda x_: ref(x_, w), (x,), (tx,))[1],
            "w": jax.jvp(lambda w_: ref(x, w_), (w,), (tw,))[1],
        }
    got = {
        "both": jax.jvp(ours, (x32, w32), (tx32, tw32))[1],
        "x": jax.jvp(lambda x_: ours(x_, w32), (x32,), (tx32,))[1],
        "w": jax.jvp(lambda w_: ours(x32, w_), (w32,), (tw32,))[1],
    }
    for k, want in expected.items():
        np.testing.assert_allclose(got[k], want, rtol=0, atol=1e-5 * np.abs(want).max())
    pads = _explicit_pads(shape, kernel, strides, padding, dilation)
    by_taps = conv_kernel_tangent(x32, tw32, strides, pads, dilation)
    np.testing.assert_allclose(by_taps, expected["w"], rtol=0,
                               atol=1e-5 * np.abs(expected["w"]).max())  # fmt: skip


def test_jacfwd_jacrev_and_hessian_match_float64():
    """Forward over reverse (``jax.hessian``) and both Jacobians of a tiny convolution against
    float64 autodiff of ``lax.conv_general_dilated``."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 4, 4, 2))
    w = rng.standard_normal((3, 3, 2, 2)) / 3
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w, (1, 1), "SAME", dimension_numbers=NHWC)))
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    with jax.enable_x64(True):
        ref = loss(lax.conv_general_dilated)
        expected_hess = jax.hessian(ref, (0, 1))(x, w)
        expected_jac = jax.jacrev(jax.grad(ref, 1), 0)(x, w)
    ours = loss(conv_general_dilated)
    hess = jax.jit(jax.hessian(ours, (0, 1)))(f32(x), f32(w))
    jac_fwd = jax.jit(jax.jacfwd(jax.grad(ours, 1), 0))(f32(x), f32(w))
    jac_rev = jax.jit(jax.jacrev(jax.grad(ours, 1), 0))(f32(x), f32(w))
    for got, want in zip(jax.tree.leaves(hess), jax.tree.leaves(expected_hess), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    for got in (jac_fwd, jac_rev):
        np.testing.assert_allclose(got, expected_jac, rtol=0,
                                   atol=1e-5 * np.abs(expected_jac).max())  # fmt: skip


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_accelerators_keep_native_convolutions(platform):
    """Lowered for a GPU or TPU, the gradient and the forward-mode tangent use XLA's own
    convolutions: no matrix products, no conditional (the platform choice is resolved)."""
    x = jax.ShapeDtypeStruct((2, 6, 6, 3), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 3, 4), jnp.float32)
    conv = lambda x, w: conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)
    grad = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))), (0, 1))
    tangent = lambda x, w: jax.jvp(conv, (x, w), (x, w))
    for f, n_conv in ((grad, 3), (tangent, 3)):
        hlo = jax.jit(f).trace(x, w).lower(lowering_platforms=(platform,))
        hlo = hlo.compiler_ir("hlo").as_hlo_text()
        assert hlo.count(" convolution(") == n_conv
        assert " dot(" not in hlo and " conditional(" not in hlo


def test_cpu_backward_uses_matmuls():
    """On CPU the kernel gradient is lowered to dot products, not a batch-contracting conv."""
    x = jnp.ones((2, 6, 6, 3))
    w = jnp.ones((3, 3, 3, 4))

    def count(conv):
        f = jax.grad(lambda w: jnp.sum(conv(x, w, (1, 1), "SAME", dimension_numbers=NHWC)))
        hlo = jax.jit(f).lower(w).as_text()
        return hlo.count("stablehlo.convolution"), hlo.count("stablehlo.dot_general")

    if jax.default_backend() != "cpu":
        pytest.skip("the matmul kernel gradient is the CPU lowering only")
    xla_convs, xla_dots = count(lax.conv_general_dilated)
    _, ours_dots = count(conv_general_dilated)
    assert xla_dots == 0 and xla_convs >= 1
    # the CPU lowering holds the 9 per-tap products
    assert ours_dots >= 9


def test_vmap_and_bfloat16():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((3, 1, 7, 7, 2)), jnp.float32)  # 3 single examples
    w = jnp.asarray(rng.standard_normal((3, 3, 2, 4)) / 3, jnp.float32)

    def per_example(conv):
        loss = lambda w, x: jnp.sum(jnp.sin(conv(x, w, (1, 1), "SAME", dimension_numbers=NHWC)))
        return jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(w, x)

    ours, xla = per_example(conv_general_dilated), per_example(lax.conv_general_dilated)
    assert ours.shape == (3, 3, 3, 2, 4)
    np.testing.assert_allclose(ours, xla, rtol=0, atol=1e-5 * float(jnp.abs(xla).max()))

    xb, wb = x[0].astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    gb = jax.grad(lambda w: jnp.sum(conv_general_dilated(xb, w, (1, 1), "SAME",
                                                         dimension_numbers=NHWC)
                                    .astype(jnp.float32)))(wb)  # fmt: skip
    assert gb.dtype == jnp.bfloat16
    g32 = jax.grad(lambda w: jnp.sum(lax.conv_general_dilated(
        xb.astype(jnp.float32), w, (1, 1), "SAME", dimension_numbers=NHWC)))(w)  # fmt: skip
    np.testing.assert_allclose(np.asarray(gb, np.float32), g32, rtol=2e-2, atol=2e-2)


def test_other_convolutions_fall_back_to_lax():
    """Grouped, negatively padded or non-NHWC convolutions are lax's, forward-mode included."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 6, 6, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 2, 4)), jnp.float32)
    grouped = lambda conv, w: conv(x, w, (1, 1), "SAME", dimension_numbers=NHWC,
                                   feature_group_count=2)  # fmt: skip
    np.testing.assert_array_equal(
        grouped(conv_general_dilated, w), grouped(lax.conv_general_dilated, w)
    )
    jax.jvp(lambda w: grouped(conv_general_dilated, w), (w,), (w,))  # lax.conv_general_dilated
    cropped = lambda conv, w: conv(x, w, (1, 1), ((-1, 1), (0, 0)), dimension_numbers=NHWC)
    np.testing.assert_array_equal(
        cropped(conv_general_dilated, w[:, :, :2].repeat(2, 2)),
        cropped(lax.conv_general_dilated, w[:, :, :2].repeat(2, 2)),
    )
    nchw = jnp.transpose(x, (0, 3, 1, 2))
    k = jnp.transpose(w[:, :, :, :2].repeat(2, 2), (3, 2, 0, 1))
    np.testing.assert_array_equal(
        conv_general_dilated(nchw, k, (1, 1), "SAME"),
        lax.conv_general_dilated(nchw, k, (1, 1), "SAME"),
    )


def test_unet_fast_conv_grad_flag():
    """The flag changes nothing but the derivatives' arithmetic; both allow jax.jvp.

    (rbg keys: XLA:CPU compiles threefry initialisers slowly, see tests/test_models.py.)
    """
    make = lambda fast: UNet(1, 8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                             attention_resolutions=(), norm_groups=4, fast_conv_grad=fast,
                             rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))  # fmt: skip
    gd_fast, params = nnx.split(make(True))
    gd_plain, abstract = nnx.split(nnx.eval_shape(lambda: make(False)))
    # the same parameters: the flag is not one (so checkpoints do not depend on it)
    assert jax.tree.structure(abstract) == jax.tree.structure(params)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 8, 8, 1)), jnp.float32)
    t = jnp.array([3, 700])
    fwd = lambda gd: jax.jit(lambda p, x: nnx.merge(gd, p)(x, t))
    np.testing.assert_array_equal(fwd(gd_fast)(params, x), fwd(gd_plain)(params, x))

    def grads(gd):
        return jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(nnx.merge(gd, p)(x, t) + x))))(params)

    g_fast, g_plain = grads(gd_fast), grads(gd_plain)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_plain), strict=True):
        scale = float(jnp.max(jnp.abs(b))) or 1.0
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * scale)

    # forward mode through both, in the input and the parameters at once
    tangents = jax.tree.map(lambda p: jnp.cos(p + 1.0), params)
    jvp = lambda gd: jax.jit(lambda p, x: jax.jvp(lambda pp, xx: nnx.merge(gd, pp)(xx, t),
                                                  (p, x), (tangents, jnp.sin(x))))  # fmt: skip
    (y_fast, ty_fast), (y_plain, ty_plain) = jvp(gd_fast)(params, x), jvp(gd_plain)(params, x)
    np.testing.assert_array_equal(y_fast, y_plain)  # the zero-initialised output conv: 0
    np.testing.assert_allclose(ty_fast, ty_plain, rtol=0,
                               atol=2e-5 * float(jnp.abs(ty_plain).max()))  # fmt: skip
