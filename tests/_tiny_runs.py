"""The tiny ``experiments.mnist`` settings the smoke tests share.

Compilation is most of what a tiny run costs on a CPU. Runs with these exact settings (and the same
data) compile the same programs, which the session's persistent compilation cache (conftest.py)
then serves to every later run: ``tests/test_experiment_mnist.py`` trains with them and
``tests/test_experiment_inpaint.py`` makes its checkpoint with them.
"""

from __future__ import annotations

# Class-conditional (the default): guidance w = 0.5 at sampling; 6 steps as 2 calls of K=3.
MNIST_TINY = [
    "--model", "tiny", "--train-steps", "6", "--batch-size", "8", "--train-limit", "64",
    "--num-samples", "12", "--sample-every", "3", "--checkpoint-every", "3",
    "--sample-steps", "4", "--num-timesteps", "40", "--schedule", "cosine",
    "--steps-per-call", "3", "--no-evaluate", "--no-progress",
]  # fmt: skip
