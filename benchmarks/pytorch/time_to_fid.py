"""Time to quality: training wall time until FID-MNIST falls below a threshold, PyTorch vs jaxdiff.

Three recipes, each trained on the real MNIST training set (60,000 images in [-1, 1]) in its own
process, run one after the other:

- ``torch``: the PyTorch port of the tutorial recipe that ``experiments.mnist``'s CPU preset
  started from (``benchmarks/pytorch/torch_recipes.py`` recipe "mnist": the 0.28M-parameter compact
  U-Net, batch 32, linear schedule T=1000, L_simple, Adam 1e-3 with 100 warm-up steps, clip 1,
  EMA 0.995), eager, the tutorials' Python training loop;
- ``jax-tutorial``: the same recipe in jaxdiff (``experiments.mnist``'s CPU preset with
  ``--schedule linear --loss-weighting simple``), so the two differ only in the framework;
- ``jax-default``: ``experiments.mnist``'s CPU preset as it is (the recipe the main job runs).

Training runs in segments of ``--eval-every`` steps; only the training is timed (synchronised
after each segment; PyTorch's first step and jaxdiff's compilation are included, data loading,
model initialisation and evaluation are not). After each segment the EMA weights are kept.
When training is done every snapshot is sampled the same way (DDPM on 25 respaced "trailing"
steps, x0 clipped to [-1, 1], ``--num-samples`` images, a fixed seed; PyTorch samples with its
own Python loop, ``torch_recipes.ddpm_sample``) and scored with
:func:`jaxdiff.evaluation.evaluate_samples` (the Frechet distance in the feature space of the
cached MNIST classifier). FID at 256 samples is biased upwards against the 1,000-sample numbers
of the README: compare the recipes with each other.

Run (from the repository root, ``pip install -e ".[bench]"``, MNIST via ``TFDS_DATA_DIR``; on
the project's 2-core CPU ``--recipe torch jax-default --steps 1600 --eval-every 400`` took 25
minutes on 2026-12-01, so the three recipes at 2,400 steps need roughly an hour)::

    python benchmarks/pytorch/time_to_fid.py --recipe torch jax-tutorial jax-default --steps 2400 \\
        --eval-every 300 --threshold 100 70 --json runs/time_to_fid.json

Each recipe runs in a fresh subprocess (``--worker``), so no process inherits another's threads
or caches; the summary prints every snapshot's (step, training seconds, FID) per recipe, and
the training seconds at which each recipe's FID first fell below each ``--threshold``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # jaxdiff, experiments

import numpy as np

RECIPES = ("torch", "jax-tutorial", "jax-default")
SAMPLE_STEPS = 25


def _fid(images: np.ndarray, cache_dir: str | None) -> tuple[float, float]:
    from jaxdiff.evaluation import evaluate_samples

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "only N samples": compare, not report
        m = evaluate_samples(images, "mnist", cache_dir=cache_dir)["metrics"]
    return float(m["fid"]["samples"]), float(m["classifier_score"]["samples"])


def _mnist(data_dir: str | None) -> np.ndarray:
    from jaxdiff import data as jdata

    x, _labels = jdata.load_mnist("train", data_dir=data_dir)
    return x  # (60000, 28, 28, 1) float32 in [-1, 1]


def torch_worker(args) -> dict:
    import torch
    import torch_recipes as tr  # benchmarks/pytorch/ is on sys.path when this file runs

    torch.manual_seed(args.seed)
    recipe = tr.RECIPES["mnist"]
    trainer = tr.TorchTrainer(recipe, _mnist(args.data_dir), seed=args.seed)
    batches = trainer.batches()
    snapshots, seconds = [], 0.0
    for step in range(args.eval_every, args.steps + 1, args.eval_every):
        start = time.perf_counter()
        loss = trainer.train(args.eval_every, batches)
        float(loss)  # synchronise
        seconds += time.perf_counter() - start
        ema_model = copy.deepcopy(trainer.model)
        trainer.ema.copy_to(ema_model)
        snapshots.append((step, seconds, ema_model))
        print(f"torch: step {step}, {seconds:.1f} s of training", flush=True)
    betas = tr.make_betas(recipe.schedule, recipe.num_steps, recipe.beta_start, recipe.beta_end)
    rows = []
    for step, secs, model in snapshots:
        gen = torch.Generator().manual_seed(args.seed)
        x = tr.ddpm_sample(model, betas, (args.num_samples, 1, 28, 28), steps=SAMPLE_STEPS,
                           generator=gen)  # fmt: skip
        images = np.clip((x.permute(0, 2, 3, 1).numpy() + 1.0) / 2.0, 0.0, 1.0)
        fid, score = _fid(images.astype(np.float32), args.cache_dir)
        rows.append({"step": step, "train_seconds": secs, "fid": fid, "classifier_score": score})
    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}


def jax_worker(args, recipe: str) -> dict:
    import jax

    from experiments import mnist
    from jaxdiff.samplers import DDPM, Loop, sample
    from jaxdiff.train import Trainer, eval_params

    overrides = (
        {"schedule": "linear", "loss_weighting": "simple"} if recipe == "jax-tutorial" else {}
    )
    config, _ = mnist.resolve(mnist.MnistConfig(preset="cpu", seed=args.seed, **overrides))
    apply, params, schedule, train_config = mnist.build(config)
    trainer = Trainer(apply, schedule, train_config)
    state = trainer.init_state(params, config.seed)
    data = trainer.put_data({"x": _mnist(args.data_dir)})
    k = trainer.steps_per_call
    if args.eval_every % k:
        raise SystemExit(f"--eval-every must be a multiple of K={k} (steps per compiled call)")
    snapshots, seconds = [], 0.0
    for step in range(args.eval_every, args.steps + 1, args.eval_every):
        start = time.perf_counter()
        for _ in range(args.eval_every // k):
            state, metrics = trainer.steps_on_data(state, data, config.batch_size)
        jax.block_until_ready(metrics)
        seconds += time.perf_counter() - start
        snapshots.append((step, seconds, jax.device_get(eval_params(state))))
        print(f"{recipe}: step {step}, {seconds:.1f} s of training", flush=True)
    rows = []
    for step, secs, ema in snapshots:
        out = sample(apply, ema, schedule, (args.num_samples, 28, 28, 1), jax.random.key(args.seed),
                     solver=DDPM(prediction=config.prediction, clip_x0=1.0), steps=SAMPLE_STEPS,
                     loop=Loop(chunk_size=mnist.SAMPLE_CHUNK))  # fmt: skip
        fid, score = _fid(mnist.to_images(out.samples), args.cache_dir)
        rows.append({"step": step, "train_seconds": secs, "fid": fid, "classifier_score": score})
    recipe_info = {k: getattr(config, k) for k in ("schedule", "loss_weighting", "learning_rate",
                                                   "batch_size", "ema_decay", "model")}  # fmt: skip
    return {"jax": jax.__version__, "recipe": recipe_info, "rows": rows}


def summarize(results: dict, thresholds) -> str:
    lines = ["| recipe | step | training s | FID | classifier score |", "|---|---|---|---|---|"]
    for name, res in results.items():
        for r in res["rows"]:
            lines.append(f"| {name} | {r['step']} | {r['train_seconds']:.0f} | {r['fid']:.1f} | "
                         f"{r['classifier_score']:.2f} |")  # fmt: skip
    lines += ["", "| recipe | " + " | ".join(f"training s to FID < {t:g}" for t in thresholds)
              + " |", "|---|" + "---|" * len(thresholds)]  # fmt: skip
    for name, res in results.items():
        cells = []
        for t in thresholds:
            hit = next((r for r in res["rows"] if r["fid"] < t), None)
            cells.append(
                f"{hit['train_seconds']:.0f} (step {hit['step']})"
                if hit
                else f"not in {res['rows'][-1]['step']} steps"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", nargs="+", choices=RECIPES, default=list(RECIPES))
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--threshold", type=float, nargs="+", default=[100.0, 70.0])
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="prepared TFDS folder ($TFDS_DATA_DIR)")
    parser.add_argument("--cache-dir", default=None, help="evaluation cache (~/.cache/jaxdiff)")
    parser.add_argument("--json", default=None, help="write every row here")
    parser.add_argument("--worker", choices=RECIPES, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < args.eval_every or args.eval_every < 1:
        parser.error("need --steps >= --eval-every >= 1")
    if args.num_samples < 129:
        parser.error(f"--num-samples must be >= 129 (Frechet distance), got {args.num_samples}")
    if args.worker:
        res = torch_worker(args) if args.worker == "torch" else jax_worker(args, args.worker)
        print("RESULT " + json.dumps(res), flush=True)
        return
    results = {}
    for recipe in args.recipe:
        cmd = [sys.executable, __file__, "--worker", recipe] + [
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--recipe"
            and a not in RECIPES
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"{recipe} worker failed (exit {proc.returncode})")
        results[recipe] = json.loads(lines[-1][len("RESULT ") :])
        print(f"{recipe} done", flush=True)
    print(summarize(results, args.threshold))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
