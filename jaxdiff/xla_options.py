"""The XLA compiler options jaxdiff compiles its training steps and samplers with.

On CPU, XLA (jaxlib 0.10) hands matrix products and the elementwise work around them to
YNNPACK ("YNN fusions"), and some 3x3 convolutions too. On this project's 2-core CPU XLA's
own kernels ran jaxdiff's networks as fast or faster (``benchmarks/RESULTS.md``,
2026-12-01; one process, alternating rounds): the 2-D moons training step 0.93 -> 0.77 ms
(the 1000-epoch recipe 5.2x PyTorch eager instead of 4.4x), the CPU preset's MNIST U-Net
294 -> 266 ms per training step and 188 -> 103 ms per DDPM sampling step at batch 64. So
:class:`jaxdiff.train.Trainer` and :func:`jaxdiff.samplers.sample` compile with YNNPACK off,
per executable (``jax.jit(..., compiler_options=...)``): nothing global changes, every other
program in the process keeps XLA's defaults, and a user who names the flag in ``XLA_FLAGS``
(e.g. ``--xla_cpu_experimental_ynn_fusion_type=individual_dot``) keeps theirs.
GPUs and TPUs get no options. Results can differ from XLA's defaults in float32 rounding
(a different summation order inside the products).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "DETERMINISTIC_FLAG",
    "YNN_FLAG",
    "compiler_options",
    "enable_compilation_cache",
    "enable_deterministic_ops",
    "jit",
]

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
_CPU_OPTIONS = {YNN_FLAG: ""}  # an empty list of fusion types: YNNPACK does nothing
DETERMINISTIC_FLAG = "xla_gpu_deterministic_ops"


@functools.cache
def _cpu_options_supported() -> bool:
    """Whether this jaxlib's CPU compiler accepts :data:`YNN_FLAG` (older ones do not)."""
    try:
        fn = jax.jit(lambda x: x + 1, compiler_options=_CPU_OPTIONS)
        fn.lower(jnp.zeros((), jnp.float32)).compile()
    except Exception:  # an unknown option (or not a CPU backend): compile with the defaults
        return False
    return True


def compiler_options(platform: str | None = None) -> dict[str, str] | None:
    """XLA options for a jaxdiff program compiled for ``platform`` (default: JAX's default).

    ``{"xla_cpu_experimental_ynn_fusion_type": ""}`` on CPU (module docstring); ``None``
    (XLA's defaults) on other platforms, when ``XLA_FLAGS`` already sets that flag, or when
    this jaxlib does not know it.
    """
    platform = jax.default_backend() if platform is None else platform
    if platform != "cpu" or YNN_FLAG in os.environ.get("XLA_FLAGS", ""):
        return None
    return dict(_CPU_OPTIONS) if _cpu_options_supported() else None


def jit(fun: Callable, *, platform: str | None = None, **kwargs: Any) -> Callable:
    """``jax.jit(fun, compiler_options=compiler_options(platform), **kwargs)``."""
    return jax.jit(fun, compiler_options=compiler_options(platform), **kwargs)


def enable_compilation_cache(
    cache_dir: str | os.PathLike | None = None, *, min_compile_seconds: float = 1.0
) -> Path | None:
    """Keep compiled programs on disk so that a second run does not compile them again.

    Sets JAX's persistent compilation cache to ``<cache_dir>/xla`` (default cache root:
    ``$JAXDIFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxdiff`` or ``~/.cache/jaxdiff``) for
    programs that took at least ``min_compile_seconds`` to compile. A cache folder already
    configured (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept as it is. On a GPU or
    TPU this saves the minutes the U-Net's training step and sampler take to compile; the
    executables are the same, so results do not change.

    Not in a multi-process run on CPUs: there (JAX 0.12, gloo collectives) a process that loads
    the training step from the cache and one that compiles it afresh (cache keys differ between
    processes, and only process 0 writes entries) deadlock in their first collective, so every
    process compiles.

    Returns:
      the cache folder in use, or ``None`` when it cannot be created or is not used (then
      nothing is cached).
    """
    from jaxdiff._paths import resolve_cache_dir

    if jax.distributed.is_initialized() and jax.default_backend() == "cpu":
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    folder = resolve_cache_dir(cache_dir) / "xla"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    return folder


def enable_deterministic_ops() -> str:
    """Make every GPU program of this process bitwise reproducible: XLA's deterministic ops.

    Adds ``--xla_gpu_deterministic_ops=true`` to ``XLA_FLAGS`` (unless it names the flag
    already): XLA:GPU then picks only deterministic cuDNN/cuBLAS algorithms and sorts instead of
    using atomics, so a rerun with the same seed gives the same bits, at some cost in speed.
    CPU programs are deterministic without it and ignore it. It is a process-wide setting
    that XLA reads once, when JAX starts its backend: call it first thing, before any
    computation (the experiments' ``--deterministic`` does).

    Returns:
      the ``XLA_FLAGS`` value now in effect.

    Raises:
      RuntimeError: JAX's backend has already started (the flag would be ignored).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if DETERMINISTIC_FLAG in flags:
        return flags
    try:  # JAX's own (private) record of whether the backend started
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:  # a JAX without it: the flag is set unchecked
        backends_are_initialized = None
    if backends_are_initialized is not None and backends_are_initialized():
        raise RuntimeError(
            "enable_deterministic_ops() was called after JAX started its backend, so XLA would "
            "ignore it; call it before any JAX computation, or start the process with "
            f"XLA_FLAGS=--{DETERMINISTIC_FLAG}=true"
        )
    os.environ["XLA_FLAGS"] = f"{flags} --{DETERMINISTIC_FLAG}=true".strip()
    return os.environ["XLA_FLAGS"]
