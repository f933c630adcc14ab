"""sklearn's 8x8 digits (the 8x8 tutorial recipe): the improved denoiser, sample grids, GIF.

Run::

    python -m experiments.digits                               # writes runs/digits/
    python -m experiments.digits --model small --out runs/digits-small   # CPU-sized model
    python -m experiments.digits --resume                      # continue runs/digits/
    python -m experiments.digits --help                        # every option, with defaults

The recipe of the 8x8-digits tutorial: the 1,797 images scaled to [0, 1] (pixel / 16), the
"improved denoiser" U-Net (:func:`jaxdiff.models.improved_denoiser_8x8`, 9.2M parameters),
a linear schedule of 1000 steps (1e-4..0.02), AdamW with learning rate 2e-4 and weight decay
0.01, batch 32, gradient clipping at 1, 50 epochs (2,800 steps). Sampling uses the EMA
parameters (decay 0.995 with warm-up, matched to the run length) and DPM-Solver++
with 20 steps (``--sampler ddpm`` for the tutorial's 1000 ancestral steps).

The improved denoiser runs every layer at the full 8x8 resolution with up to 256 channels,
about 1.2 GFLOP per image: a GPU model. On this project's 2-core CPU the whole default run
took 71.8 min on 2026-12-01 (training 0.71 steps/s, 1,000 samples in 5.1 min; Frechet distance
22.3), and training ran at 0.37-0.43 steps/s before the matmul kernel gradients of
:mod:`jaxdiff.models.conv`, on a slower day of the same machine. ``--model small`` (0.6M
parameters, 2.8 steps/s) ran the whole recipe in 20 minutes there, to a Frechet distance of 34
(real digits 6.5, noise 389).

Outputs in ``--out`` (every experiment's contract): config.json, metrics.jsonl (one record per
training step), metrics.json (final numbers and the Frechet distance etc. in the feature space
of a small digits classifier), samples.npy (float32 ``(N, 8, 8, 1)`` in [0, 1]), PNG figures,
reverse_process.gif, checkpoints/ and report.md.

The package: ``config`` (flags, the model spec), ``main`` (the run), ``report`` (samples,
figures, evaluation, report.md). ``jaxdiff.runs.load_run(OUT)`` rebuilds the trained model.
"""

from experiments.digits.config import (
    CPU_STEPS_PER_SECOND,
    FORWARD_T,
    MODELS,
    PROG,
    RESUMABLE,
    DigitsConfig,
    model_spec,
    resolve,
)
from experiments.digits.main import main

__all__ = [
    "CPU_STEPS_PER_SECOND",
    "FORWARD_T",
    "MODELS",
    "PROG",
    "RESUMABLE",
    "DigitsConfig",
    "main",
    "model_spec",
    "resolve",
]
