"""The duration estimate printed at the start of a run."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments.mnist.config import MnistConfig, Preset

# Sustained throughput assumed for a duration estimate from FLOPs (no measured step time yet).
ASSUMED_TFLOPS = 100.0


def duration_estimate(config: MnistConfig, preset: Preset, trainer, state) -> str:
    """Measured per-step time where the preset has one, else the training FLOPs (XLA's count
    of one compiled step) at :data:`ASSUMED_TFLOPS`, said to be an estimate."""
    if preset.seconds_per_step is not None and preset.fixed_seconds is not None:
        seconds = preset.fixed_seconds + preset.seconds_per_step * config.train_steps * (
            config.batch_size / preset.defaults["batch_size"]
        )
        machine = f"measured on the {config.preset} preset's machine"
        return f"expected duration ~{seconds / 60:.0f} min ({machine})"
    shape = (config.batch_size, config.image_size, config.image_size, 1)
    batch = {"x": jax.ShapeDtypeStruct(shape, jnp.float32)}
    if config.class_conditional:
        batch["labels"] = jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)
    analysis = jax.jit(trainer.train_step).trace(state, batch).lower().cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per program
        analysis = analysis[0]
    total = float(analysis["flops"]) * config.train_steps
    seconds = total / (ASSUMED_TFLOPS * 1e12)
    amount = f"{total / 1e15:.1f} PFLOP" if total >= 1e15 else f"{total / 1e12:.1f} TFLOP"
    duration = f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.1f} s"
    return (
        f"training is {amount} (XLA's count), ~{duration} at {ASSUMED_TFLOPS:.0f} TFLOP/s "
        "sustained: an estimate, this preset's time is not measured yet"
    )
