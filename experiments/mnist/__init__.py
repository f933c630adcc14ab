"""MNIST: train a U-Net denoiser with EMA, sample it, draw the figures, measure it, report.

Run (defaults sized by backend: the presets in :mod:`experiments.mnist.config`)::

    python -m experiments.mnist                                  # writes runs/mnist/
    python -m experiments.mnist --out runs/cond --class-conditional --guidance-scale 2
    python -m experiments.mnist --resume                          # continue runs/mnist/
    python -m experiments.mnist --help                            # every option, with defaults

Outputs in ``--out`` (every experiment's contract): config.json, metrics.jsonl (one record per
training step), metrics.json (final numbers), samples.npy (float32 ``(N, H, W, 1)`` in [0, 1];
labels.npy too when class-conditional), PNG figures, a GIF of the reverse process, checkpoints/
and report.md. ``jaxdiff.runs.load_run(OUT)`` rebuilds the trained model from the folder.

Data: a prepared tensorflow-datasets copy named by ``--data-dir`` or ``$TFDS_DATA_DIR``, else the
official MNIST IDX files, downloaded and verified once (``jaxdiff.data.load_mnist``).

The package: ``config`` (flags, presets, the model spec), ``main`` (the run), ``sampling``
(progress grids, final samples), ``report`` (figures, evaluation, report.md), ``estimate``
(the printed duration).
"""

from experiments.mnist.config import (
    MODELS,
    PRESETS,
    PROG,
    RESUMABLE,
    MnistConfig,
    Preset,
    build,
    fit_batch_to_devices,
    model_spec,
    resolve,
)
from experiments.mnist.main import main
from experiments.mnist.sampling import SAMPLE_CHUNK, to_images

__all__ = [
    "MODELS",
    "PRESETS",
    "PROG",
    "RESUMABLE",
    "SAMPLE_CHUNK",
    "MnistConfig",
    "Preset",
    "build",
    "fit_batch_to_devices",
    "main",
    "model_spec",
    "resolve",
    "to_images",
]
