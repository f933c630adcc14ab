"""The GPU and TPU programs, checked on the CPU: lowered for ``cuda`` and ``tpu`` without a device.

The training step (the ``gpu`` preset's configuration: a rolled K=10 scan with batch indices
drawn up front) and the samplers are lowered for each accelerator platform and their HLO is
read for what would hurt there: float64 (slow or absent), host callbacks and send/recv (a device
waiting on the host), a data-dependent ``conditional`` (XLA:GPU reads its predicate on the host),
scatters (atomics: non-deterministic gradients), the CPU-only kernel gradient of
``jaxdiff.models.conv`` (every convolution must stay a native one), and donated state that is not
aliased to the output. The FLOP count of the gpu preset's step is compared with its recorded
figure, so a change to the model or the step that changes the cost is noticed.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff.samplers as samplers
import jaxdiff.samplers.scan as sampler_scan
from experiments import mnist
from jaxdiff.models.unet_blocks import nearest_resize
from jaxdiff.train import init_train_state, make_data_multi_step, make_optimizer, make_train_step

PLATFORMS = ("cuda", "tpu")
# XLA's cost analysis of one training step of the gpu preset (full U-Net, batch 128, 28x28),
# lowered for cuda on 2026-12-06 with jax 0.10.2 (class-conditional, the GroupNorm and bias
# gradients as matrix products): 797.3 GFLOP in float32 (3.03x its forward pass), 797.9 with
# the preset's bfloat16 compute (the casts).
GPU_PRESET_STEP_FLOPS = 797.25e9
_HOST_OPS = (" send(", " recv(", " infeed(", " outfeed(", "callback", "host_compute")


def _gpu_build(**overrides):
    overrides = {"class_conditional": False, **overrides}  # the programs below feed no labels
    config, _ = mnist.resolve(mnist.MnistConfig(preset="gpu", model="tiny", **overrides), "gpu")
    return mnist.build(config)


def _hlo(lowered) -> str:
    return lowered.compiler_ir("hlo").as_hlo_text()


def _check_accelerator_hlo(hlo: str) -> None:
    assert "f64" not in hlo, "float64 in an accelerator program"
    assert not [op for op in _HOST_OPS if op in hlo], "host transfer or callback in the program"
    assert " conditional(" not in hlo, "data-dependent conditional (host round trip on GPU)"
    assert "scatter" not in hlo, "scatter (atomics on GPU: non-deterministic sums)"
    targets = set(re.findall(r'custom_call_target="([^"]+)"', hlo))
    assert targets <= {"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape"}, targets


def _train_program(batch_draw: str, k: int = 10, batch: int = 8):
    apply, params, schedule, train_config = _gpu_build()
    tx = make_optimizer(train_config)
    step = make_train_step(apply, schedule, train_config, tx)
    multi = make_data_multi_step(step, batch, k, unroll=1, batch_draw=batch_draw)
    state = init_train_state(params, tx, 0)
    data = {"x": jnp.zeros((64, 28, 28, 1), jnp.float32)}
    return apply, params, state, jax.jit(multi, donate_argnums=0).trace(state, data)


@pytest.fixture(scope="module")
def gpu_train_program():
    return _train_program("table")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_training_step_lowers_cleanly_for(platform, gpu_train_program):
    apply, params, state, traced = gpu_train_program
    lowered = traced.lower(lowering_platforms=(platform,))
    hlo = _hlo(lowered)
    _check_accelerator_hlo(hlo)
    assert hlo.count(" while(") == 1  # the K=10 steps: one rolled loop, not 10 copies

    # Every convolution is a native one: forward, input gradient (none for the first layer,
    # whose input is data) and XLA's kernel gradient, not jaxdiff's CPU matmul version.
    x = jax.ShapeDtypeStruct((8, 28, 28, 1), jnp.float32)
    t = jax.ShapeDtypeStruct((8,), jnp.int32)
    forward = _hlo(jax.jit(apply).trace(params, x, t).lower(lowering_platforms=(platform,)))
    n_conv = forward.count(" convolution(")
    assert n_conv > 10
    assert hlo.count(" convolution(") == 3 * n_conv - 1

    # The donated state is aliased to the new state: no second copy in device memory.
    text = lowered.as_text()
    assert text.count("tf.aliasing_output") == len(jax.tree_util.tree_leaves(state))


def test_the_cpu_batch_draw_would_fail_the_check():
    """The CPU's way of drawing batches (a ``lax.cond`` per step) is what the check catches."""
    *_, traced = _train_program("cond", k=2)
    assert " conditional(" in _hlo(traced.lower(lowering_platforms=("cuda",)))


