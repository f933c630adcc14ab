"""Forward and forward+backward images/s of the MNIST U-Nets (the foundation issue's benchmark).

Run (from the repository root)::

    python benchmarks/bench_model.py                          # compact and small U-Net, B=128
    python benchmarks/bench_model.py --models full --batch 128 --repeats 5

Times ``jax.jit(apply)`` (forward) and ``jax.jit(jax.grad(mean-squared output))`` (forward +
backward) on random 28x28x1 inputs; the first call (compile) is reported separately and the
throughput is the median over ``--repeats`` timed calls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.mnist import MODELS
from jaxdiff.models import count_params, make_model, split_model


def _time(fn, *args, repeats: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["compact", "small"], choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"backend={jax.default_backend()} devices={jax.device_count()} jax={jax.__version__}")
    for name in args.models:
        _, params, apply = split_model(make_model(MODELS[name], 1, 28, rngs=nnx.Rngs(0)))
        x = jax.random.normal(jax.random.key(0), (args.batch, 28, 28, 1))
        t = jnp.arange(args.batch, dtype=jnp.int32) % 1000
        fwd = jax.jit(apply)
        grad = jax.jit(jax.grad(lambda p, x, t, f=apply: jnp.mean(f(p, x, t) ** 2)))
        for label, fn in (("forward", fwd), ("forward+backward", grad)):
            first, median = _time(fn, params, x, t, repeats=args.repeats)
            print(
                f"{name:8s} ({count_params(params):,} params) {label:17s} batch={args.batch} "
                f"compile+first={first:6.1f}s  median={median * 1e3:8.1f} ms  "
                f"{args.batch / median:7.1f} images/s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
