"""Sample quality of each sampler on one finished ``experiments.mnist`` run (same checkpoint).

Restores the newest checkpoint of RUN, or the one of ``--step N`` (its config.json rebuilds the
model), draws N samples per variant with the same key and prints the Frechet distance and
classifier score of :func:`jaxdiff.evaluation.evaluate_samples` (the cached MNIST classifier; its
first use trains it).
A variant is ``SAMPLER:STEPS:WEIGHTS[:GUIDANCE]`` with WEIGHTS ``ema`` or ``raw``; for a
class-conditional run (labels cycling 0-9) GUIDANCE is the classifier-free guidance weight w
(default: the run's ``--guidance-scale``) or ``uncond`` (every sample with the null label, the
model's unconditional distribution).

Run (from the repository root; the README's comparison, ~20 min on a 2-core CPU)::

    python benchmarks/compare_samplers.py runs/mnist --num-samples 256 \\
        dpm++:20:ema dpm++:20:raw ddim:50:ema ddpm:100:ema ddpm:50:ema ddpm:25:ema
    python benchmarks/compare_samplers.py runs/mnist_cc --num-samples 1000 \
        ddpm:25:ema:0 ddpm:25:ema:1 ddpm:25:ema:2 ddpm:25:ema:uncond
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np

from experiments import mnist
from jaxdiff.checkpoint import Checkpointer
from jaxdiff.evaluation import evaluate_samples
from jaxdiff.runs import read_config
from jaxdiff.samplers import Guidance, Loop, sample, solver_from_flags
from jaxdiff.train import eval_params, init_train_state, make_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="an experiments.mnist --out directory")
    parser.add_argument(
        "variants", nargs="+", help="SAMPLER:STEPS:ema|raw[:GUIDANCE|uncond], e.g. ddpm:25:ema"
    )
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache-dir", default=None, help="evaluation cache (default ~/.cache)")
    parser.add_argument(
        "--step", type=int, default=None, help="checkpoint step to load (default: the newest)"
    )
    args = parser.parse_args()
    if args.num_samples < 129:  # a covariance in the 128-d classifier feature space
        parser.error(f"--num-samples must be >= 129 (Frechet distance), got {args.num_samples}")
    config, spec = read_config(args.run)
    variants = []
    for v in args.variants:
        parts = v.split(":")
        if len(parts) not in (3, 4) or parts[2] not in ("ema", "raw") or not parts[1].isdigit():
            parser.error(
                f"variant {v!r} is not SAMPLER:STEPS:ema|raw[:GUIDANCE] (e.g. ddpm:25:ema)"
            )
        guidance = parts[3] if len(parts) == 4 else config.get("guidance_scale", 0.0)
        if spec.num_classes is None and len(parts) == 4:
            parser.error(f"variant {v!r}: GUIDANCE needs a class-conditional run")
        if guidance != "uncond":
            try:
                guidance = float(guidance)
            except ValueError:
                parser.error(f"variant {v!r}: GUIDANCE is a number or 'uncond'")
        variants.append((v, parts[0], int(parts[1]), parts[2], guidance))

    apply, params, schedule = spec.build(abstract=True)
    num_classes = spec.num_classes
    # The whole train state (raw and EMA weights), restored into an abstract target.
    tx = make_optimizer(spec.train)
    target = jax.eval_shape(lambda p: init_train_state(p, tx, 0), params)
    with Checkpointer(Path(args.run) / "checkpoints", read_only=True) as ckpt:
        state, _ = ckpt.restore(target, step=args.step)
    print(f"{args.run}: step {int(state.step)}, {args.num_samples} samples per variant")
    shape = (args.num_samples, *spec.image_shape)
    for name, sampler, steps, weights, guidance in variants:
        labels, scale = None, 0.0
        if num_classes and guidance == "uncond":
            labels = np.full(args.num_samples, num_classes)  # the null label
        elif num_classes:
            labels, scale = np.arange(args.num_samples) % 10, guidance
        t0 = time.perf_counter()
        result = sample(
            apply, eval_params(state, ema=weights == "ema"), schedule, shape,
            jax.random.key(args.seed),
            solver=solver_from_flags(sampler, prediction=spec.train.prediction, clip_x0=1.0),
            steps=steps,
            guidance=Guidance(scale, labels=labels, num_classes=num_classes)
            if num_classes else None,
            loop=Loop(chunk_size=mnist.SAMPLE_CHUNK),
        )  # fmt: skip
        images = mnist.to_images(result.samples)
        seconds = time.perf_counter() - t0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "only N samples": compare, not report
            m = evaluate_samples(images, "mnist", cache_dir=args.cache_dir)["metrics"]
        print(
            f"{name}  {seconds:6.0f} s  FID {m['fid']['samples']:6.1f} "
            f"(floor {m['fid']['real']:.1f})  classifier score "
            f"{m['classifier_score']['samples']:.2f}"
        )


if __name__ == "__main__":
    main()
