"""A drop-in ``lax.conv_general_dilated`` whose weight gradient is fast on XLA:CPU.

Training a conv net on XLA:CPU spends most of its time in the backward pass of the
convolutions, and most of that in the gradient with respect to the kernel: XLA lowers it to a
convolution that contracts over the batch and all positions, which its CPU backend runs at a
fraction of the speed of the forward pass (``benchmarks/bench_conv.py``). The same gradient
is a sum of ordinary matrix products, one per kernel tap (i, j)::

    dW[i, j] = X_ij^T G        X_ij: (B*P*Q, C_in) window of the padded input
                               G:    (B*P*Q, C_out) output cotangent

where ``X_ij[b, p, q] = x_pad[b, p*s + i*d, q*s + j*d]`` (stride s, kernel dilation d).
:func:`conv_general_dilated` computes the forward pass and the input gradient exactly as
``lax.conv_general_dilated`` does and, on CPU, the kernel gradient with these products
(``lax.platform_dependent``: GPUs and TPUs keep XLA's own, which cuDNN and the TPU compiler run
well). Measured on the project's 2-core CPU (``benchmarks/bench_conv.py``, batch 32, 3x3,
forward + both gradients): 9.6 -> 7.0 ms at 28x28x16 and 9.1 -> 6.0 ms at 14x14x32, the same at
7x7x32, but 29 -> 36 ms at 28x28x32, where the strided copies of the input windows cost more
than they save. Whole training steps (``benchmarks/bench_train.py --conv-grad matmul xla``):
the CPU MNIST U-Net (base 16) 308 -> 255 ms and ``unet_mnist_small`` (base 32) 891 -> 653 ms at
batch 32 (``benchmarks/RESULTS.md``). The gradients equal XLA's up to float32 summation order
(relative error ~1e-6, ``tests/test_conv.py``).

It is a ``jax.custom_vjp``: reverse-mode autodiff (``jax.grad``, ``jax.vjp``) works, under
``jit`` and ``vmap``, but forward-mode (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``) does
not; build the models with ``fast_conv_grad=False`` for that. Cases it does not cover (not 2-D,
grouped, input-dilated, other dimension layouts than flax's NHWC/HWIO) go straight to
``lax.conv_general_dilated``.

Use it through :class:`Conv` (``nnx.Conv`` with this convolution and a bias whose gradient is
a matrix product, :func:`jaxdiff.models.sums.channel_sums`), or through
``nnx.Conv(..., conv_general_dilated=conv_general_dilated)``; the U-Net uses :class:`Conv` by
default.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxdiff.models.sums import channel_sums

__all__ = ["Conv", "add_bias", "conv_general_dilated", "conv_kernel_grad"]

_NHWC = ("NHWC", "HWIO", "NHWC")


def _is_nhwc(dimension_numbers, ndim: int) -> bool:
    """Whether ``dimension_numbers`` is NHWC input / HWIO kernel / NHWC output (flax's)."""
    if ndim != 4:
        return False
    if dimension_numbers is None:
        return False
    dn = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), dimension_numbers)
    return dn == lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)


def _conv(x, w, strides, pads, dilation, precision):
    return lax.conv_general_dilated(
        x, w, strides, pads, rhs_dilation=dilation, dimension_numbers=_NHWC, precision=precision
    )


