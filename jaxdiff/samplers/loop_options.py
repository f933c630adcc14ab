"""How :func:`jaxdiff.samplers.sample` structures its loop on each backend by default."""

from __future__ import annotations

import jax

__all__ = ["LOOP_DEFAULTS", "default_loop_options"]

# (steps_per_call, unroll) of sample() by backend; see default_loop_options for the measurements.
LOOP_DEFAULTS: dict[str, tuple[int | None, int | bool]] = {
    "cpu": (4, True),
    "gpu": (None, 1),
    "tpu": (None, 1),
}


def default_loop_options(backend: str | None = None) -> tuple[int | None, int | bool]:
    """``(steps_per_call, unroll)`` that :func:`jaxdiff.samplers.sample` uses on ``backend``.

    ``backend`` defaults to ``jax.default_backend()``; unknown backends get the GPU choice.

    - CPU: ``(4, True)``, a Python loop over fully unrolled scans of 4 steps. Measured with
      ``benchmarks/bench_samplers.py`` on this project's shared 2-core CPU (jax 0.10.2, DDPM,
      timed calls interleaved, medians): U-Net base 16 at batch 16, Python loop of jitted steps
      110 ms/step, one rolled scan 109, rolled ``unroll=4`` 110, unrolled chunks of 10 steps
      99, of 4 steps 95; ``unet_mnist_small`` at batch 64, loop 1064 ms/step, rolled scan 1105,
      chunks of 4 1051. So the unrolled chunks are never slower than the loop while the rolled
      scan can be (the training-engine issue measured a rolled conv-net scan several times
      slower). Compile time grows with the chunk length (first call 14 s vs 10 s for the loop
      in the first setting), so it stays small, as in
      :func:`jaxdiff.train.default_scan_options`.
    - GPU, TPU: ``(None, 1)``, the whole reverse process in one rolled ``lax.scan`` (compile
      time independent of the number of steps, no per-step dispatch).
    """
    backend = jax.default_backend() if backend is None else backend
    return LOOP_DEFAULTS.get(backend, LOOP_DEFAULTS["gpu"])
