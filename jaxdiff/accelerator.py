"""Is the accelerator that this machine has the one JAX runs on?

``pip install jaxdiff`` brings a CPU-only jaxlib; an NVIDIA GPU needs the CUDA plugin of the
``cuda12`` / ``cuda13`` extra (a TPU VM the ``tpu`` extra). Without it JAX falls back to the CPU
silently, and a run sized for a GPU crawls. :func:`unused_gpu_message` says so before work starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import jax

__all__ = ["nvidia_gpu_visible", "unused_gpu_message"]

INSTALL_HINT = (
    'pip install -e ".[cuda12]" (CUDA 12 drivers) or pip install -e ".[cuda13]" (CUDA 13), in the '
    "same environment"
)


def nvidia_gpu_visible(
    device_files: Sequence[str] = ("/dev/nvidia0",), smi: str = "nvidia-smi"
) -> bool:
    """Whether an NVIDIA GPU is visible: ``/dev/nvidia0`` exists, or ``nvidia-smi -L`` lists one.

    Args:
      device_files: device nodes whose existence shows a GPU (override in tests).
      smi: the ``nvidia-smi`` program to ask (a name on ``PATH`` or a path).
    """
    if any(os.path.exists(p) for p in device_files):
        return True
    exe = shutil.which(smi)
    if exe is None:
        return False
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def unused_gpu_message(backend: str | None = None, **probe) -> str | None:
    """One warning line when an NVIDIA GPU is visible but JAX's backend is the CPU, else ``None``.

    Args:
      backend: JAX's backend (default ``jax.default_backend()``).
      **probe: passed to :func:`nvidia_gpu_visible`.
    """
    backend = backend or jax.default_backend()
    if backend != "cpu" or not nvidia_gpu_visible(**probe):
        return None
    return (
        "warning: an NVIDIA GPU is visible on this machine, but JAX runs on the CPU (the installed "
        f"jaxlib {jax.__version__} has no CUDA support). To use the GPU: {INSTALL_HINT}. "
        "Continuing on the CPU."
    )
