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
    parser.add_argument("--repeats", type=int, default=20, help="calls per timing")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timings (median)")
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
        f"({torch.get_num_threads()} threads); ms per call, median of {args.rounds} "
        "interleaved rounds; dW: forward + kernel gradient"
    )
    for side, c in SHAPES:
        rng = np.random.default_rng(0)
        x = jax.numpy.asarray(rng.standard_normal((b, side, side, c), np.float32))
        w = jax.numpy.asarray(0.1 * rng.standard_normal((3, 3, c, c), np.float32))
        xt = torch.randn(b, c, side, side, requires_grad=True)
        m = torch.nn.Conv2d(c, c, 3, padding=1)
        fns = {
            "fwd": lambda x, w: jax.block_until_ready(fwd(x, w)),
            "lax": lambda x, w: jax.block_until_ready(lax_grad(x, w)),
            "jaxdiff": lambda x, w: jax.block_until_ready(fast_grad(x, w)),
            "lax dW": lambda x, w: jax.block_until_ready(lax_dw(x, w)),
            "jaxdiff dW": lambda x, w: jax.block_until_ready(fast_dw(x, w)),
            "torch fwd": lambda x, w, m=m, xt=xt: _torch_fwd(m, xt),
            "torch": lambda x, w, m=m, xt=xt: _torch_bwd(m, xt),
        }
        times = {name: [] for name in fns}
        # Interleaved rounds (the machine's speed drifts), jax's variants first and then
        # PyTorch's: its OpenMP threads spin for a while after each call and would slow down
        # whatever ran next.
        for group in ([k for k in fns if not k.startswith("torch")], ["torch fwd", "torch"]):
            for _ in range(args.rounds):
                for name in group:
                    times[name].append(_time(fns[name], n, x, w))
        ms = {name: float(np.median(t)) for name, t in times.items()}
        tf, tb = ms["torch fwd"], ms["torch"]
        print(
            f"{side:2d}x{side:<2d} C={c:2d}: jax fwd {ms['fwd']:6.2f} | fwd+bwd lax "
            f"{ms['lax']:6.2f} jaxdiff {ms['jaxdiff']:6.2f} | dW lax {ms['lax dW']:6.2f} "
            f"jaxdiff {ms['jaxdiff dW']:6.2f} | torch fwd {tf:6.2f} fwd+bwd {tb:6.2f}"
        )


if __name__ == "__main__":
    main()
