"""The hand-written derivatives of the U-Net's layers: GroupNorm, the matrix-product sums, the
conv bias; forward mode (their ``jax.custom_jvp`` rules) and reverse mode (JAX's transposes).

Each is checked against an independent computation: flax's ``nnx.GroupNorm`` / ``nnx.Conv``
differentiated by JAX, and a float64 reference of group normalisation (numpy closed form for
the values, float64 autodiff for the gradients). Float32 tolerances: the sums run over at most
~25,000 terms, so relative differences of a few 1e-6 are summation order, not error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdiff.models.conv import Conv, add_bias, conv_general_dilated
from jaxdiff.models.norm import GroupNorm, group_norm
from jaxdiff.models.sums import channel_sums, spread_channels, spread_positions, sum_positions


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _inputs(shape, seed=0):
    k = jax.random.split(jax.random.key(seed), 4)
    c = shape[-1]
    x = 3.0 * jax.random.normal(k[0], shape) + 1.0  # mean and scale away from 0 and 1
    scale = 1.0 + 0.3 * jax.random.normal(k[1], (c,))
    bias = 0.3 * jax.random.normal(k[2], (c,))
    cot = jax.random.normal(k[3], shape)  # a generic output cotangent
    return x, scale, bias, cot


SHAPES = [((4, 7, 7, 32), 8), ((2, 5, 6, 12), 4), ((5, 10), 2)]


@pytest.mark.parametrize("shape,groups", SHAPES)
def test_group_norm_matches_flax_values_and_gradients(shape, groups):
    c = shape[-1]
    x, scale, bias, cot = _inputs(shape)
    ours, theirs = (
        GroupNorm(c, num_groups=groups),
        nnx.GroupNorm(c, num_groups=groups, rngs=nnx.Rngs(0)),
    )
    # the same parameter tree and initial values: checkpoints are interchangeable
    s_ours, s_theirs = nnx.state(ours, nnx.Param), nnx.state(theirs, nnx.Param)
    assert jax.tree.structure(s_ours) == jax.tree.structure(s_theirs)
    for a, b in zip(jax.tree.leaves(s_ours), jax.tree.leaves(s_theirs), strict=True):
        np.testing.assert_array_equal(a, b)
    graphdef, state = nnx.split(theirs)
    treedef = jax.tree.structure(state)  # leaves in key order: bias, scale

    def loss(f):
        return lambda x, s, b: jnp.sum(f(x, s, b) * cot)

    def flax_fn(x, s, b):
        return nnx.merge(graphdef, jax.tree.unflatten(treedef, [b, s]))(x)

    ours_fn = lambda x, s, b: group_norm(x, s, b, groups)
    ours_v, ours_g = jax.jit(jax.value_and_grad(loss(ours_fn), (0, 1, 2)))(x, scale, bias)
    ref_v, ref_g = jax.jit(jax.value_and_grad(loss(flax_fn), (0, 1, 2)))(x, scale, bias)
    assert _rel(ours_v, ref_v) < 1e-5
    for a, b in zip(ours_g, ref_g, strict=True):
        assert _rel(a, b) < 1e-5


def test_group_norm_matches_a_float64_reference():
    shape, groups, eps = (3, 6, 5, 12), 4, 1e-6
    x, scale, bias, cot = (np.asarray(a, np.float64) for a in _inputs(shape, seed=1))
    xr = x.reshape(3, 30, groups, 3)
    mean = xr.mean(axis=(1, 3), keepdims=True)
    var = xr.var(axis=(1, 3), keepdims=True)
    expected = ((xr - mean) / np.sqrt(var + eps)).reshape(shape) * scale + bias
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    got = group_norm(f32(x), f32(scale), f32(bias), groups, eps)
    assert _rel(got, expected) < 2e-6

    with jax.enable_x64(True):

        def ref(x, s, b):
            xr = x.reshape(3, 30, groups, 3)
            m = xr.mean(axis=(1, 3), keepdims=True)
            v = ((xr - m) ** 2).mean(axis=(1, 3), keepdims=True)
            return jnp.sum((((xr - m) / jnp.sqrt(v + eps)).reshape(shape) * s + b) * cot)

        expected_grads = jax.grad(ref, (0, 1, 2))(x, scale, bias)
    grads = jax.grad(
        lambda x, s, b: jnp.sum(group_norm(x, s, b, groups, eps) * f32(cot)), (0, 1, 2)
    )(f32(x), f32(scale), f32(bias))
    for g, e in zip(grads, expected_grads, strict=True):
        assert g.dtype == jnp.float32
        assert _rel(g, e) < 1e-5


def test_group_norm_bfloat16_computes_in_float32_and_returns_bfloat16():
    x, scale, bias, cot = _inputs((2, 4, 4, 8))
    xb = x.astype(jnp.bfloat16)
    y = group_norm(xb, scale, bias, 4)
    assert y.dtype == jnp.bfloat16
    expected = group_norm(xb.astype(jnp.float32), scale, bias, 4)
    np.testing.assert_array_equal(y, expected.astype(jnp.bfloat16))
    dx, ds = jax.grad(
        lambda x, s: jnp.sum(group_norm(x, s, bias, 4).astype(jnp.float32) * cot), (0, 1)
    )(xb, scale)
    assert dx.dtype == jnp.bfloat16 and ds.dtype == jnp.float32


def _reference(groups, eps):
    """Group normalisation in closed form (two-pass variance), for float64 autodiff."""

    def ref(x, s, b):
        xr = x.reshape(x.shape[0], -1, groups, x.shape[-1] // groups)
        m = xr.mean(axis=(1, 3), keepdims=True)
        v = ((xr - m) ** 2).mean(axis=(1, 3), keepdims=True)
        return ((xr - m) / jnp.sqrt(v + eps)).reshape(x.shape) * s + b

    return ref


def test_group_norm_forward_mode_matches_a_float64_reference():
    """``jax.jvp`` in all three arguments and in ``x`` alone (the rule's symbolic zeros),
    ``jax.jacfwd`` against ``jax.jacrev`` and a second derivative (``jax.hessian``), each
    against float64 autodiff of the closed form. Float32 tangents and first derivatives:
    sums of <= 90 terms, relative error ~1e-6; the Hessian multiplies two more rstd factors
    and sums of terms of both signs, hence 1e-4."""
    shape, groups, eps = (3, 6, 5, 12), 4, 1e-6
    x, scale, bias, _ = (np.asarray(a, np.float64) for a in _inputs(shape, seed=1))
    tx, tscale, tbias, _ = (np.asarray(a, np.float64) for a in _inputs(shape, seed=2))
    f32 = lambda *a: tuple(jnp.asarray(v, jnp.float32) for v in a)
    ours = lambda x, s, b: group_norm(x, s, b, groups, eps)
    ref = _reference(groups, eps)
    with jax.enable_x64(True):
        _, expected_all = jax.jvp(ref, (x, scale, bias), (tx, tscale, tbias))
        _, expected_x = jax.jvp(lambda x: ref(x, scale, bias), (x,), (tx,))
    _, got_all = jax.jit(lambda *a: jax.jvp(ours, a[:3], a[3:]))(
        *f32(x, scale, bias, tx, tscale, tbias)
    )
    xs, ss, bs = f32(x, scale, bias)
    _, got_x = jax.jvp(lambda x: ours(x, ss, bs), (xs,), f32(tx))
    assert _rel(got_all, expected_all) < 1e-5
    assert _rel(got_x, expected_x) < 1e-5
    assert _rel(got_x, expected_all) > 0.1  # the scale and bias tangents count

    small, g = (1, 2, 3, 4), 2  # 24 inputs: Jacobians and a Hessian of a few hundred entries
    xs, ss, bs, cs = (np.asarray(a, np.float64) for a in _inputs(small, seed=3))
    fwd = jax.jacfwd(lambda x: group_norm(x, *f32(ss, bs), g))(*f32(xs))
    rev = jax.jacrev(lambda x: group_norm(x, *f32(ss, bs), g))(*f32(xs))
    hess = jax.hessian(lambda x: jnp.sum(jnp.sin(group_norm(x, *f32(ss, bs), g)) * cs))(*f32(xs))
    with jax.enable_x64(True):
        ref_small = _reference(g, 1e-6)
        expected_jac = jax.jacfwd(lambda x: ref_small(x, ss, bs))(xs)
        expected_hess = jax.hessian(lambda x: jnp.sum(jnp.sin(ref_small(x, ss, bs)) * cs))(xs)
    assert _rel(fwd, expected_jac) < 1e-5 and _rel(rev, expected_jac) < 1e-5
    assert _rel(hess, expected_hess) < 1e-4


def _reductions_over(closed_jaxpr, size: int) -> list[str]:
    """The ``reduce_*`` equations, in ``closed_jaxpr`` and every sub-jaxpr, whose operand has
    ``size`` or more elements."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name.startswith("reduce_"):
                if any(np.prod(v.aval.shape) >= size for v in eqn.invars):
                    found.append(str(eqn))
            for param in eqn.params.values():
                for sub in param if isinstance(param, tuple | list) else (param,):
                    if hasattr(sub, "eqns"):
                        walk(sub)
                    elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                        walk(sub.jaxpr)

    walk(closed_jaxpr.jaxpr)
    return found


def test_reverse_mode_sums_the_full_arrays_only_with_dots():
    """What keeps the CPU training step fast (module docstrings of ``norm`` and ``sums``): the
    gradients of GroupNorm and of the conv bias, obtained by JAX transposing their forward-mode
    rules, take every sum over a whole activation as a matrix product, never a reduction.
    Positive control: autodiff of the same GroupNorm forward pass (``fast_grad=False``) and
    of a plain ``y + bias`` reduce over the whole array."""
    shape, groups = (2, 6, 6, 8), 4
    x, _, bias, cot = _inputs(shape)
    size = int(np.prod(shape))

    def grad_jaxpr(f, *args):  # the forward pass and the pullback of the cotangent
        return jax.make_jaxpr(lambda *a: jax.vjp(f, *a)[1](cot))(*args)

    fast, plain = GroupNorm(8, num_groups=groups), GroupNorm(8, num_groups=groups, fast_grad=False)
    for module, reduces in ((fast, False), (plain, True)):
        graphdef, state = nnx.split(module)
        f = lambda x, st, gd=graphdef: nnx.merge(gd, st)(x)
        assert bool(_reductions_over(grad_jaxpr(f, x, state), size)) == reduces
    assert not _reductions_over(grad_jaxpr(add_bias, x, bias), size)
    assert _reductions_over(grad_jaxpr(lambda y, b: y + b, x, bias), size)


def test_group_norm_fast_grad_off_is_the_same_function():
    x, *_ = _inputs((2, 6, 6, 8))
    fast, plain = GroupNorm(8, num_groups=4), GroupNorm(8, num_groups=4, fast_grad=False)
    np.testing.assert_array_equal(fast(x), plain(x))
    for module in (fast, plain):
        _, tangent = jax.jvp(module, (x,), (jnp.ones_like(x),))
        # d GN(x)/d eps along a constant shift is 0: normalisation removes the group mean
        np.testing.assert_allclose(tangent, 0.0, atol=1e-5)


def test_group_norm_refuses_groups_that_do_not_divide_the_channels():
    with pytest.raises(ValueError, match="num_groups=3 must divide num_features=8"):
        GroupNorm(8, num_groups=3)


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (4, 9), (3, 2, 2, 2, 6)])
def test_matrix_product_sums_equal_jnp_sums(shape):
    v = jax.random.normal(jax.random.key(2), shape)
    np.testing.assert_allclose(
        channel_sums(v), v.reshape(-1, shape[-1]).sum(0), rtol=1e-5, atol=1e-5
    )
    expected = v.reshape(shape[0], -1, shape[-1]).sum(1)
    np.testing.assert_allclose(sum_positions(v), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (4, 9), (3, 2, 2, 2, 6)])
