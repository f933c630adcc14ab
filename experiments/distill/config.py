"""``python -m experiments.distill``'s flags, their checks, and the teacher folder's checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from experiments._cli import RunFlags, field
from experiments._common import check_at_least
from jaxdiff.outputs import EXPERIMENT_KEY
from jaxdiff.runs import load_run, read_config

PROG = "python -m experiments.distill"
#: The experiments whose runs can teach: their config.json has a model spec (jaxdiff.runs).
TEACHERS = {"experiments.mnist": "mnist", "experiments.digits": "digits"}
#: Sampler steps at which the students are sampled and evaluated.
EVAL_STEPS = (4, 2, 1)


def _power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@dataclasses.dataclass(frozen=True)
class DistillConfig(RunFlags):
    """Configuration of ``python -m experiments.distill`` (flags: ``--method consistency`` ...).

    python -m experiments.distill --teacher runs/mnist --out runs/distill

    --teacher is the --out folder of a finished experiments.mnist or experiments.digits run.
    Progressive distillation halves --teacher-steps DDIM steps round by round down to
    --student-steps; consistency distillation trains one student for 1, 2 and 4 steps.
    """

    teacher: str = field("runs/mnist", "finished experiments.mnist or experiments.digits run")
    out: str = field("runs/distill", "output directory (config, checkpoints, samples, report)")
    method: Literal["progressive", "consistency"] = field("progressive", "distillation method")
    seed: int = field(0, "seed of the training noise, batches and samples")
    teacher_steps: int = field(
        32, "progressive: the teacher's DDIM steps the first student halves (a power of two)"
    )
    student_steps: int = field(1, "progressive: the last student's steps (a power of two)")
    train_steps: int = field(1000, "training steps per halving (progressive) or in all")
    batch_size: int = field(32, "batch size")
    learning_rate: float = field(1e-4, "Adam learning rate of the student")
    ema_decay: float = field(0.999, "EMA decay of the student parameters used to sample")
    num_times: int = field(18, "consistency: N, the times of the teacher's ODE grid")
    ode_solver: Literal["heun", "ddim"] = field("heun", "consistency: the teacher's ODE step")
    sigma_data: float = field(0.5, "consistency: sigma_data of c_skip and c_out (eq. 7)")
    num_samples: int = field(1000, "samples per sampler setting, evaluated")
    steps_per_call: int | None = field(
        None, "training steps per compiled call (K)", default_text="per backend, see jaxdiff.train"
    )
    checkpoint_every: int = field(500, "checkpoint every N steps of a round (0: only at its end)")
    evaluate: bool = field(True, "Frechet distance etc. of every sampler setting (MNIST, digits)")
    data_dir: str | None = field(
        None,
        "prepared tensorflow_datasets folder for an MNIST teacher",
        default_text="$TFDS_DATA_DIR",
    )
    cache_dir: str | None = field(
        None, "cache for the evaluation classifiers", default_text="~/.cache/jaxdiff"
    )

    def __post_init__(self):
        check_at_least(
            self, 1, "train_steps", "batch_size", "num_samples", "steps_per_call",
            "teacher_steps", "student_steps",
        )  # fmt: skip
        check_at_least(self, 0, "checkpoint_every")
        check_at_least(self, 2, "num_times")
        if self.method == "progressive":
            for name in ("teacher_steps", "student_steps"):
                n = getattr(self, name)
                if not _power_of_two(n):
                    raise ValueError(
                        f"--{name.replace('_', '-')} {n} is not a power of two; progressive "
                        "distillation halves the steps (32 -> 16 -> ... -> 1): pass "
                        f"{1 << (n.bit_length() - 1)} or {1 << n.bit_length()}"
                    )
            if self.student_steps >= self.teacher_steps:
                raise ValueError(
                    f"--student-steps {self.student_steps} must be below --teacher-steps "
                    f"{self.teacher_steps}"
                )
        for name in ("learning_rate", "sigma_data"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}"
                )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"--ema-decay must lie in [0, 1), got {self.ema_decay}")
        super().__post_init__()  # --resume and --overwrite

    def rounds(self) -> list[int]:
        """The students' step counts, one per round (consistency: ``[1]``, one student)."""
        if self.method == "consistency":
            return [1]
        n, out = self.teacher_steps // 2, []
        while n >= self.student_steps:
            out, n = [*out, n], n // 2
        return out


# Settings that may change between a run and its --resume (they do not change the students).
RESUMABLE = (
    "num_samples", "evaluate", "data_dir", "cache_dir", "resume", "overwrite", "progress",
    "checkpoint_every", "steps_per_call",
)  # fmt: skip


def load_teacher(config: DistillConfig):
    """``(run, kind)``: the teacher's :class:`jaxdiff.runs.TrainedRun` and ``"mnist"`` or
    ``"digits"``; ``ValueError`` / ``FileNotFoundError`` (one line) for a folder that is not a
    finished run of those experiments, or too short a schedule for the steps asked for."""
    where = f"--teacher {config.teacher}"
    path = Path(config.teacher)
    if not path.is_dir():
        raise FileNotFoundError(f"{where}: no such folder; name the --out of a finished run")
    try:
        cfg, _spec = read_config(path)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from e
    kind = TEACHERS.get(cfg.get(EXPERIMENT_KEY))
    if kind is None:
        raise ValueError(
            f"{where} is a run of {cfg.get(EXPERIMENT_KEY) or 'an unknown command'}; distillation "
            f"needs a run of {' or '.join(TEACHERS)}"
        )
    try:
        run = load_run(path)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from e
    wanted = cfg.get("train_steps")
    if wanted is not None and run.step < wanted:
        raise ValueError(
            f"{where} is incomplete: its newest checkpoint is step {run.step} of {wanted}; "
            "finish it with its command and --resume"
        )
    T = run.schedule.num_steps
    needed = {"--teacher-steps": config.teacher_steps}
    if config.method == "consistency":
        needed["--num-times"] = config.num_times
    for flag, n in needed.items():
        if n > T:
            raise ValueError(f"{flag} {n} exceeds the teacher's {T} diffusion steps; lower it")
    return run, kind
