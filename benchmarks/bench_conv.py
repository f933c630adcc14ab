"""One 3x3 convolution, forward and forward+backward: XLA:CPU (jax) versus PyTorch eager.

The MNIST U-Nets spend most of their step in 3x3 convolutions; this isolates one at the shapes
of ``unet_compact`` (batch 32, 28x28/14x14/7x7, 16-32 channels) to show where the gap to
PyTorch (oneDNN) comes from. Needs the ``bench`` extra (``pip install -e ".[bench]"``).

Run (from the repository root)::

    python benchmarks/bench_conv.py
    python benchmarks/bench_conv.py --batch 64 --repeats 50
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import torch

SHAPES = ((28, 16), (14, 32), (7, 32), (28, 32))  # (side, channels)


def _time(fn, repeats: int, *args) -> float:
    """Mean ms per call of ``fn(*args)`` after one warm-up call (``fn`` blocks until done)."""
    fn(*args)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return (time.perf_counter() - t0) / repeats * 1e3


def _torch_fwd(m, x):
    with torch.no_grad():
        m(x)


def _torch_bwd(m, x):
    (m(x) ** 2).sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    b, n = args.batch, args.repeats

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    fwd = jax.jit(conv)
    grad = jax.jit(jax.grad(lambda x, w: (conv(x, w) ** 2).sum(), argnums=(0, 1)))
    print(f"batch {b}, jax {jax.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); ms per call")  # fmt: skip
    for side, c in SHAPES:
        rng = np.random.default_rng(0)
        x = jax.numpy.asarray(rng.standard_normal((b, side, side, c), np.float32))
        w = jax.numpy.asarray(0.1 * rng.standard_normal((3, 3, c, c), np.float32))
        jf = _time(lambda x, w: jax.block_until_ready(fwd(x, w)), n, x, w)
        jb = _time(lambda x, w: jax.block_until_ready(grad(x, w)), n, x, w)
        xt = torch.randn(b, c, side, side, requires_grad=True)
        m = torch.nn.Conv2d(c, c, 3, padding=1)
        tf = _time(_torch_fwd, n, m, xt)
        tb = _time(_torch_bwd, n, m, xt)
        print(f"{side:2d}x{side:<2d} C={c:2d}: jax fwd {jf:6.2f} fwd+bwd {jb:6.2f} | "
              f"torch fwd {tf:6.2f} fwd+bwd {tb:6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
