"""The flags of ``python -m experiments.forward`` and the timesteps its figures show."""

from __future__ import annotations

import dataclasses
from typing import Literal

from experiments._cli import field
from experiments._common import check_at_least
from jaxdiff.schedules import Schedule, make_schedule

PROG = "python -m experiments.forward"

#: Timesteps (of T = 1000; scaled to other T) shown in the figures.
SHOW_T = (0, 50, 100, 200, 300, 500, 700, 999)


@dataclasses.dataclass(frozen=True)
class ForwardConfig:
    """Configuration of ``python -m experiments.forward`` (flags: ``--num-timesteps 500`` ...)."""

    out: str = field("runs/forward", "output directory (config, metrics, figures, report)")
    seed: int = field(0, "seed of every noise draw")
    data_dir: str | None = field(
        None,
        "prepared tensorflow_datasets folder; without one MNIST is downloaded once",
        default_text="$TFDS_DATA_DIR",
    )
    schedule: Literal["linear", "cosine", "quadratic", "sigmoid"] = field(
        "linear", "schedule of the iterative-vs-closed-form and mixture demos"
    )
    num_timesteps: int = field(1000, "diffusion steps T")
    digit_index: int = field(0, "which MNIST test image is the digit of demo 1")
    num_digits: int = field(6, "digits in the noise-level progression")
    chains: int = field(64, "independent chains per method for the distribution check")
    mixture_samples: int = field(20_000, "samples of the 1-D Gaussian mixture")
    gif_frames: int = field(40, "frames of the forward-process GIF")
    resume: bool = field(False, "reuse an --out with the same config (everything is recomputed)")
    overwrite: bool = field(False, "delete an earlier run in --out and start again")

    def __post_init__(self):
        check_at_least(self, 1, "num_digits", "chains", "gif_frames")
        check_at_least(self, 2, "num_timesteps", "mixture_samples")
        check_at_least(self, 0, "digit_index")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other; pass one of them")


def build_schedule(kind: str, num_steps: int) -> Schedule:
    """A schedule of ``kind`` with the library's default betas (linear: 1e-4..0.02)."""
    return make_schedule(kind, num_steps)


def show_timesteps(num_steps: int) -> list[int]:
    """:data:`SHOW_T` scaled from T = 1000 to ``num_steps`` (distinct, ending at T-1)."""
    return sorted({min(num_steps - 1, round(t * (num_steps - 1) / 999)) for t in SHOW_T})