def test_spreads_are_broadcasts_and_the_transposes_of_the_sums(shape):
    v = jax.random.normal(jax.random.key(3), shape)
    s_pos = jax.random.normal(jax.random.key(4), (shape[0], shape[-1]))
    s_ch = jax.random.normal(jax.random.key(5), (shape[-1],))
    # a product with ones over a contraction of size 1 is exact
    expected = jnp.broadcast_to(s_pos.reshape(shape[0], *[1] * (len(shape) - 2), -1), shape)
    np.testing.assert_array_equal(spread_positions(s_pos, shape), expected)
    np.testing.assert_array_equal(spread_channels(s_ch, shape), jnp.broadcast_to(s_ch, shape))
    (t_pos,) = jax.linear_transpose(sum_positions, v)(s_pos)
    (t_ch,) = jax.linear_transpose(channel_sums, v)(s_ch)
    np.testing.assert_array_equal(t_pos, expected)
    np.testing.assert_array_equal(t_ch, jnp.broadcast_to(s_ch, shape))


def test_add_bias_forward_mode():
    y, _, bias, ty = _inputs((3, 5, 5, 4))
    tb = jnp.arange(4.0)
    out, tangent = jax.jvp(add_bias, (y, bias), (ty, tb))
    np.testing.assert_array_equal(out, y + bias)
    np.testing.assert_array_equal(tangent, ty + tb)
    _, tangent = jax.jvp(lambda b: add_bias(y, b), (bias,), (tb,))  # y's tangent: a zero
    np.testing.assert_array_equal(tangent, jnp.broadcast_to(tb, y.shape))


