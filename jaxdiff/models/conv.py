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

It is a ``jax.custom_jvp`` whose tangent rule is the convolution's own bilinear tangent
``conv(t_x, w) + conv(x, t_w)``, the second term on CPU written as the per-tap products
``sum_ij X_ij t_w[i, j]`` (:func:`conv_kernel_tangent`). Reverse mode (``jax.grad``,
``jax.vjp``) is JAX's transpose of that rule: ``conv(t_x, w)`` transposes to XLA's input
gradient and the per-tap products to the products ``X_ij^T G`` above, so the gradient is the
same computation as a hand-written backward pass, while forward mode (``jax.jvp``,
``jax.jacfwd``) and higher derivatives (``jax.hessian``) work too, under ``jit`` and ``vmap``.
A tangent that is zero (say the parameters' in a ``jax.jvp`` in the input) skips its term.
Cases it does not cover (not 2-D, grouped, input-dilated, other dimension layouts than flax's
NHWC/HWIO) go straight to ``lax.conv_general_dilated``.

Use it through :class:`Conv` (``nnx.Conv`` with this convolution and a bias whose gradient is
a matrix product, the transpose of :func:`jaxdiff.models.sums.spread_channels`), or through
``nnx.Conv(..., conv_general_dilated=conv_general_dilated)``; the U-Net uses :class:`Conv` by
default.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jaxdiff.models.sums import spread_channels

__all__ = ["Conv", "add_bias", "conv_general_dilated", "conv_kernel_grad", "conv_kernel_tangent"]

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


def _windows(x, kernel_size, strides, pads, dilation, out_hw):
    """The ``kh * kw`` input windows ``X_ij (B, P, Q, C_in)``, row-major over the taps: the
    pixels of the padded ``x`` that tap ``(i, j)`` multiplies (module docstring)."""
    b, c_in = x.shape[0], x.shape[-1]
    p, q = out_hw
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    for i in range(kernel_size[0]):
        for j in range(kernel_size[1]):
            oi, oj = i * dilation[0], j * dilation[1]
            yield lax.slice(
                xp,
                (0, oi, oj, 0),
                (b, oi + strides[0] * (p - 1) + 1, oj + strides[1] * (q - 1) + 1, c_in),
                (1, strides[0], strides[1], 1),
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
    b, p, q, c_out = g.shape
    g2 = g.reshape(b * p * q, c_out)
    taps = [
        _matmul32(window.reshape(b * p * q, -1), g2, 0, precision)  # X_ij^T G
        for window in _windows(x, kernel_size, strides, pads, dilation, (p, q))
    ]
    kh, kw = kernel_size
    return jnp.stack(taps).reshape(kh, kw, *taps[0].shape).astype(g.dtype)


def conv_kernel_tangent(
    x: jax.Array,
    tw: jax.Array,
    strides: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int] = (1, 1),
    precision=None,
) -> jax.Array:
    """``conv(x, tw)`` as one matrix product per kernel tap: ``sum_ij X_ij tw[i, j]``.

    The same value as the convolution, linear in ``tw``; written so that JAX's transpose of it
    with respect to ``tw`` (reverse mode) is :func:`conv_kernel_grad`'s products
    ``X_ij^T G``. Shapes: ``x (B, H, W, C_in)``, ``tw (kh, kw, C_in, C_out)`` ->
    ``(B, P, Q, C_out)`` in ``tw``'s dtype, accumulated in float32.
    """
    kh, kw, _, c_out = tw.shape
    b = x.shape[0]
    p, q = _out_hw(x.shape[1:3], (kh, kw), strides, pads, dilation)
    taps = tw.reshape(kh * kw, *tw.shape[2:])
    out = functools.reduce(
        operator.add,
        (
            _matmul32(window.reshape(b * p * q, -1), taps[k], 1, precision)  # X_ij tw[i, j]
            for k, window in enumerate(_windows(x, (kh, kw), strides, pads, dilation, (p, q)))
        ),
    )
    return out.reshape(b, p, q, c_out).astype(tw.dtype)


def _matmul32(a, b, a_axis: int, precision):
    """``a`` (2-D, contracted over ``a_axis``) times ``b`` (over its axis 0), in float32."""
    dims = (((a_axis,), (0,)), ((), ()))
    return lax.dot_general(a, b, dims, precision=precision, preferred_element_type=jnp.float32)


def _out_hw(hw, kernel_size, strides, pads, dilation):
    """The output's ``(P, Q)`` for input ``(H, W)`` (explicit padding, no input dilation)."""
    return tuple(
        (n + lo + hi - (k - 1) * d - 1) // s + 1
        for n, k, s, (lo, hi), d in zip(hw, kernel_size, strides, pads, dilation, strict=True)
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _fast_conv(x, w, strides, pads, dilation, precision):
    return _conv(x, w, strides, pads, dilation, precision)


@functools.partial(_fast_conv.defjvp, symbolic_zeros=True)
def _fast_conv_jvp(strides, pads, dilation, precision, primals, tangents):
    """``t_y = conv(t_x, w) + conv(x, t_w)`` (bilinear); on CPU the second term per tap
    (:func:`conv_kernel_tangent`), whose transpose is the matmul kernel gradient. A symbolic
    zero tangent skips its term."""
    x, w = primals
    tx, tw = tangents
    conv = functools.partial(_conv, strides=strides, pads=pads, dilation=dilation,
                             precision=precision)  # fmt: skip
    y = conv(x, w)
    ty = jnp.zeros_like(y) if isinstance(tx, SymbolicZero) else conv(tx, w)
    if not isinstance(tw, SymbolicZero):
        by_taps = functools.partial(conv_kernel_tangent, strides=strides, pads=pads,
                                    dilation=dilation, precision=precision)  # fmt: skip
        ty = ty + lax.platform_dependent(x, tw, cpu=by_taps, default=conv)
    return y, ty


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


@jax.custom_jvp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """``y (..., C) + bias (C,)``; the bias gradient is a matrix product (:mod:`.sums`)."""
    return y + bias


@functools.partial(add_bias.defjvp, symbolic_zeros=True)
def _add_bias_jvp(primals, tangents):
    """``t_y + spread_channels(t_bias)``: transposed, ``channel_sums(g)``, a dot."""
    (y, bias), (ty, tbias) = primals, tangents
    out = jnp.zeros_like(y) if isinstance(ty, SymbolicZero) else ty
    if not isinstance(tbias, SymbolicZero):
        out = out + spread_channels(tbias, y.shape).astype(out.dtype)
    return y + bias, out


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
