"""One 3x3 convolution, forward and forward+backward: XLA:CPU (jax) versus PyTorch eager.

The MNIST U-Nets spend most of their step in 3x3 convolutions; this isolates one at the shapes
of ``unet_compact`` (batch 32, 28x28/14x14/7x7, 16-32 channels) to show where the gap to
PyTorch (oneDNN) comes from. Columns: ``lax`` is ``jax.lax.conv_general_dilated`` with XLA's
own gradients, ``jaxdiff`` is :func:`jaxdiff.models.conv.conv_general_dilated` (the same
forward pass, the kernel gradient as matmuls on CPU; what the U-Nets use), ``dW`` times the
kernel gradient alone. Needs the ``bench`` extra (``pip install -e ".[bench]"``).

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

from jaxdiff.models.conv import conv_general_dilated

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

    def conv(x, w, impl=jax.lax.conv_general_dilated):
        return impl(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def grads(impl, argnums):
        return jax.jit(jax.grad(lambda x, w: (conv(x, w, impl) ** 2).sum(), argnums=argnums))

    fwd = jax.jit(conv)
    lax_grad, fast_grad = (
        grads(jax.lax.conv_general_dilated, (0, 1)),
        grads(conv_general_dilated, (0, 1)),
    )
    lax_dw, fast_dw = grads(jax.lax.conv_general_dilated, 1), grads(conv_general_dilated, 1)
    print(
        f"batch {b}, jax {jax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); ms per call; dW: forward + kernel gradient"
    )
    for side, c in SHAPES:
        rng = np.random.default_rng(0)
        x = jax.numpy.asarray(rng.standard_normal((b, side, side, c), np.float32))
        w = jax.numpy.asarray(0.1 * rng.standard_normal((3, 3, c, c), np.float32))
        ms = {}
        for name, fn in (("fwd", fwd), ("lax", lax_grad), ("jaxdiff", fast_grad),
                         ("lax dW", lax_dw), ("jaxdiff dW", fast_dw)):  # fmt: skip
            ms[name] = _time(lambda x, w, fn=fn: jax.block_until_ready(fn(x, w)), n, x, w)
        xt = torch.randn(b, c, side, side, requires_grad=True)
        m = torch.nn.Conv2d(c, c, 3, padding=1)
        tf = _time(_torch_fwd, n, m, xt)
        tb = _time(_torch_bwd, n, m, xt)
        print(
            f"{side:2d}x{side:<2d} C={c:2d}: jax fwd {ms['fwd']:6.2f} | fwd+bwd lax "
            f"{ms['lax']:6.2f} jaxdiff {ms['jaxdiff']:6.2f} | dW lax {ms['lax dW']:6.2f} "
            f"jaxdiff {ms['jaxdiff dW']:6.2f} | torch fwd {tf:6.2f} fwd+bwd {tb:6.2f}"
        )


if __name__ == "__main__":
    main()
