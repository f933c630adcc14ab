"""Few-step students of a trained model: progressive or consistency distillation.

Run::

    python -m experiments.mnist --out runs/mnist                      # a teacher
    python -m experiments.distill --teacher runs/mnist --out runs/distill
    python -m experiments.distill --teacher runs/mnist --method consistency --out runs/cd
    python -m experiments.distill --help                              # every option

The teacher is a finished ``experiments.mnist`` or ``experiments.digits`` run, rebuilt with
``jaxdiff.runs.load_run``; the students train on its data with ``jaxdiff.train.Trainer`` and
``jaxdiff.loop.fit`` (checkpoints per round, ``--resume``), and are sampled at 4, 2 and 1
steps beside the teacher's DDIM. Outputs in ``--out``: config.json, checkpoints/ (one folder
per round), metrics_*.jsonl, samples_*.npy (float32 in [0, 1]), samples.png, metrics.json
and report.md. The method and equations: docs/distillation.md; the library: jaxdiff.distill.
The package: ``config`` (flags, the teacher folder's checks), ``main`` (the rounds of
training) and ``report`` (samples, picture, evaluation, report.md).
"""

from experiments.distill.config import PROG, DistillConfig, load_teacher
from experiments.distill.main import main

__all__ = ["PROG", "DistillConfig", "load_teacher", "main"]
