"""Where the 2-D moons training step spends its time on XLA:CPU (experiments.toy2d's recipe).

The default toy2d run is 1000 epochs = 78,000 steps of batch 128, so its wall time is set by the
step. This times, each inside a compiled 100-step ``lax.scan`` as the experiment runs them:

- the experiment's whole training step (``Trainer`` with toy2d's ``TrainConfig``, host-streamed
  stacks of 100 batches) at several batch sizes, to show whether the step is bound by per-op
  overhead (flat in the batch) or by arithmetic (linear in the batch);
- its parts at batch 128: one 128x128 @ 128x128 matmul (the network has two per forward pass and
  four more in the backward pass), and ``jax.nn.softplus`` on a 128x128 activation (three per
  forward pass).

XLA flags are taken from the environment, e.g.
``XLA_FLAGS=--xla_cpu_use_xnnpack=true python benchmarks/bench_toy2d_step.py``.
``--compare-xla-options R`` also times batch 128 with the Trainer compiled as jaxdiff compiles
it (:mod:`jaxdiff.xla_options`: YNNPACK off on CPU) and with XLA's defaults, in the same
process, alternating R rounds (the matmul and softplus timings use plain ``jax.jit``: XLA's
defaults).

Run (from the repository root)::

    python benchmarks/bench_toy2d_step.py
    python benchmarks/bench_toy2d_step.py --batches 128 --calls 40
    python benchmarks/bench_toy2d_step.py --batches 128 --compare-xla-options 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import toy2d
from jaxdiff import data as jdata
from jaxdiff.models import split_model
from jaxdiff.train import TrainConfig, Trainer

K = 100  # toy2d's steps_per_call


def step_ms(batch: int, calls: int) -> tuple[float, float]:
    """``(compile + first call s, ms per step)`` of toy2d's training step at ``batch``."""
    run, first = prepare(batch, calls)
    return first, run()


def prepare(batch: int, calls: int):
    """``(run, compile + first call s)``: ``run()`` times ``calls`` calls, returns ms/step."""
    config = toy2d.resolve(toy2d.Toy2dConfig())
    points = jdata.make_points(config.dataset, config.num_points, seed=0)
    model = toy2d.ConditionalMLP(2, config.num_timesteps, config.hidden, rngs=nnx.Rngs(0))
    _, params, apply = split_model(model)
    trainer = Trainer(
        apply,
        toy2d.build_schedule(config),
        TrainConfig(
            learning_rate=config.learning_rate, grad_clip_norm=config.grad_clip,
            ema_decay=config.ema_decay, antithetic=config.antithetic, steps_per_call=K, unroll=1,
        ),
    )  # fmt: skip
    state = trainer.init_state(params, jax.random.key(0))
    stacks = [
        trainer.put_batch(b, stacked=True)
        for b in toy2d.host_batches(points, batch, 0, 0, (calls + 1) * K, K)
    ]
    start = time.perf_counter()
    state, metrics = trainer.steps(state, stacks[0])
    jax.block_until_ready(metrics)
    first = time.perf_counter() - start
    box = [state]

    def run() -> float:
        start = time.perf_counter()
        state = box[0]
        for stack in stacks[1:]:
            state, metrics = trainer.steps(state, stack)
        jax.block_until_ready(metrics)
        box[0] = state
        return (time.perf_counter() - start) / (calls * K) * 1e3

    return run, first


def compare_xla_options(batch: int, calls: int, rounds: int) -> dict[str, list[float]]:
    """ms/step per round of the Trainer compiled with jaxdiff's options and with XLA's."""
    from jaxdiff import xla_options

    runs = {}
    own = xla_options.compiler_options
    for name in ("jaxdiff (YNNPACK off)", "XLA defaults"):
        if name == "XLA defaults":  # the Trainer then compiles with compiler_options=None
            xla_options.compiler_options = lambda platform=None: None
        try:
            runs[name] = prepare(batch, calls)[0]
        finally:
            xla_options.compiler_options = own
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(run())
    return times


def op_us(fn, shape: tuple[int, ...], repeats: int = 50) -> float:
    """Microseconds per application of ``fn`` inside a compiled 100-step scan."""
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(K, *shape)), jnp.float32)
    run = jax.jit(lambda xs: jax.lax.scan(lambda c, x: (c + fn(x).sum(), None), 0.0, xs)[0])
    run(xs).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = run(xs)
    out.block_until_ready()
    return (time.perf_counter() - start) / (repeats * K) * 1e6


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 128, 256])
    parser.add_argument("--calls", type=int, default=20, help="timed calls of 100 steps each")
    parser.add_argument(
        "--compare-xla-options", type=int, default=0, metavar="ROUNDS",
        help="also time batch 128 with jaxdiff's XLA options and XLA's defaults, alternating",
    )  # fmt: skip
    args = parser.parse_args(argv)
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, load avg {os.getloadavg()[0]:.1f}"
    )
    print("| batch | compile + first call (s) | ms/step | 78,000 steps (s) |")
    print("|---|---|---|---|")
    for batch in args.batches:
        first, ms = step_ms(batch, args.calls)
        print(f"| {batch} | {first:.2f} | {ms:.3f} | {ms * 78:.0f} |", flush=True)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(128, 128)), jnp.float32) / 12
    dot = op_us(lambda x: x @ w, (128, 128))
    dot_softplus = op_us(lambda x: jax.nn.softplus(x @ w), (128, 128))
    print(
        f"\n128x128 @ 128x128 matmul: {dot:.1f} us ({2 * 128**3 / dot / 1e3:.1f} GFLOP/s); "
        f"with softplus on its output: {dot_softplus:.1f} us, i.e. softplus "
        f"{(dot_softplus - dot) * 1e3 / 128**2:.1f} ns per element"
    )
    if args.compare_xla_options:
        times = compare_xla_options(128, args.calls, args.compare_xla_options)
        print(f"\nbatch 128, {args.compare_xla_options} alternating rounds of {args.calls} calls:")
        for name, ts in times.items():
            print(
                f"  {name}: median {statistics.median(ts):.3f} ms/step, min {min(ts):.3f}, "
                f"max {max(ts):.3f}"
            )


if __name__ == "__main__":
    main()
