"""One-shot GPU check: what the gpu preset costs on the accelerator at hand, in one run.

Run it on the GPU machine the day one is at hand (about 10 minutes with the defaults)::

    python benchmarks/gpu_check.py --out gpu_check/

It prints the environment, stops unless JAX's backend is a GPU, then measures for the gpu
preset's U-Net (``experiments.mnist``, batch 128, the rolled K=10 training loop):

- the training step in float32 and in bfloat16 (compute; parameters stay float32): compile time,
  median time per step, examples/s, XLA's FLOP count of one step, model FLOPs utilisation
  against ``--peak-tflops`` (default: the device's dense peak for that dtype when it is in
  :data:`PEAK_TFLOPS`), peak device memory;
- whether a rerun of 10 training steps from the same state and data is bitwise identical;
- DPM-Solver++ on 20 steps against DDPM on 250 steps (``--dpm-steps``, ``--ddpm-steps``):
  seconds for ``--sample-batch`` images;
- ``python -m experiments.mnist --preset gpu`` for ``--experiment-steps`` steps, then the same
  command with ``--resume`` to twice as many (wall time, Frechet distance of its samples).

It writes ``gpu_check.json`` (every number) and ``gpu_check.md`` (a table for
``benchmarks/RESULTS.md``) to ``--out``. The experiment needs MNIST: a prepared copy through
``TFDS_DATA_DIR``, the IDX files through ``JAXDIFF_MNIST_URL``, or a filled ``JAXDIFF_CACHE_DIR``.

Smoke test on a CPU (what the test suite runs)::

    python benchmarks/gpu_check.py --allow-cpu --model tiny --batch 8 --steps 2 \\
        --sample-batch 2 --dpm-steps 2 --ddpm-steps 3 --dtypes float32 --skip-experiment \\
        --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from experiments import mnist  # noqa: E402
from jaxdiff.samplers import sample  # noqa: E402
from jaxdiff.train import Trainer  # noqa: E402

# Dense peak TFLOP/s by device kind (vendor data sheets; float32 means TF32 tensor cores, which
# XLA uses for float32 convolutions and matrix products by default on these GPUs).
PEAK_TFLOPS = {
    "H200": {"float32": 494.7, "bfloat16": 989.4},
    "H100": {"float32": 494.7, "bfloat16": 989.4},
    "A100": {"float32": 156.0, "bfloat16": 312.0},
}


def environment() -> dict:
    """Versions, devices and flags: what a number in the report was measured with."""
    smi = shutil.which("nvidia-smi")
    gpus = ""
    if smi:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        gpus = out.stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()],
        "nvidia_smi": gpus,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
    }


def _peak(dtype: str, override: float | None) -> float | None:
    if override:
        return override
    kind = jax.devices()[0].device_kind
    for name, peaks in PEAK_TFLOPS.items():
        if name in kind:
            return peaks[dtype]
    return None


def _peak_memory_mib() -> float | None:
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def _setup(args, dtype: str):
    """The gpu preset's model, Trainer (its own loop options) and data on the device."""
    config, _ = mnist.resolve(
        mnist.MnistConfig(preset="gpu", model=args.model, batch_size=args.batch, dtype=dtype),
        "gpu",
    )
    apply, params, schedule, train_config = mnist.build(config)
    trainer = Trainer(apply, schedule, train_config)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(max(4 * args.batch, 512), 28, 28, 1)).astype(np.float32)
    data = {"x": x}
    if config.class_conditional:  # the preset's model takes the digit (random labels here)
        data["labels"] = rng.integers(0, 10, size=len(x)).astype(np.int32)
    return config, apply, params, schedule, trainer, trainer.put_data(data)


