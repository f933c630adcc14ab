"""Evaluate saved samples: every metric next to its real-data floor and noise ceiling, as JSON.

All logic lives in :func:`jaxdiff.evaluation.evaluate_samples`; this module only parses the command
line (with the project's dataclass -> argparse helper, :mod:`experiments._cli`) and loads the
``.npy`` files. See :class:`EvaluateConfig` for the commands.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments._cli import field, run_main
from jaxdiff.data import POINT_DATASETS
from jaxdiff.evaluation import EVALUATION_KINDS, evaluate_samples
from jaxdiff.evaluation.evaluate import load_sample_file
from jaxdiff.outputs import probe_writable, write_json

PROG = "python -m experiments.evaluate"
#: What ``--out`` receives: a name of its own, so a training run's metrics.json is never replaced.
EVALUATION_FILE = "evaluation.json"


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Print sample-quality metrics, each next to its real-data floor and noise ceiling, as JSON.

    python -m experiments.evaluate --kind mnist --samples OUT/samples.npy [--labels OUT/labels.npy]
    python -m experiments.evaluate --kind digits --samples OUT/samples.npy
    python -m experiments.evaluate --kind points --dataset moons --samples OUT/samples.npy

    samples.npy follows the experiment output contract: float32, images (N, H, W, C) in [0, 1]
    (MNIST 28x28 or 32x32, digits 8x8), points (N, D) in data coordinates. The first MNIST
    evaluation trains the feature classifier (a couple of minutes on a CPU) and caches it in
    --cache-dir; the reference values are computed once and cached there too. One JSON object
    goes to stdout (and to OUT/evaluation.json with --out, beside a run's own files, which it
    leaves alone); progress bars and warnings go to stderr. Bad arguments or inputs print one
    error line and exit with code 2.
    """

    samples: str = field("", "samples.npy to evaluate", default_text="required")
    kind: str = field(
        "", f"what the samples are: {', '.join(EVALUATION_KINDS)}", default_text="required"
    )
    dataset: str | None = field(
        None,
        f"point data set for --kind points: {', '.join(sorted(POINT_DATASETS))}",
        default_text="required with --kind points",
    )
    labels: str | None = field(
        None,
        "labels.npy of the requested classes (N,) of class-conditional image samples",
        default_text="unconditional samples",
    )
    cache_dir: str | None = field(
        None, "cache of the feature classifiers and references", default_text="~/.cache/jaxdiff"
    )
    data_dir: str | None = field(
        None,
        "prepared tensorflow_datasets folder; without one MNIST is downloaded once",
        default_text="$TFDS_DATA_DIR",
    )
    out: str | None = field(
        None, f"also write the JSON to OUT/{EVALUATION_FILE}", default_text="stdout only"
    )
    progress: bool = field(True, "progress bars on stderr while training a classifier")

    def __post_init__(self):
        if not self.samples:
            raise ValueError("--samples is required: the .npy file of samples to evaluate.")
        if self.kind not in EVALUATION_KINDS:
            got = f"got {self.kind!r}" if self.kind else "it is required"
            raise ValueError(f"--kind must be one of {', '.join(EVALUATION_KINDS)}; {got}.")
        if self.kind == "points" and self.dataset is None:
            raise ValueError(
                "--kind points needs --dataset, the data set the samples imitate: one of "
                f"{', '.join(sorted(POINT_DATASETS))}."
            )
        if self.dataset is not None and self.kind != "points":
            raise ValueError("--dataset is only used with --kind points.")
        if self.dataset is not None and self.dataset not in POINT_DATASETS:
            raise ValueError(
                f"--dataset must be one of {', '.join(sorted(POINT_DATASETS))}; got "
                f"{self.dataset!r}."
            )
        if self.labels is not None and self.kind == "points":
            raise ValueError("--labels is only used with image samples (--kind mnist or digits).")


def main(config: EvaluateConfig) -> dict[str, Any]:
    """Evaluate the files named by ``config``; print the JSON (and write ``evaluation.json``).

    Returns:
      :func:`jaxdiff.evaluation.evaluate_samples`'s dict.
    """
    samples = load_sample_file(config.samples, "samples")
    labels = None if config.labels is None else load_sample_file(config.labels, "labels")
    if config.out is not None:
        probe_writable(config.out)  # an unwritable --out fails now, not after the evaluation
    result = evaluate_samples(
        samples,
        config.kind,
        dataset=config.dataset,
        labels=labels,
        cache_dir=config.cache_dir,
        data_dir=config.data_dir,
        progress=config.progress,
    )
    if config.out is not None:
        write_json(Path(config.out) / EVALUATION_FILE, result)
    print(json.dumps(result, indent=2))
    return result


def cli(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: the exit code (2, with one error line, on bad input)."""
    return run_main(EvaluateConfig, main, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(cli())
