"""PyTorch vs jaxdiff on the three tutorial recipes, timed alternately in fresh processes.

For each recipe the PyTorch port (``benchmarks/pytorch/torch_recipes.py``: eager, a Python
training loop, a Python DDPM loop) and jaxdiff (the code path the experiments run: ``Trainer``
+ ``fit``, and ``jaxdiff.samplers.sample``) run one after the other, torch, jax, torch, jax,
..., each measurement in a fresh subprocess, so that the peak resident memory (``ru_maxrss``)
is that run's own and no process inherits another's warm caches. No persistent XLA compilation
cache is used. Each run reports:

- ``first call``: PyTorch's first training step (its lazy initialisation; with
  ``--torch-compile`` the compilation) and jaxdiff's first compiled call(s) of ``fit``
  (compilation + K steps, K = ``trainer.steps_per_call``: 4 on CPU, 10 on GPU; when ``--steps``
  is not a multiple of K the remainder call is compiled here too, so the timed steps compile
  nothing, but that costs a second compilation: prefer multiples of 20);
- ``steady``: the time per step of ``--steps`` further steps (moons: of the rest of training),
  and examples/s (points/s for moons) = batch / time per step;
- moons only: ``total``, the whole training (every epoch, first call included) end to end;
- sampling (mnist): a first call of ``--sample-steps`` DDPM steps (jaxdiff: compilation + run),
  then a timed call; ms per step and the implied images/s of a 1000-step DDPM run;
- ``maxrss``: the process's peak resident memory (MiB; on a GPU also the device peak).

The summary gives median [min, max] over ``--repeats`` and the ratio torch / jax of the medians
(> 1: jaxdiff is faster). The two sides count their parameters and the runner asserts equality.

Recipes (``benchmarks/pytorch/torch_recipes.py`` lists their hyper-parameters, equal to the
experiments' defaults):

- ``moons``: ``experiments.toy2d`` (ConditionalMLP, batch 128, sigmoid T=100, Adam 1e-3, clip 1,
  EMA 0.9, antithetic t); ``--steps`` is the number of epochs (default: the full 1000, 78,000
  steps), timed end to end. jaxdiff streams stacks of K=100 host batches as toy2d does; an
  epoch count whose steps are not a multiple of 100 (e.g. 1) compiles the last, shorter stack
  inside the timed part, as the experiment would (50, 100, 1000 epochs do not).
- ``digits``: ``experiments.digits`` (improved_denoiser_8x8, 9.2M parameters, batch 32, linear
  T=1000, AdamW 2e-4 wd 0.01, clip 1, EMA 0.995) on sklearn's digits.
- ``mnist``: ``experiments.mnist`` preset "cpu" (unet_compact, 0.28M parameters, batch 32,
  100 warm-up steps, clip 1, EMA 0.995; PyTorch with the tutorial recipe the preset started
  from, linear schedule and Adam 1e-3, jaxdiff with the preset's cosine schedule and lr 2e-3;
  both train with L_simple: the preset's Min-SNR weighting is one scalar per example and costs
  the same) on 60,000 random 28x28x1 images (the step costs the same on any values; both sides
  hold the set in memory on the device), plus DDPM sampling with ``--sample-batch`` images.
- ``mnist_full`` (not in ``--recipe all``): preset "gpu" (unet_mnist, 6.47M parameters,
  dropout 0.1, batch 128, Adam 2e-4 with 1000 warm-up steps, EMA 0.9999), same data and
  sampling; for GPUs (a CPU step takes seconds).

Full measurements (from the repository root, ``pip install -e ".[bench]"``, on an otherwise
idle machine; on the project's 2-core CPU moons and digits take roughly 20-30 minutes each and
mnist, with its two 1000-step sampling calls per run, well over an hour)::

    python benchmarks/pytorch/bench_vs_torch.py --recipe moons --repeats 3 \\
        --json runs/vs_torch_moons.json
    python benchmarks/pytorch/bench_vs_torch.py --recipe digits --steps 40 --repeats 3 \\
        --json runs/vs_torch_digits.json
    python benchmarks/pytorch/bench_vs_torch.py --recipe mnist --steps 100 --repeats 3 \\
        --sample-steps 1000 --sample-batch 64 --json runs/vs_torch_mnist.json
    python benchmarks/pytorch/bench_vs_torch.py --recipe all --repeats 3 --torch-compile  # compiled

On a GPU (issue #4's pair: the GPU preset's ``unet_mnist``, batch 128, float32 -- TF32
convolutions on both sides by default -- and bfloat16 mixed precision; the peak is the device's
dense TFLOP/s for that precision, here an H100 SXM: 494.7 TF32, 989.4 bf16)::

    python benchmarks/pytorch/bench_vs_torch.py --recipe mnist_full --device cuda --steps 100 \
        --repeats 3 --sample-steps 250 --peak-tflops 494.7 --json runs/gpu_mnist_fp32.json
    python benchmarks/pytorch/bench_vs_torch.py --recipe mnist_full --device cuda --steps 100 \
        --repeats 3 --sample-steps 250 --dtype bfloat16 --peak-tflops 989.4

``--dtype bfloat16`` runs PyTorch's forward under ``torch.autocast`` and builds jaxdiff's U-Net
with ``dtype=jnp.bfloat16`` (float32 parameters, optimiser and loss on both sides).
``--peak-tflops`` adds the achieved model TFLOP/s (XLA's FLOP count of one forward + backward,
the same model on both sides) and the model FLOPs utilisation.

Quick smoke runs (minutes)::

    python benchmarks/pytorch/bench_vs_torch.py --recipe mnist --steps 4 --repeats 1 \\
        --sample-steps 4
    python benchmarks/pytorch/bench_vs_torch.py --recipe moons --steps 50 --repeats 1
    python benchmarks/pytorch/bench_vs_torch.py --recipe digits --steps 4 --repeats 1

CPU threads: PyTorch uses one OpenMP thread per core by default and XLA:CPU its own pool; both
defaults are kept (the "threads" field records PyTorch's). On a CPU shared with other jobs
PyTorch's spinning OpenMP threads suffer badly: on the project's 2-core machine at load average
~4.5 the moons step took 97 ms with 2 threads and 9 ms with ``--torch-threads 1``. Measure on an
idle machine; if it cannot be idle, report runs with ``--torch-threads 1`` beside the default.

``--device cpu`` forces both sides onto the CPU (``JAX_PLATFORMS=cpu``); ``--device cuda`` forces
both onto the GPU (``JAX_PLATFORMS=cuda``) and stops with an error when JAX has no GPU backend
(a CPU-only jaxlib), so a CPU timing is never reported as a GPU one; the default ``auto`` uses
CUDA for PyTorch when available and JAX's default backend.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE_NAMES = ("moons", "digits", "mnist", "mnist_full")
ALL_RECIPES = ("moons", "digits", "mnist")  # --recipe all: the three tutorial recipes
DEFAULT_STEPS = {"moons": 1000, "digits": 20, "mnist": 40, "mnist_full": 40}  # x20, not moons
IMAGE_RECIPES = ("digits", "mnist", "mnist_full")  # U-Nets: --dtype and FLOPs apply
MNIST_TRAIN_IMAGES = 60_000
RESULT_PREFIX = "RESULT "


# --------------------------------------------------------------------------------------------
# Workers (one measurement each, in a fresh process)


def _finish(result: dict) -> dict:
    result["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result["loadavg_end"] = os.getloadavg()[0]
    return result


def _steady(result: dict, batch: int) -> None:
    per_step = result["timed_s"] / result["timed_steps"] if result["timed_steps"] else float("nan")
    result["per_step_s"] = per_step
    result["items_per_s"] = batch / per_step


def torch_worker(args) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks" / "pytorch"))
    import torch
    import torch_recipes as tr

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    recipe = tr.RECIPES[args.recipe]
    autocast = torch.bfloat16 if args.dtype == "bfloat16" else None
    result = {
        "framework": "torch",
        "label": "torch.compile" if args.torch_compile else "torch eager",
        "version": torch.__version__,
        "device": device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg()[0],
    }

    if device == "cuda":  # TF32 is what "float32" means for convolutions on Ampere and later
        result["gpu"] = torch.cuda.get_device_name()
        result["tf32"] = {
            "cudnn": torch.backends.cudnn.allow_tf32,
            "matmul": torch.backends.cuda.matmul.allow_tf32,
        }

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    if args.phase == "sample":
        torch.manual_seed(args.seed)
        model = tr.build_model(recipe).to(device)
        model = torch.compile(model) if args.torch_compile else model
        betas = tr.make_betas(recipe.schedule, recipe.num_steps, recipe.beta_start, recipe.beta_end)
        shape = (args.sample_batch, recipe.example_shape[-1], *recipe.example_shape[:2])
        result["params"] = tr.count_params(model)
        result["setup_s"] = time.perf_counter() - t0
        times = []
        for _ in range(2):  # first call, timed call
            t0 = time.perf_counter()
            x = tr.ddpm_sample(
                model, betas, shape, steps=args.sample_steps, device=device, autocast=autocast
            )
            sync()
            times.append(time.perf_counter() - t0)
        result.update(first_s=times[0], first_steps=args.sample_steps, timed_s=times[1])
        result["timed_steps"] = args.sample_steps
        result["check"] = float(x.float().abs().mean())
        _steady(result, args.sample_batch)
    else:
        if args.recipe == "moons":
            data = tr.moons_points(10_000, seed=args.seed)
        elif args.recipe == "digits":
            data = tr.digits_images()
        else:  # mnist, mnist_full
            data = tr.random_images(MNIST_TRAIN_IMAGES, seed=args.seed)
        trainer = tr.TorchTrainer(
            recipe, data, device, compile=args.torch_compile, batch_size=args.batch,
            seed=args.seed, autocast=autocast,
        )  # fmt: skip
        batch = trainer.batch_size
        result["params"] = tr.count_params(trainer.model)
        result["batch"] = batch
        result["setup_s"] = time.perf_counter() - t0
        batches = trainer.batches()
        if args.recipe == "moons":
            total = args.steps * (len(data) // batch)  # --steps = epochs
            t0 = time.perf_counter()
            trainer.step(next(batches))
            sync()
            first = time.perf_counter() - t0
            loss = trainer.train(total - 1, batches)
            sync()
            result["total_s"] = time.perf_counter() - t0
            result.update(first_s=first, first_steps=1, timed_steps=total - 1)
            result["timed_s"] = result["total_s"] - first
            result["train_steps"] = total
        else:
            t0 = time.perf_counter()
            trainer.step(next(batches))
            sync()
            result.update(first_s=time.perf_counter() - t0, first_steps=1)
            trainer.train(2, batches)  # two more untimed warm-up steps
            sync()
            t0 = time.perf_counter()
            loss = trainer.train(args.steps, batches)
            sync()
            result.update(timed_s=time.perf_counter() - t0, timed_steps=args.steps)
        result["loss"] = float(loss)
        _steady(result, batch)
    if device == "cuda":
        result["device_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return _finish(result)


def model_flops(apply, params, shape, train: bool) -> float:
    """XLA's FLOP count of one model call on a batch of ``shape`` (``train``: forward and
    backward of a mean-squared loss, i.e. one training step's model work without the optimiser).

    The same number serves both frameworks: the models are the same layer for layer.
    """
    import jax
    import jax.numpy as jnp

    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    t = jax.ShapeDtypeStruct(shape[:1], jnp.int32)
    if train:
        fn = jax.grad(lambda p, x, t: jnp.mean(apply(p, x, t) ** 2))
    else:
        fn = apply
    analysis = jax.jit(fn).lower(params, x, t).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per device program
        analysis = analysis[0]
    return float(analysis["flops"])


def jax_worker(args) -> dict:
    sys.path.insert(0, str(ROOT))
    import dataclasses

    import jax
    import numpy as np
    from flax import nnx

    from jaxdiff.loop import fit
    from jaxdiff.models import count_params, make_model, split_model
    from jaxdiff.train import TrainConfig, Trainer

    if args.device == "cuda":  # a CPU timing must never be reported as a GPU one
        jax.config.update("jax_platforms", "cuda")
        try:
            backend = jax.default_backend()
        except Exception as err:  # jaxlib without CUDA: RuntimeError or AssertionError
            backend = f"none ({type(err).__name__}: {err})"
        if backend != "gpu":
            raise SystemExit(
                f"--device cuda, but JAX has no GPU backend: {backend}. Install the CUDA build "
                'of jaxlib (pip install -e ".[cuda12]" or ".[cuda13]") or run with --device cpu.'
            )
    dtype = jax.numpy.bfloat16 if args.dtype == "bfloat16" else None  # None: float32
    result = {
        "framework": "jax",
        "label": "jaxdiff",
        "version": jax.__version__,
        "device": f"{jax.default_backend()} x{jax.device_count()}",
        "dtype": args.dtype,
        "threads": os.cpu_count(),
        "loadavg_start": os.getloadavg()[0],
        "compilation_cache": jax.config.jax_compilation_cache_dir,
        "matmul_precision": jax.config.jax_default_matmul_precision,
    }
    t0 = time.perf_counter()

    def timed_fit(trainer, state, data, steps, batch):
        """First call(s) (compile) then ``steps`` timed steps, as experiments' fit runs them."""
        k = trainer.steps_per_call
        warm = k + steps % k if steps % k else k
        t0 = time.perf_counter()
        state, _ = fit(trainer, state, data, num_steps=warm, batch_size=batch, progress=False)
        result.update(first_s=time.perf_counter() - t0, first_steps=warm, steps_per_call=k)
        t0 = time.perf_counter()
        state, records = fit(
            trainer, state, data, num_steps=warm + steps, batch_size=batch, progress=False
        )
        result.update(timed_s=time.perf_counter() - t0, timed_steps=steps)
        result["loss"] = records[-1]["loss"]
        return state

    if args.recipe == "moons":
        from experiments import toy2d
        from jaxdiff import data as jdata

        config = toy2d.resolve(
            dataclasses.replace(toy2d.Toy2dConfig(), epochs=args.steps, progress=False)
        )
        points = jdata.make_points(config.dataset, config.num_points, seed=config.seed)
        schedule = toy2d.build_schedule(config)
        model = toy2d.ConditionalMLP(
            points.shape[1], config.num_timesteps, config.hidden, rngs=nnx.Rngs(config.seed)
        )
        _, params, apply = split_model(model)
        trainer = Trainer(apply, schedule, toy2d.train_config(config))  # as experiments.toy2d
        key = jax.random.key(config.seed)
        state = trainer.init_state(params, jax.random.fold_in(key, 0))
        result["params"] = count_params(params)
        result["batch"] = batch = config.batch_size
        result["setup_s"] = time.perf_counter() - t0
        total, k = config.train_steps, trainer.steps_per_call
        batches = toy2d.host_batches(points, batch, config.seed, 0, total, k)
        t0 = time.perf_counter()
        first_steps = min(k, total)
        state, records = fit(trainer, state, batches, num_steps=first_steps, batch_size=batch,
                             progress=False)  # fmt: skip
        first = time.perf_counter() - t0
        if total > first_steps:
            state, records = fit(trainer, state, batches, num_steps=total, batch_size=batch,
                                 progress=False)  # fmt: skip
        result["total_s"] = time.perf_counter() - t0
        result.update(first_s=first, first_steps=first_steps, steps_per_call=k)
        result.update(timed_s=result["total_s"] - first, timed_steps=total - first_steps)
        result["train_steps"] = total
        result["loss"] = records[-1]["loss"]
        if total % k:
            result["note"] = f"{total} steps: the last stack of {total % k} compiles in the timing"
        _steady(result, batch)
    elif args.recipe == "digits" and args.phase == "train":
        from experiments import digits
        from jaxdiff import data as jdata
        from jaxdiff.schedules import make_schedule

        config = digits.DigitsConfig()
        images, _ = jdata.load_digits(scale="unit")
        # As experiments.digits.main builds it (rbg init key: compile time of the init only).
        model = make_model(
            digits.MODELS[config.model], 1, 8, dtype=dtype,
            rngs=nnx.Rngs(jax.random.key(config.seed, impl="rbg")),
        )  # fmt: skip
        _, params, apply = split_model(model)
        if args.flops:
            result["model_flops"] = model_flops(
                apply, params, (args.batch or config.batch_size, 8, 8, 1), True
            )
        spec = digits.model_spec(digits.resolve(config))  # the experiment's training settings
        schedule = make_schedule(spec.schedule, spec.num_timesteps)
        trainer = Trainer(apply, schedule, spec.train)
        state = trainer.init_state(params, jax.random.fold_in(jax.random.key(config.seed), 0))
        data = trainer.put_data({"x": images})
        result["params"] = count_params(params)
        result["batch"] = batch = args.batch or config.batch_size
        result["setup_s"] = time.perf_counter() - t0
        timed_fit(trainer, state, data, args.steps, batch)
        _steady(result, batch)
    elif args.recipe in ("mnist", "mnist_full"):
        from experiments import mnist
        from jaxdiff.schedules import make_schedule

        preset = "cpu" if args.recipe == "mnist" else "gpu"
        config, _ = mnist.resolve(mnist.MnistConfig(preset=preset))
        # The experiment initialises with nnx.Rngs(seed); an rbg key only shortens the
        # (untimed) initialisation's compile on CPU, the step is the same.
        model = make_model(
            mnist.MODELS[config.model], 1, config.image_size, None, dtype=dtype,
            rngs=nnx.Rngs(jax.random.key(config.seed, impl="rbg")),
        )  # fmt: skip
        _, params, apply = split_model(model)
        schedule = make_schedule(config.schedule, config.num_timesteps)
        result["params"] = count_params(params)
        if args.flops:
            train = args.phase == "train"
            batch = (args.batch or config.batch_size) if train else args.sample_batch
            size = config.image_size
            result["model_flops"] = model_flops(apply, params, (batch, size, size, 1), train)
        if args.phase == "sample":
            from jaxdiff.samplers import DDPM, Loop, sample

            shape = (args.sample_batch, config.image_size, config.image_size, 1)
            result["setup_s"] = time.perf_counter() - t0
            times = []
            for seed in (1, 2):  # first call (compile), timed call
                t0 = time.perf_counter()
                out = sample(
                    apply, params, schedule, shape, jax.random.key(seed),
                    solver=DDPM(clip_x0=1.0), steps=args.sample_steps,
                    loop=Loop(chunk_size=mnist.SAMPLE_CHUNK),
                )  # fmt: skip
                jax.block_until_ready(out.samples)
                times.append(time.perf_counter() - t0)
            result.update(first_s=times[0], first_steps=args.sample_steps, timed_s=times[1])
            result["timed_steps"] = args.sample_steps
            result["check"] = float(np.abs(np.asarray(out.samples)).mean())
            _steady(result, args.sample_batch)
        else:
            trainer = Trainer(
                apply,
                schedule,
                TrainConfig(
                    learning_rate=config.learning_rate,
                    warmup_steps=config.warmup_steps,
                    ema_decay=config.ema_decay,
                    prediction=config.prediction,
                    steps_per_call=config.steps_per_call,
                ),
            )
            state = trainer.init_state(
                params, jax.random.fold_in(jax.random.PRNGKey(config.seed), 0)
            )
            rng = np.random.default_rng(args.seed)
            images = rng.uniform(-1.0, 1.0, (MNIST_TRAIN_IMAGES, 28, 28, 1)).astype(np.float32)
            data = trainer.put_data({"x": images})
            result["batch"] = batch = args.batch or config.batch_size
            result["setup_s"] = time.perf_counter() - t0
            timed_fit(trainer, state, data, args.steps, batch)
            _steady(result, batch)
    else:
        raise ValueError(f"no {args.phase} phase for recipe {args.recipe}")
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        result["device_peak_mib"] = stats["peak_bytes_in_use"] / 2**20
    return _finish(result)