def conv_kernel_grad(
    x: jax.Array,
    g: jax.Array,
    kernel_size: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int] = (1, 1),
    precision=None,
) -> jax.Array:
    """Gradient of an NHWC/HWIO convolution with respect to its kernel, as matmuls.

    Args:
      x: ``(B, H, W, C_in)`` input of the convolution.
      g: ``(B, P, Q, C_out)`` cotangent of its output.
      kernel_size: ``(kh, kw)``.
      strides, pads, dilation: the convolution's window strides, explicit ``((lo, hi),
        (lo, hi))`` padding and kernel (rhs) dilation.
      precision: passed to the matrix products.

    Returns:
      ``(kh, kw, C_in, C_out)`` in ``g``'s dtype: ``dW[i, j] = X_ij^T G`` (module docstring),
      accumulated in float32.
    """
    kh, kw = kernel_size
    b, p, q, c_out = g.shape
    c_in = x.shape[-1]
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    g2 = g.reshape(b * p * q, c_out)
    rows = []
    for i in range(kh):
        taps = []
        for j in range(kw):
            oi, oj = i * dilation[0], j * dilation[1]
            window = lax.slice(
                xp,
                (0, oi, oj, 0),
                (b, oi + strides[0] * (p - 1) + 1, oj + strides[1] * (q - 1) + 1, c_in),
                (1, strides[0], strides[1], 1),
            )  # (B, P, Q, C_in): the input pixels that tap (i, j) multiplies
            taps.append(
                lax.dot_general(
                    window.reshape(b * p * q, c_in),
                    g2,
                    (((0,), (0,)), ((), ())),
                    precision=precision,
                    preferred_element_type=jnp.float32,
                )
            )
        rows.append(jnp.stack(taps))
    return jnp.stack(rows).astype(g.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _fast_conv(x, w, strides, pads, dilation, precision):
    return _conv(x, w, strides, pads, dilation, precision)


def _fast_conv_fwd(x, w, strides, pads, dilation, precision):
    return _conv(x, w, strides, pads, dilation, precision), (x, w)


def _fast_conv_bwd(strides, pads, dilation, precision, residuals, g):
    x, w = residuals
    conv = functools.partial(_conv, strides=strides, pads=pads, dilation=dilation,
                             precision=precision)  # fmt: skip

    def xla_grads(g):  # XLA's transposes of the convolution (conv is bilinear: no forward)
        return jax.vjp(conv, x, w)[1](g)

    def cpu_grads(g):
        (dx,) = jax.vjp(lambda x_: conv(x_, w), x)[1](g)
        dw = conv_kernel_grad(x, g, w.shape[:2], strides, pads, dilation, precision)
        return dx, dw.astype(w.dtype)

    return lax.platform_dependent(g, cpu=cpu_grads, default=xla_grads)


_fast_conv.defvjp(_fast_conv_fwd, _fast_conv_bwd)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
    **kwargs,
) -> jax.Array:
    """``lax.conv_general_dilated`` with a matmul kernel gradient on CPU (module docstring).

    Same signature and result as ``lax.conv_general_dilated``. 2-D convolutions with NHWC
    inputs and HWIO kernels (what ``flax.nnx.Conv`` passes), no input dilation, no feature or
    batch groups, no negative padding, no ``preferred_element_type`` and no extra keyword
    arguments (such as ``out_sharding``) take the fast path; everything else calls
    ``lax.conv_general_dilated`` unchanged. Shapes: ``lhs (B, H, W, C_in)``,
    ``rhs (kh, kw, C_in, C_out)`` -> ``(B, P, Q, C_out)``.
    """
    fast = (
        _is_nhwc(dimension_numbers, jnp.ndim(lhs))
        and jnp.ndim(rhs) == 4
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and all(v is None for v in kwargs.values())
    )
    if fast:
        strides = tuple(int(s) for s in window_strides)
        dilation = tuple(int(d) for d in (rhs_dilation or (1, 1)))
        if isinstance(padding, str):
            effective = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dilation, strict=True)]
            pads = lax.padtype_to_pads(lhs.shape[1:3], effective, strides, padding)
        else:
            pads = padding
        pads = tuple((int(lo), int(hi)) for lo, hi in pads)
        fast = min(min(p) for p in pads) >= 0  # negative padding (cropping): lax's path
    if fast:
        return _fast_conv(lhs, rhs, strides, pads, dilation, precision)
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
        **kwargs,
    )


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """``y (..., C) + bias (C,)``; the bias gradient is a matrix product (:mod:`.sums`)."""
    return y + bias


def _add_bias_fwd(y, bias):
    return y + bias, bias


def _add_bias_bwd(bias, g):
    return g, channel_sums(g).astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class Conv(nnx.Conv):
    """``nnx.Conv`` computing with :func:`conv_general_dilated` and :func:`add_bias`.

    The same constructor, parameters (``kernel``, ``bias``), initialisation and function as
    ``nnx.Conv(..., conv_general_dilated=conv_general_dilated)``; only the gradients are
    computed differently (faster on XLA:CPU, module docstring). Cases other than a 2-D
    channels-last convolution without input dilation, groups or mask (never built by the
    U-Net) call ``nnx.Conv`` unchanged.

    Call: ``x (B, H, W, C_in)`` -> ``(B, P, Q, C_out)``.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("conv_general_dilated", conv_general_dilated)
        super().__init__(*args, **kwargs)

    def __call__(self, inputs: jax.Array) -> jax.Array:  # type: ignore[override]
        simple = (
            inputs.ndim == 4
            and len(self.kernel_size) == 2
            and self.use_bias
            and self.mask is None
            and self.feature_group_count == 1
            and self.input_dilation in (None, 1, (1, 1))
            and self.preferred_element_type is None
            and _lax_padding(self.padding)
        )
        if not simple:
            return super().__call__(inputs)
        kernel, bias = self.kernel[...], self.bias[...]
        inputs, kernel, bias = self.promote_dtype((inputs, kernel, bias), dtype=self.dtype)
        y = self.conv_general_dilated(
            inputs, kernel, _pair(self.strides), self.padding,
            rhs_dilation=_pair(self.kernel_dilation), dimension_numbers=_NHWC,
            precision=self.precision,
        )  # fmt: skip
        return add_bias(y, bias)


def _lax_padding(padding) -> bool:
    """Whether ``lax.conv_general_dilated`` takes ``padding`` as it is: "SAME", "VALID" or one
    (low, high) pair per spatial axis (nnx's "CIRCULAR", "CAUSAL" and ints it converts itself)."""
    if isinstance(padding, str):
        return padding in ("SAME", "VALID")
    if isinstance(padding, int):
        return False
    return len(padding) == 2 and all(isinstance(p, tuple | list) and len(p) == 2 for p in padding)


def _pair(v) -> tuple[int, int]:
    if v is None:
        return (1, 1)
    if isinstance(v, int):
        return (v, v)
    return tuple(int(a) for a in v)