def test_the_donated_state_is_aliased_when_compiled():
    _, _, state, traced = _train_program("table", k=2)
    memory = traced.lower().compile().memory_analysis()
    state_bytes = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(state))
    assert memory.alias_size_in_bytes >= 0.99 * state_bytes


def test_the_gpu_preset_step_costs_its_recorded_flops():
    config, _ = mnist.resolve(mnist.MnistConfig(preset="gpu"), "gpu")
    apply, params, schedule, train_config = mnist.build(config, abstract=True)
    tx = make_optimizer(train_config)
    step = make_train_step(apply, schedule, train_config, tx)
    state = jax.eval_shape(lambda p: init_train_state(p, tx, 0), params)
    assert config.class_conditional  # the preset's model takes labels
    x = jax.ShapeDtypeStruct((config.batch_size, 28, 28, 1), jnp.float32)
    labels = jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)
    lowered = (
        jax.jit(step, donate_argnums=0)
        .trace(state, {"x": x, "labels": labels})
        .lower(lowering_platforms=("cuda",))
    )
    flops = lowered.cost_analysis()["flops"]
    assert flops == pytest.approx(GPU_PRESET_STEP_FLOPS, rel=0.05)
    t = jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)
    forward = jax.jit(apply).trace(params, x, t, labels).lower(lowering_platforms=("cuda",))
    assert 2.8 < flops / forward.cost_analysis()["flops"] < 3.3  # backward ~ 2x forward


@pytest.mark.parametrize("sampler", ["dpm++", "ddpm", "unipc"])
def test_the_samplers_lower_cleanly_for_accelerators(sampler, monkeypatch):
    """The whole reverse process in one rolled scan (the GPU default), with classifier-free
    guidance, lowered for both platforms from the call the CPU actually runs."""
    apply, params, schedule, _ = _gpu_build(class_conditional=True)
    lowered = {}
    real = sampler_scan._run_ops_compiled

    def capture(platform, mesh):
        compiled = real(platform, mesh)

        def run(cfg, *args):
            traced = jax.jit(sampler_scan._run_ops_body, static_argnums=0).trace(cfg, *args)
            for p in PLATFORMS:
                lowered[p] = traced.lower(lowering_platforms=(p,))
            return compiled(cfg, *args)

        return run

    monkeypatch.setattr(sampler_scan, "_run_ops_compiled", capture)
    labels = jnp.arange(4) % 10
    out = samplers.sample(
        apply, params, schedule, (4, 28, 28, 1), jax.random.key(0), solver=sampler, steps=10,
        guidance=samplers.Guidance(2.0, labels=labels, num_classes=10),
        loop=samplers.Loop(steps_per_call=None, unroll=1),
    )  # fmt: skip
    assert np.isfinite(np.asarray(out.samples)).all()
    for platform in PLATFORMS:
        hlo = _hlo(lowered[platform])
        _check_accelerator_hlo(hlo)
        assert hlo.count(" while(") == 1


@pytest.mark.parametrize(
    ("size", "target"), [((4, 4), (7, 7)), ((7, 7), (14, 14)), ((3, 5), (5, 10)), ((2, 3), (6, 4))]
)
def test_nearest_resize_equals_jax_and_has_no_scatter(size, target):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, *size, 3)), jnp.float32)
    ref = jax.image.resize(x, (2, *target, 3), method="nearest")
    np.testing.assert_array_equal(nearest_resize(x, target), ref)

    def loss(fn):
        return jax.jit(jax.grad(lambda x: jnp.sum(fn(x) ** 3)))

    grad = loss(lambda x: nearest_resize(x, target))
    grad_ref = loss(lambda x: jax.image.resize(x, (2, *target, 3), method="nearest"))
    np.testing.assert_allclose(grad(x), grad_ref(x), rtol=1e-6)
    assert "scatter" not in grad.lower(x).as_text()
    assert "scatter" in grad_ref.lower(x).as_text()  # what the U-Net used before
