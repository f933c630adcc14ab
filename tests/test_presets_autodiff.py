"""Every model preset under JAX's transformations: ``jax.jvp``, ``jax.jacfwd`` and reverse mode.

The U-Net presets' default layers are custom-derivative functions (``jax.custom_jvp``:
:mod:`jaxdiff.models.conv`, :mod:`jaxdiff.models.norm`); these tests check that the models
built of them compose with forward mode (consistency distillation differentiates through the
model with ``jax.jvp``) and that forward and reverse mode agree with each other and with finite
differences. Models are built abstractly (``nnx.eval_shape``) with parameters drawn in NumPy,
and each test compiles one program (at LLVM -O0), which dominates its run time on a CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdiff import models
from jaxdiff.models import split_model


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def abstract(build):
    """``nnx.eval_shape`` of ``build(rngs)``: the module with shape-only parameters."""
    return nnx.eval_shape(lambda: build(nnx.Rngs(0)))


def _random_params(abstract_params, seed, centred=False):
    """Parameters for ``abstract_params`` drawn in NumPy (no initialiser compiles): kernels and
    tables N(0, 1 / fan_in), GroupNorm scales 1 + N(0, 0.1^2), biases N(0, 0.1^2); so every
    layer, the zero-initialised output conv included, is generic and activations stay O(1).
    ``centred``: scales N(0, 0.1^2) too (a direction in parameter space)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        shape = leaf.shape
        if len(shape) >= 2:
            std = 1.0 / np.sqrt(np.prod(shape[:-1]))
            return jnp.asarray(std * rng.standard_normal(shape), leaf.dtype)
        base = 1.0 if "scale" in jax.tree_util.keystr(path) and not centred else 0.0
        return jnp.asarray(base + 0.1 * rng.standard_normal(shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract_params)


def _derivatives(apply, params, x, t, dx, directions, projections, h):
    """Everything the preset test compares, from one compiled function.

    ``jvp_x``: ``jax.jvp`` in ``x`` alone along ``dx`` (the parameters closed over, as in
    consistency distillation); ``jacfwd`` and ``jacrev``: the ``(P, D)`` Jacobian of
    ``g(a) = projections . f(params + a . dp, x + a . dxs)`` along ``D`` directions
    ``(dp, dxs)`` in parameters and input together (``jacrev``'s rows are the gradients of
    ``projections[i] . f``, projected); ``fd_x`` and ``fd``: finite differences of the first
    and of ``g`` (central, steps ``h`` and ``h / 2``, extrapolated).
    """
    f = lambda p, x_: apply(p, x_, t)
    dp, dxs = directions
    _, jvp_x = jax.jvp(lambda x_: f(params, x_), (x,), (dx,))

    def shifted(a):  # the parameters and input at a . (dp, dxs)
        p = jax.tree.map(lambda v, d: v + jnp.tensordot(a, d, 1), params, dp)
        return p, x + jnp.tensordot(a, dxs, 1)

    def project(y):  # (B, H, W, C) -> (P,)
        return jnp.tensordot(projections, y, y.ndim)

    g = lambda a: project(f(*shifted(a)))

    n_dir = dxs.shape[0]
    eye = jnp.eye(n_dir)

    def central(s):  # central differences with step s, from one vmapped forward pass
        a = jnp.concatenate([jnp.zeros((2, n_dir)), s * eye, -s * eye])  # x +/- s dx, +/- s e_k
        p_all, x_all = jax.vmap(shifted)(a)
        ys = jax.vmap(f)(p_all, x_all.at[:2].add(jnp.stack([s * dx, -s * dx])))
        along = jax.vmap(project)(ys[2 : 2 + n_dir] - ys[2 + n_dir :]).T  # (P, D)
        return (ys[0] - ys[1]) / (2 * s), along / (2 * s)

    # Richardson's extrapolation of steps h and h / 2 cancels the h^2 error term
    fd_x, fd = jax.tree.map(lambda c1, c2: (4 * c2 - c1) / 3, central(h), central(h / 2))
    a0 = jnp.zeros((n_dir,), jnp.float32)
    return dict(jvp_x=jvp_x, fd_x=fd_x, fd=fd, jacfwd=jax.jacfwd(g)(a0), jacrev=jax.jacrev(g)(a0))


def _rel_err(a, b) -> float:
    """max |a - b| relative to max |b|."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# LLVM at -O0: a third of the compile time of XLA:CPU's default for these one-off programs; the
# HLO (what is computed) is the same.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
PRESET_NAMES = sorted(models.PRESETS)


# Compile time on a 2-core CPU under load: tens of seconds (the tiny presets) to a few minutes.
_BIG_PRESETS = ("improved_denoiser_8x8", "unet_compact", "unet_mnist", "unet_mnist_small")


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in _BIG_PRESETS else n for n in PRESET_NAMES],
)
def test_presets_compose_with_jvp_jacfwd_and_grad(name):
    """Every preset, with its default layers (``fast_conv_grad=True``: the custom-derivative
    convolution, GroupNorm and bias), under ``jax.jvp``, ``jax.jacfwd`` and reverse mode
    (``jax.jacrev``, whose rows are ``jax.grad``s).

    Inputs: one 8x8 image (the 28x28 presets down-sample it 8 -> 4 -> 2), random parameters,
    two directions in parameters and input together. References: central finite differences
    and, between the two modes, each other. ``tests/test_conv.py`` compares a tiny U-Net's
    values, gradients and tangents with the same model built of ``nnx.Conv`` and
    plain-autodiff GroupNorm layers; ``test_norm.py`` and ``test_conv.py`` the layers with
    float64. Tolerances: forward and reverse mode sum the same float32 terms in other orders
    (relative ~1e-6 per layer, 1e-4 through a U-Net's ~50 layers). The extrapolated central
    difference (h = 1e-2) errs by O(h^4) plus float32 rounding, ~1e-5 |f| / h: a few 1e-4 of
    the derivative here (a plain central difference: up to 2.4e-3, its h^2 term), so 1e-3
    leaves room while a missing or wrong term of a rule (order 1e-1 to 1) fails.
    """
    preset = models.PRESETS[name]
    build = lambda r: preset(image_size=8, num_steps=1000, rngs=r)
    _, abstract_params, apply = split_model(abstract(build))
    params = _random_params(abstract_params, seed=0)
    x, dx = normal(1, (1, 8, 8, 1)), normal(2, (1, 8, 8, 1))
    t = jnp.array([37], jnp.int32)
    draws = [_random_params(abstract_params, seed, centred=True) for seed in (1, 2)]
    directions = (jax.tree.map(lambda *d: jnp.stack(d), *draws), normal(3, (2, 1, 8, 8, 1)))
    projections = normal(4, (2, 1, 8, 8, 1))
    run = jax.jit(functools.partial(_derivatives, apply, h=1e-2), compiler_options=FAST_COMPILE)
    out = run(params, x, t, dx, directions, projections)
    assert _rel_err(out["jvp_x"], out["fd_x"]) < 1e-3
    assert _rel_err(out["jacfwd"], out["jacrev"]) < 1e-4
    assert _rel_err(out["jacrev"], out["fd"]) < 1e-3
    assert float(np.max(np.abs(out["jvp_x"]))) > 1e-3  # not vacuous comparisons
    assert float(np.min(np.abs(out["fd"]))) > 1e-3


def test_bfloat16_compute_under_jvp_and_grad():
    """The gpu preset's bfloat16 compute (float32 parameters) through the custom rules: the
    tangent and gradient keep float32's dtype and track float32's values to bfloat16's
    precision (8 bits: ~0.4% per rounding, a few percent through the network)."""
    build = lambda dtype: lambda r: models.unet_tiny_8x8(dtype=dtype, rngs=r)
    x, dx = normal(1, (2, 8, 8, 1)), normal(2, (2, 8, 8, 1))
    t = jnp.array([3, 700], jnp.int32)
    out = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        _, abstract_params, apply = split_model(abstract(build(dtype)))
        params = _random_params(abstract_params, seed=0)
        f = lambda p, x_, apply=apply: apply(p, x_, t)
        jvp = lambda p, f=f: jax.jvp(lambda x_: f(p, x_), (x,), (dx,))[1]
        grad = lambda p, f=f: jax.grad(lambda p_: jnp.vdot(f(p_, x), dx))(p)
        both = jax.jit(
            lambda p, jvp=jvp, grad=grad: (jvp(p), grad(p)), compiler_options=FAST_COMPILE
        )
        out[dtype] = both(params)
    (t32, g32), (t16, g16) = out[jnp.float32], out[jnp.bfloat16]
    assert t16.dtype == jnp.float32 and _rel_err(t16, t32) < 0.05
    for a, b in zip(jax.tree.leaves(g16), jax.tree.leaves(g32), strict=True):
        assert a.dtype == jnp.float32 and _rel_err(a, b) < 0.05