def train_step_timing(args, setup, dtype: str) -> dict:
    config, _, params, _, trainer, data = setup
    k = trainer.steps_per_call
    state = trainer.init_state(params, 0)
    batch = {"x": jax.ShapeDtypeStruct((args.batch, 28, 28, 1), jnp.float32)}
    if config.class_conditional:
        batch["labels"] = jax.ShapeDtypeStruct((args.batch,), jnp.int32)
    analysis = jax.jit(trainer.train_step).trace(state, batch).lower().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list | tuple) else analysis
    flops = float(analysis["flops"])
    start = time.perf_counter()
    state, metrics = trainer.steps_on_data(state, data, args.batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    calls = max(1, args.steps // k)
    per_step = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            state, metrics = trainer.steps_on_data(state, data, args.batch)
        jax.block_until_ready(metrics)
        per_step.append((time.perf_counter() - start) / (calls * k))
    step_s = statistics.median(per_step)
    peak = _peak(dtype, args.peak_tflops)
    achieved = flops / step_s / 1e12
    return {
        "dtype": dtype,
        "model": config.model,
        "batch": args.batch,
        "steps_per_call": k,
        "compile_and_first_call_s": round(compile_s, 2),
        "step_ms": round(step_s * 1e3, 3),
        "examples_per_s": round(args.batch / step_s, 1),
        "step_gflop": round(flops / 1e9, 2),
        "model_tflops": round(achieved, 2),
        "mfu": None if peak is None else round(achieved / peak, 4),
        "peak_tflops": peak,
        "peak_memory_mib": _peak_memory_mib(),
        "final_loss": float(np.asarray(metrics["loss"])[-1]),
    }


def bitwise_rerun(args, setup) -> dict:
    """Ten steps from the same state and data, twice: the same bits?"""
    _, _, params, _, trainer, data = setup
    finals = []
    for _ in range(2):
        state = trainer.init_state(params, 0)
        for _ in range(max(1, 10 // trainer.steps_per_call)):
            state, _ = trainer.steps_on_data(state, data, args.batch)
        finals.append([np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(state)])
    same = all(np.array_equal(a, b) for a, b in zip(*finals, strict=True))
    return {"bitwise_identical_10_steps": bool(same)}


def sampling_timing(args, setup) -> dict:
    _, apply, params, schedule, _, _ = setup
    out = {}
    shape = (args.sample_batch, 28, 28, 1)
    for sampler, steps in (("dpm++", args.dpm_steps), ("ddpm", args.ddpm_steps)):

        def run(sampler=sampler, steps=steps):
            key = jax.random.key(0)
            result = sample(apply, params, schedule, shape, key, solver=sampler, steps=steps)
            result.samples.block_until_ready()

        start = time.perf_counter()
        run()
        first = time.perf_counter() - start
        start = time.perf_counter()
        run()
        out[f"{sampler}_{steps}"] = {
            "first_call_s": round(first, 2),
            "seconds": round(time.perf_counter() - start, 3),
            "images": args.sample_batch,
        }
    return out


def experiment(args, out: Path) -> dict:
    run = out / "mnist_gpu_run"
    base = [sys.executable, "-m", "experiments.mnist", "--preset", "gpu", "--model", args.model,
            "--out", str(run), "--no-progress"]  # fmt: skip
    result = {}
    for label, extra in (
        ("first", ["--train-steps", str(args.experiment_steps), "--overwrite"]),
        ("resumed", ["--train-steps", str(2 * args.experiment_steps), "--resume"]),
    ):
        start = time.perf_counter()
        proc = subprocess.run([*base, *extra], cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode:
            return {label: {"error": proc.stderr.strip().splitlines()[-1:], "seconds": seconds}}
        metrics = json.loads((run / "metrics.json").read_text())
        evaluation = metrics.get("evaluation") or {}
        result[label] = {
            "seconds": round(seconds, 1),
            "train_steps": metrics["train_steps"],
            "steps_per_second": metrics.get("steps_per_second"),
            "fid": evaluation.get("fid"),
            "num_samples": evaluation.get("num_samples"),
        }
    return result


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"### GPU check, {env['date']}: {', '.join(sorted(set(env['devices'])))}, jax {env['jax']}",
        "",
        "Command: `python benchmarks/gpu_check.py " + " ".join(report["argv"]) + "`",
        "",
        "| dtype | model | batch | compile + first call (s) | ms/step | examples/s | GFLOP/step "
        "| model TFLOP/s | MFU | peak memory (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["train"]:
        lines.append(
            f"| {row['dtype']} | {row['model']} | {row['batch']} | "
            f"{row['compile_and_first_call_s']} | {row['step_ms']} | {row['examples_per_s']} | "
            f"{row['step_gflop']} | {row['model_tflops']} | {row['mfu']} | "
            f"{row['peak_memory_mib']} |"
        )
    lines += ["", f"Bitwise rerun of 10 steps: {report['rerun']['bitwise_identical_10_steps']}."]
    for name, s in report["sampling"].items():
        lines.append(f"Sampling {name}: {s['seconds']} s for {s['images']} images.")
    for label, e in report.get("experiment", {}).items():
        lines.append(f"experiments.mnist --preset gpu ({label}): {e}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check"))
    parser.add_argument("--model", default="full", choices=sorted(mnist.MODELS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per repeat")
    parser.add_argument("--sample-batch", type=int, default=256)
    parser.add_argument("--dpm-steps", type=int, default=20)
    parser.add_argument("--ddpm-steps", type=int, default=250)
    parser.add_argument(
        "--dtypes", nargs="+", choices=("float32", "bfloat16"), default=["float32", "bfloat16"]
    )
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--experiment-steps", type=int, default=2000)
    parser.add_argument("--skip-experiment", action="store_true")
    parser.add_argument("--allow-cpu", action="store_true", help="smoke-test on a CPU")
    args = parser.parse_args(argv)
    env = environment()
    print(json.dumps(env, indent=2), flush=True)
    if env["backend"] != "gpu" and not args.allow_cpu:
        raise SystemExit(
            f"gpu_check: JAX's backend is {env['backend']!r}, not a GPU. Install the CUDA build "
            '(pip install -e ".[cuda12]") on the GPU machine, or pass --allow-cpu to smoke-test.'
        )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"argv": list(argv if argv is not None else sys.argv[1:]), "environment": env}
    f32 = _setup(args, "float32")
    report["train"] = [
        train_step_timing(args, f32 if dtype == "float32" else _setup(args, dtype), dtype)
        for dtype in args.dtypes
    ]
    report["rerun"] = bitwise_rerun(args, f32)
    report["sampling"] = sampling_timing(args, f32)
    if not args.skip_experiment:
        report["experiment"] = experiment(args, args.out)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report), flush=True)
    return report


if __name__ == "__main__":
    main()