# --------------------------------------------------------------------------------------------
# Driver


def run_worker(framework: str, recipe: str, phase: str, args) -> dict:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", framework, "--recipe", recipe,
        "--phase", phase, "--steps", str(args.steps_for[recipe]), "--seed", str(args.seed),
        "--sample-batch", str(args.sample_batch), "--sample-steps", str(args.sample_steps),
        "--device", args.device, "--dtype", args.dtype,
    ]  # fmt: skip
    if args.peak_tflops and recipe in IMAGE_RECIPES and framework == "jax":
        cmd.append("--flops")
    if args.batch and recipe != "moons":
        cmd += ["--batch", str(args.batch)]
    if args.torch_compile:
        cmd.append("--torch-compile")
    if args.torch_threads:
        cmd += ["--torch-threads", str(args.torch_threads)]
    env = dict(os.environ)
    if args.device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif args.device == "cuda":
        env["JAX_PLATFORMS"] = "cuda"
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{framework} worker for {recipe}/{phase} failed (rc {proc.returncode})")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["process_s"] = time.perf_counter() - start
    result.update(recipe=recipe, phase=phase)
    return result


def _fmt_range(values, scale=1.0, digits=1) -> str:
    vals = [v * scale for v in values if v == v]
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{min(vals):.{digits}f}, {max(vals):.{digits}f}]"


