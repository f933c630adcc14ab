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
from jaxdiff.models.conv import conv_general_dilated, conv_kernel_grad

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


def _reference_kernel_grad(x, g, kernel, strides, padding, dilation):
    """dW[i, j] = sum_{b,p,q} x_pad[b, p*s + i*d, q*s + j*d] g[b, p, q] in float64 NumPy."""
    x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
    if isinstance(padding, str):
        eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
        padding = lax.padtype_to_pads(x.shape[1:3], eff, strides, padding)
    xp = np.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
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
    pads = padding
    if isinstance(padding, str):
        eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
        pads = lax.padtype_to_pads(shape[1:3], eff, strides, padding)
    direct = conv_kernel_grad(x, g, kernel, strides, tuple(map(tuple, pads)), dilation)
    assert direct.shape == w.shape and direct.dtype == jnp.float32
    np.testing.assert_allclose(direct, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


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
    jax.jvp(lambda w: grouped(conv_general_dilated, w), (w,), (w,))  # not a custom_vjp here
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
    """The flag changes nothing but the kernel-gradient arithmetic; False allows jax.jvp.

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

    jvp = lambda gd: jax.jit(lambda x: jax.jvp(lambda xx: fwd(gd)(params, xx), (x,), (x,)))
    jvp(gd_plain)(x)
    with pytest.raises(TypeError, match="custom_vjp"):
        jvp(gd_fast)(x)