def test_add_bias_gradient_is_the_sum_of_the_cotangent():
    y, _, bias, cot = _inputs((3, 5, 5, 4))
    dy, db = jax.grad(lambda y, b: jnp.sum(add_bias(y, b) * cot), (0, 1))(y, bias)
    np.testing.assert_array_equal(dy, cot)
    np.testing.assert_allclose(db, cot.sum((0, 1, 2)), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=(3, 3), padding="SAME"),
        dict(kernel_size=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1))),
        dict(kernel_size=(1, 1)),
        dict(kernel_size=(3, 3), feature_group_count=2),  # not covered: nnx.Conv's own call
        dict(kernel_size=(3, 3), padding="CIRCULAR"),  # nnx pads it itself: nnx.Conv's call
        dict(kernel_size=(3, 3), padding=1),
    ],
)
def test_conv_is_nnx_conv_with_other_gradients(kwargs):
    x, *_ = _inputs((2, 9, 9, 4))
    ours = Conv(4, 6, rngs=nnx.Rngs(3), **kwargs)
    theirs = nnx.Conv(4, 6, conv_general_dilated=conv_general_dilated, rngs=nnx.Rngs(3), **kwargs)
    g_ours, p_ours = nnx.split(ours)
    g_theirs, p_theirs = nnx.split(theirs)
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_theirs), strict=True):
        np.testing.assert_array_equal(a, b)  # same initialisation
    # a non-zero bias, so that its gradient path is exercised
    p = jax.tree.map(lambda a: a + 0.1, p_ours)
    np.testing.assert_array_equal(nnx.merge(g_ours, p)(x), nnx.merge(g_theirs, p)(x))
    cot = jax.random.normal(jax.random.key(5), nnx.merge(g_ours, p)(x).shape)
    grad = lambda g: jax.jit(jax.grad(lambda p: jnp.sum(nnx.merge(g, p)(x) * cot)))(p)
    for a, b in zip(jax.tree.leaves(grad(g_ours)), jax.tree.leaves(grad(g_theirs)), strict=True):
        assert _rel(a, b) < 1e-5
