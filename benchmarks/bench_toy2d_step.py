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

Run (from the repository root)::

    python benchmarks/bench_toy2d_step.py
    python benchmarks/bench_toy2d_step.py --batches 128 --calls 40
"""

from __future__ import annotations

import argparse
import os
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
    start = time.perf_counter()
    for stack in stacks[1:]:
        state, metrics = trainer.steps(state, stack)
    jax.block_until_ready(metrics)
    return first, (time.perf_counter() - start) / (calls * K) * 1e3


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


if __name__ == "__main__":
    main()
