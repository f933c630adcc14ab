"""Sampling throughput: the compiled sampler versus a Python loop of jitted steps.

Draws ``--batch`` MNIST-shaped (28x28x1) samples with an untrained denoiser (its weights do not
change the cost) on a linear schedule of ``--T`` steps, or with ``--model toy2d`` 2-D points
from experiments.toy2d's ConditionalMLP (its time embedding has ``--T`` rows), and times, for
each ``--modes`` entry:

- ``loop``: the tutorials' style, a Python ``for`` loop calling a jitted single DDPM step
  (model call + :func:`jaxdiff.ddpm_step` + fresh noise) once per timestep, compiled with the
  same XLA options as :func:`~jaxdiff.samplers.sample` (:mod:`jaxdiff.xla_options`);
- ``scan``: :func:`jaxdiff.samplers.sample` with the whole reverse process in one compiled
  ``lax.scan`` (``steps_per_call=None``), once per ``--unroll`` value;
- ``chunked``: :func:`~jaxdiff.samplers.sample` with ``steps_per_call=k`` for each ``--chunk``
  value: a Python loop over compiled, fully unrolled scans of ``k`` steps;
- ``default``: :func:`~jaxdiff.samplers.sample` with its backend defaults
  (:func:`jaxdiff.samplers.default_loop_options`);

all DDPM with ``--steps`` steps (the schedule respaced when fewer than ``--T``), and with
``--dpm-steps`` the default sampler, DPM-Solver++(2M), at that many steps. Every variant is
called once first (compile + run, reported as "first call"); then ``--repeats`` timed calls
are interleaved across the variants, so that load changes on a shared machine hit all alike.
Images/s = batch / median seconds of one whole reverse process.

Run (from the repository root)::

    python benchmarks/bench_samplers.py          # the issue's setting: 64 samples, DDPM 1000
    python benchmarks/bench_samplers.py --steps 20 --batch 16 --model unet16   # quick, CPU
    python benchmarks/bench_samplers.py --modes loop scan chunked --unroll 1 4 --chunk 1 4 10
    python benchmarks/bench_samplers.py --model toy2d --T 100 --steps 100 --batch 1000 \\
        --modes loop default --dpm-steps 0 --repeats 5     # per-step overhead shows
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdiff.reverse import ddpm_step
from jaxdiff.samplers import (
    Loop,
    default_loop_options,
    respaced_schedule,
    sample,
    sampling_timesteps,
)
from jaxdiff.schedules import make_schedule
from jaxdiff.xla_options import jit as xla_jit

MODELS = ("unet_mnist_small", "unet_mnist", "unet16", "cnn", "toy2d")
MODES = ("loop", "scan", "chunked", "default")


def build_model(name: str, num_timesteps: int):
    """``(untrained denoiser, one example's shape)`` for one of :data:`MODELS`."""
    from jaxdiff import models

    rngs = nnx.Rngs(0)
    if name == "toy2d":  # experiments.toy2d's network: one embedding row per timestep
        return models.ConditionalMLP(2, num_timesteps, 128, rngs=rngs), (2,)
    return _image_model(name, rngs), (28, 28, 1)


def _image_model(name: str, rngs: nnx.Rngs):
    from jaxdiff import models

    if name == "unet_mnist_small":
        return models.unet_mnist_small(rngs=rngs)
    if name == "unet_mnist":
        return models.unet_mnist(rngs=rngs)
    if name == "unet16":
        return models.UNet(
            1, 28, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
            attention_resolutions=(7,), norm_groups=8, rngs=rngs,
        )  # fmt: skip
    if name == "cnn":
        return models.SmallCNN(rngs=rngs)
    raise ValueError(f"unknown --model {name!r}; choose one of {MODELS}")


def python_loop_sampler(apply, schedule, steps: int, shape):
    """The tutorials' DDPM loop, ``for i in reversed(range(steps)): x = jitted_step(x, i)``."""
    ts = sampling_timesteps(schedule, steps, "trailing")[::-1]  # ascending: index i -> t
    respaced = respaced_schedule(schedule, ts)

    @xla_jit  # the XLA options sample() compiles with: only the loop structure differs
    def step(params, x, i, t, key):
        eps = apply(params, x, jnp.full((x.shape[0],), t, jnp.int32))
        z = jax.random.normal(key, x.shape, x.dtype)
        return ddpm_step(respaced, eps, x, i, z)

    def run(params, key):
        x = jax.random.normal(key, shape)
        for i in range(steps - 1, -1, -1):
            x = step(params, x, i, int(ts[i]), jax.random.fold_in(key, i))
        return x

    return run


def _unroll(text: str) -> int | bool:
    return True if text.lower() in ("true", "full") else int(text)


def seconds(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="unet_mnist_small", choices=MODELS)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--T", type=int, default=1000, help="schedule length")
    parser.add_argument("--steps", type=int, default=1000, help="DDPM steps (<= T)")
    parser.add_argument("--modes", nargs="+", default=["loop", "default"], choices=MODES)
    parser.add_argument(
        "--unroll", type=_unroll, nargs="+", default=[1], help="mode scan: ints or 'true'"
    )
    parser.add_argument(
        "--chunk", type=int, nargs="+", default=[4], help="mode chunked: steps_per_call values"
    )
    parser.add_argument("--dpm-steps", type=int, default=20, help="0 skips DPM-Solver++")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from jaxdiff.models import count_params, split_model

    model, example_shape = build_model(args.model, args.T)
    _, params, apply = split_model(model)
    schedule = make_schedule("linear", num_steps=args.T)
    shape = (args.batch, *example_shape)
    key = jax.random.key(0)
    print(
        f"backend={jax.default_backend()} devices={jax.device_count()} jax={jax.__version__} "
        f"model={args.model} ({count_params(params):,} params) batch={args.batch} T={args.T} "
        f"repeats={args.repeats} default_loop_options={default_loop_options()}",
        flush=True,
    )

    def sampler_run(sampler, steps, **loop):
        return lambda: (
            sample(
                apply, params, schedule, shape, key, solver=sampler, steps=steps, loop=Loop(**loop)
            ).samples
        )

    runs = []  # (sampler, steps, label, fn)
    for mode in args.modes:
        if mode == "loop":
            loop = python_loop_sampler(apply, schedule, args.steps, shape)
            runs.append(
                ("ddpm", args.steps, "Python loop of jitted steps", lambda f=loop: f(params, key))
            )
        elif mode == "scan":
            for u in args.unroll:
                label = f"one lax.scan, unroll={u}"
                fn = sampler_run("ddpm", args.steps, steps_per_call=None, unroll=u)
                runs.append(("ddpm", args.steps, label, fn))
        elif mode == "chunked":
            for k in args.chunk:
                label = f"steps_per_call={k}, unroll=True"
                fn = sampler_run("ddpm", args.steps, steps_per_call=k, unroll=True)
                runs.append(("ddpm", args.steps, label, fn))
        else:
            runs.append(("ddpm", args.steps, "sample() defaults", sampler_run("ddpm", args.steps)))
    if args.dpm_steps:
        fn = sampler_run("dpm++", args.dpm_steps)
        runs.append(("dpm++", args.dpm_steps, "sample() defaults", fn))

    header = (
        "| sampler | steps | loop | first call (s) | median (s) | min (s) | ms/step | images/s |"
    )
    rows = [header, "|" + "---|" * 8]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short --T schedules warn about terminal signal
        first = [seconds(fn) for *_, fn in runs]
        times = [[] for _ in runs]
        for _ in range(args.repeats):
            for i, (*_, fn) in enumerate(runs):
                times[i].append(seconds(fn))
    print(header, flush=True)
    print(rows[1])
    for (sampler, steps, label, _), first_s, ts in zip(runs, first, times, strict=True):
        median, best = statistics.median(ts), min(ts)
        row = (
            f"| {sampler} | {steps} | {label} | {first_s:.2f} | {median:.2f} | {best:.2f} | "
            f"{median / steps * 1e3:.1f} | {args.batch / median:.2f} |"
        )
        rows.append(row)
        print(row, flush=True)
    return rows


if __name__ == "__main__":
    main()