def summarize(results: list[dict], args) -> str:
    lines = []
    groups: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in results:
        groups.setdefault((r["recipe"], r["phase"]), {}).setdefault(r["framework"], []).append(r)
    for (recipe, phase), by_fw in groups.items():
        counts = {fw: {r["params"] for r in rs} for fw, rs in by_fw.items()}
        flat = set().union(*counts.values())
        lines.append("")
        head = f"### {recipe} / {phase}, {args.dtype}"
        if phase == "sample":
            head += f" (DDPM, batch {args.sample_batch}, {args.sample_steps} steps timed)"
        elif recipe == "moons":
            head += f" ({args.steps_for[recipe]} epochs, end to end)"
        else:
            head += f" ({args.steps_for[recipe]} timed steps)"
        lines.append(head)
        lines.append("")
        lines.append(
            "parameters: " + ", ".join(f"{fw} {sorted(c)[0]:,}" for fw, c in counts.items())
        )
        unit = "img/s" if phase == "sample" or recipe != "moons" else "points/s"
        cols = ["framework", "device", "first call (s)", "ms/step", unit]
        if recipe == "moons":
            cols.append("total (s)")
        if phase == "sample":
            cols[4] = "img/s, 1000-step DDPM"
        flops = [r["model_flops"] for rs in by_fw.values() for r in rs if "model_flops" in r]
        if flops:  # the same model on both sides: jaxdiff's XLA count serves both
            cols += ["model TFLOP/s", f"MFU (peak {args.peak_tflops:g} TFLOP/s)"]
        cols += ["maxrss (MiB)", "device peak (MiB)", "load avg"]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for rs in by_fw.values():
            if phase == "sample":
                # images/s of a whole 1000-step run: batch / (1000 x time per step)
                speed_s = _fmt_range([r["items_per_s"] / 1000.0 for r in rs], digits=3)
            else:
                speed_s = _fmt_range([r["items_per_s"] for r in rs])
            row = [
                rs[0]["label"] + f" {rs[0]['version']}",
                rs[0]["device"],
                _fmt_range([r["first_s"] for r in rs], digits=2),
                _fmt_range([r["per_step_s"] for r in rs], scale=1e3, digits=2),
                speed_s,
            ]
            if recipe == "moons":
                row.append(_fmt_range([r["total_s"] for r in rs]))
            if flops:
                achieved = [flops[0] / r["per_step_s"] / 1e12 for r in rs]
                row += [
                    _fmt_range(achieved, digits=1),
                    _fmt_range([a / args.peak_tflops for a in achieved], scale=100, digits=1)
                    + " %",
                ]
            row += [
                _fmt_range([r["maxrss_mib"] for r in rs], digits=0),
                _fmt_range([r.get("device_peak_mib", float("nan")) for r in rs], digits=0),
                _fmt_range([r["loadavg_start"] for r in rs], digits=1),
            ]
            lines.append("| " + " | ".join(row) + " |")
        if "torch" in by_fw and "jax" in by_fw:
            med = {fw: statistics.median(r["per_step_s"] for r in rs) for fw, rs in by_fw.items()}
            text = f"ratio torch / jax, steady time per step: {med['torch'] / med['jax']:.2f}"
            if recipe == "moons":
                tot = {fw: statistics.median(r["total_s"] for r in rs) for fw, rs in by_fw.items()}
                text += f"; total training time: {tot['torch'] / tot['jax']:.2f}"
            lines.append("")
            lines.append(text + " (> 1: jaxdiff faster)")
        notes = {r["note"] for rs in by_fw.values() for r in rs if "note" in r}
        lines += [f"note: {n}" for n in sorted(notes)]
        if flops:
            lines.append(
                f"model FLOPs per {'step (forward + backward)' if phase == 'train' else 'call'}: "
                f"{flops[0] / 1e9:.1f} GFLOP (XLA cost analysis)"
            )
        if len(flat) != 1:
            lines.append(f"PARAMETER COUNTS DIFFER: {counts}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--recipe",
        choices=(*RECIPE_NAMES, "all"),
        default="all",
        help="all: moons, digits, mnist (the CPU recipes); mnist_full: the GPU preset's U-Net",
    )
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per framework")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="moons: epochs (default 1000, the full run); digits/mnist: timed train steps "
        f"(default {DEFAULT_STEPS['digits']}/{DEFAULT_STEPS['mnist']})",
    )
    parser.add_argument("--batch", type=int, default=None, help="override digits/mnist batch")
    parser.add_argument("--sample-batch", type=int, default=64, help="mnist DDPM sample batch")
    parser.add_argument(
        "--sample-steps", type=int, default=1000, help="timed DDPM steps (0: no sampling)"
    )
    parser.add_argument("--torch-compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: PyTorch's, one per core; see the docstring)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="U-Net computation dtype: bfloat16 = torch.autocast / jaxdiff UNet(dtype=bf16)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak TFLOP/s for this dtype: adds model TFLOP/s and MFU columns",
    )
    parser.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write every run's record here")
    parser.add_argument("--worker", choices=("torch", "jax"), help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("train", "sample"), default="train",
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if args.worker:
        if args.recipe == "all":
            parser.error("a worker runs one recipe")
        args.steps = DEFAULT_STEPS[args.recipe] if args.steps is None else args.steps
        fn = torch_worker if args.worker == "torch" else jax_worker
        print(RESULT_PREFIX + json.dumps(fn(args)), flush=True)
        return
    if args.repeats < 1 or (args.steps is not None and args.steps < 1) or args.sample_steps < 0:
        parser.error("--repeats and --steps must be >= 1, --sample-steps >= 0")
    if args.sample_steps > 1000:
        parser.error("--sample-steps must be <= 1000 (the schedule's T)")
    recipes = ALL_RECIPES if args.recipe == "all" else (args.recipe,)
    if args.dtype != "float32" and "moons" in recipes:
        parser.error("--dtype bfloat16 applies to the U-Net recipes (digits, mnist, mnist_full)")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        parser.error(f"--peak-tflops must be > 0, got {args.peak_tflops}")
    args.steps_for = {r: args.steps or DEFAULT_STEPS[r] for r in recipes}
    print(
        f"bench_vs_torch: recipes {recipes}, repeats {args.repeats}, steps {args.steps_for}, "
        f"sample batch {args.sample_batch} x {args.sample_steps} steps, device {args.device}, "
        f"cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results = []
    for recipe in recipes:
        sampled = recipe in ("mnist", "mnist_full") and args.sample_steps
        phases = ["train"] + (["sample"] if sampled else [])
        for phase in phases:
            for rep in range(args.repeats):
                for fw in ("torch", "jax"):  # alternate
                    r = run_worker(fw, recipe, phase, args)
                    results.append(r)
                    print(
                        f"  {recipe}/{phase} #{rep + 1} {r['label']:13s} {r['device']:8s} "
                        f"params {r['params']:,}  first {r['first_s']:.2f}s  "
                        f"step {r['per_step_s'] * 1e3:.2f} ms  {r['items_per_s']:.1f}/s"
                        + (f"  total {r['total_s']:.1f}s" if "total_s" in r else "")
                        + f"  maxrss {r['maxrss_mib']:.0f} MiB  (process {r['process_s']:.0f}s,"
                        f" load {r['loadavg_start']:.1f})",
                        flush=True,
                    )
    text = summarize(results, args)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    mismatched = [
        (rec, ph)
        for rec, ph in {(r["recipe"], r["phase"]) for r in results}
        if len({r["params"] for r in results if (r["recipe"], r["phase"]) == (rec, ph)}) != 1
    ]
    assert not mismatched, f"parameter counts of torch and jaxdiff differ for {mismatched}"


if __name__ == "__main__":
    main()
