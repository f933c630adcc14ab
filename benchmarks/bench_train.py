"""Training-step throughput: examples/s of the compiled, sharded train step.

Times :class:`jaxdiff.train.Trainer` on random data (MNIST-shaped 28x28x1 images for the U-Nets
and the CNN, 2-D points for the MLP), with K steps per compiled call. The compile time (first
call) is printed separately; the throughput is the median over ``--repeats`` timed calls.

Run (from the repository root)::

    python benchmarks/bench_train.py                                  # unet_mnist_small, B=128
    python benchmarks/bench_train.py --model unet16 --batch 64 --k 1 5 --unroll 1 true
    python benchmarks/bench_train.py --model mlp --batch 512 --k 1 10 --unroll 1 true
    python benchmarks/bench_train.py --data device    # batches drawn on the device
    python benchmarks/bench_train.py --model unet16 --batch 32 --conv-grad matmul xla
    python benchmarks/bench_train.py --model unet16 --batch 32 --upsample repeat image_resize
    python benchmarks/bench_train.py --model unet16 --batch 32 --layers jaxdiff flax

``--k`` and ``--unroll`` take several values and time every combination (``--unroll true``
unrolls the scan fully; ``auto`` uses :func:`jaxdiff.train.default_scan_options`).
Models: ``unet_mnist_small`` (1.08 M params), ``unet_mnist`` (6.06 M), ``unet16`` (the small
U-Net of ``unet_mnist_small`` at base 16 channels), ``cnn`` (``SmallCNN``), ``mlp``
(``SinusoidalMLP``, width 128).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
from flax import nnx

from jaxdiff.schedules import make_schedule
from jaxdiff.train import TrainConfig, Trainer, default_scan_options

MODELS = ("unet_mnist_small", "unet_mnist", "unet16", "cnn", "mlp")


def build_model(name: str, fast_conv_grad: bool = True):
    """``(model, example shape)`` for one of :data:`MODELS` (``fast_conv_grad``: U-Nets only)."""
    from jaxdiff import models

    rngs = nnx.Rngs(0)
    if name == "unet_mnist_small":
        return models.unet_mnist_small(fast_conv_grad=fast_conv_grad, rngs=rngs), (28, 28, 1)
    if name == "unet_mnist":
        return models.unet_mnist(fast_conv_grad=fast_conv_grad, rngs=rngs), (28, 28, 1)
    if name == "unet16":
        model = models.UNet(
            1, 28, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
            attention_resolutions=(7,), norm_groups=8, fast_conv_grad=fast_conv_grad, rngs=rngs,
        )  # fmt: skip
        return model, (28, 28, 1)
    if name == "cnn":
        return models.SmallCNN(rngs=rngs), (28, 28, 1)
    if name == "mlp":
        return models.SinusoidalMLP(2, hidden=128, rngs=rngs), (2,)
    raise ValueError(f"unknown --model {name!r}; choose one of {MODELS}")


def _unroll(text: str):
    low = text.lower()
    if low in ("true", "full"):
        return True
    if low == "false":
        return False
    if low == "auto":
        return None
    return int(text)


@contextlib.contextmanager
def upsampling(kind: str):
    """The U-Net's upsampling while tracing: ``repeat`` (jaxdiff's ``nearest_resize``, no
    scatter in its gradient) or ``image_resize`` (``jax.image.resize``, used before)."""
    from jaxdiff.models import unet_blocks

    original = unet_blocks.nearest_resize
    if kind == "image_resize":
        unet_blocks.nearest_resize = lambda x, size: jax.image.resize(
            x, (x.shape[0], *size, x.shape[-1]), method="nearest"
        )
    try:
        yield
    finally:
        unet_blocks.nearest_resize = original


@contextlib.contextmanager
def layers(kind: str):
    """The U-Net's GroupNorm and conv layers while building: ``jaxdiff`` (``models.norm``
    and ``models.conv.Conv``: gradient sums as matrix products) or ``flax`` (``nnx.GroupNorm``
    and ``nnx.Conv`` with the matmul kernel gradient, used before; the same parameters)."""
    from jaxdiff.models import conv, unet, unet_blocks

    original = unet.GroupNorm, unet_blocks.GroupNorm, conv.Conv
    if kind == "flax":
        unet.GroupNorm = unet_blocks.GroupNorm = lambda *a, fast_grad, **kw: nnx.GroupNorm(*a, **kw)
        conv.Conv = functools.partial(nnx.Conv, conv_general_dilated=conv.conv_general_dilated)
    try:
        yield
    finally:
        unet.GroupNorm, unet_blocks.GroupNorm, conv.Conv = original


def prepare(model_name, batch, k, unroll, data_mode, conv_grad):
    """Build the trainer and run its first (compiling) call: ``(call, state, k, unroll, s)``."""
    from jaxdiff.models import split_model

    model, shape = build_model(model_name, fast_conv_grad=conv_grad == "matmul")
    _, params, apply = split_model(model)
    config = TrainConfig(learning_rate=1e-4, steps_per_call=k, unroll=unroll)
    trainer = Trainer(apply, make_schedule("linear", num_steps=1000), config)
    k, unroll = trainer.steps_per_call, trainer.unroll
    rng = np.random.default_rng(0)
    state = trainer.init_state(params, 0)

    if data_mode == "device":
        data = trainer.put_data({"x": rng.normal(size=(4 * batch, *shape)).astype(np.float32)})

        def call(state):
            return trainer.steps_on_data(state, data, batch, k)

    else:
        if k == 1:
            host = {"x": rng.normal(size=(batch, *shape)).astype(np.float32)}
            on_device = trainer.put_batch(host)

            def call(state):
                return trainer.step(state, on_device)

        else:
            host = {"x": rng.normal(size=(k, batch, *shape)).astype(np.float32)}
            on_device = trainer.put_batch(host, stacked=True)

            def call(state):
                return trainer.steps(state, on_device)

    start = time.perf_counter()
    state, metrics = call(state)
    jax.block_until_ready(metrics)
    return call, state, k, unroll, time.perf_counter() - start


def bench(
    model_name, batch, k, unroll, steps, repeats, data_mode, conv_grads, upsamples=("repeat",),
    layer_kinds=("jaxdiff",),
):  # fmt: skip
    """Time each (conv gradient, upsampling, layers) variant, alternating between them
    repeat by repeat."""
    runs = {}
    for conv_grad, upsample, kind in itertools.product(conv_grads, upsamples, layer_kinds):
        with upsampling(upsample), layers(kind):
            call, state, k_, unroll_, compile_s = prepare(
                model_name, batch, k, unroll, data_mode, conv_grad
            )
        runs[conv_grad, upsample, kind] = dict(
            call=call, state=state, k=k_, unroll=unroll_, compile_s=compile_s, per_step=[],
            metrics=None,
        )  # fmt: skip
    for _ in range(repeats):
        for r in runs.values():
            calls = max(1, steps // r["k"])
            start = time.perf_counter()
            for _ in range(calls):
                r["state"], r["metrics"] = r["call"](r["state"])
            jax.block_until_ready(r["metrics"])
            r["per_step"].append((time.perf_counter() - start) / (calls * r["k"]))
    for (conv_grad, upsample, kind), r in runs.items():
        median = statistics.median(r["per_step"])
        loss = float(np.ravel(np.asarray(r["metrics"]["loss"]))[-1])
        print(
            f"{model_name:17s} batch={batch:4d} K={r['k']:3d} unroll={r['unroll']!s:5s} "
            f"data={data_mode:6s} conv-grad={conv_grad:6s} upsample={upsample:12s} "
            f"layers={kind:7s} "
            f"compile+first={r['compile_s']:7.2f}s  step={median * 1e3:8.1f} ms  "
            f"{batch / median:9.1f} examples/s  (min {min(r['per_step']) * 1e3:.1f} ms, "
            f"{repeats}x{max(1, steps // r['k']) * r['k']} steps, loss {loss:.3f})",
            flush=True,
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="unet_mnist_small", choices=MODELS)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, nargs="+", default=[None])
    parser.add_argument("--unroll", type=_unroll, nargs="+", default=[None])
    parser.add_argument("--data", choices=("host", "device"), default="host")
    parser.add_argument(
        "--conv-grad", choices=("matmul", "xla"), nargs="+", default=["matmul"],
        help="U-Net kernel gradients: matmul (jaxdiff.models.conv, the default) and/or xla; "
        "several are timed alternately",
    )  # fmt: skip
    parser.add_argument(
        "--upsample", choices=("repeat", "image_resize"), nargs="+", default=["repeat"],
        help="U-Net upsampling: repeat (jaxdiff's, the default) and/or image_resize (before)",
    )  # fmt: skip
    parser.add_argument(
        "--layers", choices=("jaxdiff", "flax"), nargs="+", default=["jaxdiff"],
        help="U-Net GroupNorm and conv layers: jaxdiff (models.norm, models.conv.Conv; the "
        "default) and/or flax (nnx's, before)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    print(
        f"backend={jax.default_backend()} devices={jax.device_count()} "
        f"defaults(K, unroll)={default_scan_options()} jax={jax.__version__}",
        flush=True,
    )
    for k in args.k:
        for unroll in args.unroll:
            bench(args.model, args.batch, k, unroll, args.steps, args.repeats, args.data,
                  args.conv_grad, args.upsample, args.layers)  # fmt: skip


if __name__ == "__main__":
    main()
