"""``python -m experiments.inpaint``'s settings and its masks."""

from __future__ import annotations

import dataclasses

import numpy as np

from experiments._cli import field
from experiments._common import check_at_least
from jaxdiff.samplers import SamplerName

PROG = "python -m experiments.inpaint"
MASKS = ("center", "left", "random")
MNIST_TEST_IMAGES = 10_000


@dataclasses.dataclass(frozen=True)
class InpaintConfig:
    """Configuration of ``python -m experiments.inpaint`` (flags: ``--num-images 16`` ...).

    python -m experiments.inpaint --checkpoint runs/mnist --out runs/inpaint

    --checkpoint is the --out directory of an experiments.mnist run (its config.json and
    checkpoints/); train one with `python -m experiments.mnist --out runs/mnist`.
    """

    checkpoint: str = field("runs/mnist", "experiments.mnist run directory to inpaint with")
    out: str = field("runs/inpaint", "output directory (config, metrics, samples, figure, report)")
    seed: int = field(0, "seed of the random masks and of the sampler noise")
    data_dir: str | None = field(
        None,
        "prepared tensorflow_datasets folder; without one MNIST is downloaded once",
        default_text="$TFDS_DATA_DIR",
    )
    num_images: int = field(8, "MNIST test images to inpaint (the first N of the test split)")
    masks: tuple[str, ...] = field(MASKS, f"masks to apply, any of {', '.join(MASKS)}")
    random_fraction: float = field(0.3, "share of the pixels kept (known) by the random mask")
    sampler: SamplerName = field("ddpm", "sampler of the unknown pixels")
    sample_steps: int = field(50, "sampler steps, respaced from T")
    resample_jumps: int = field(4, "RePaint resampling: redo each jump this many times (0: none)")
    jump_length: int = field(5, "RePaint jump length, in sampler steps")
    resume: bool = field(False, "reuse an --out with the same config (everything is recomputed)")
    overwrite: bool = field(False, "delete an earlier run in --out and start again")

    def __post_init__(self):
        if not 1 <= self.num_images <= MNIST_TEST_IMAGES:
            raise ValueError(
                f"--num-images must lie in [1, {MNIST_TEST_IMAGES}] (the MNIST test split), "
                f"got {self.num_images}"
            )
        if not self.masks:
            raise ValueError(f"--masks needs at least one of {', '.join(MASKS)}")
        for name in self.masks:
            if name not in MASKS:
                raise ValueError(f"--masks: unknown mask {name!r}; choose from {', '.join(MASKS)}")
        if len(set(self.masks)) != len(self.masks):
            raise ValueError(f"--masks names a mask twice: {','.join(self.masks)}")
        if not 0 < self.random_fraction < 1:
            raise ValueError(f"--random-fraction must lie in (0, 1), got {self.random_fraction}")
        check_at_least(self, 1, "sample_steps", "jump_length")
        check_at_least(self, 0, "resample_jumps")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other; pass one of them")


def make_masks(kind: str, n: int, size: int, fraction: float, seed: int) -> np.ndarray:
    """``(n, size, size, 1)`` bool masks of one kind, True = known pixel (see the module doc)."""
    known = np.ones((n, size, size, 1), bool)
    half = size // 2
    if kind == "center":
        lo = (size - half) // 2
        known[:, lo : lo + half, lo : lo + half] = False
    elif kind == "left":
        known[:, :, :half] = False
    elif kind == "random":
        count = round(fraction * size * size)
        rng = np.random.default_rng([seed, MASKS.index(kind)])
        ranks = rng.random((n, size * size)).argsort(axis=1).argsort(axis=1)
        known = (ranks < count).reshape(n, size, size, 1)
    else:
        raise ValueError(f"unknown mask {kind!r}; choose from {', '.join(MASKS)}")
    return known


def model_evaluations(steps: int, resample_jumps: int, jump_length: int) -> int:
    """Denoiser calls per image of :func:`jaxdiff.samplers.sample` (without guidance)."""
    return steps + resample_jumps * ((steps - 1) // jump_length) * jump_length
