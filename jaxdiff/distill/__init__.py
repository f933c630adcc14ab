"""Few-step sampling by distillation: progressive distillation (Salimans & Ho 2022) and
consistency distillation (Song et al. 2023) of any trained jaxdiff model.

- :mod:`jaxdiff.distill.denoiser`: teachers and students as ``(x0, eps)`` denoisers on a
  Gaussian path (:class:`Denoiser`), the deterministic DDIM step and the nested time grids;
- :mod:`jaxdiff.distill.progressive`: the two-teacher-steps target and its loss;
- :mod:`jaxdiff.distill.consistency`: the consistency function (eq. 7) and its loss;
- :mod:`jaxdiff.distill.sampling`: DDIM sampling on a halving grid, consistency sampling;
- :mod:`jaxdiff.distill.training`: students on :class:`jaxdiff.train.Trainer` with the
  teacher as a frozen, traced parameter sub-tree.

How to run them: docs/distillation.md and ``python -m experiments.distill``.
"""

from jaxdiff.distill.consistency import (
    ODE_SOLVERS,
    consistency_coefficients,
    consistency_function,
    consistency_loss,
    consistency_times,
    make_consistency_loss,
    teacher_ode_step,
)
from jaxdiff.distill.denoiser import (
    CLEAN,
    Denoiser,
    DenoiserLike,
    alpha_sigma,
    ddim_step,
    discrete_denoiser,
    halving_grid,
    prior_std,
)
from jaxdiff.distill.progressive import (
    make_progressive_loss,
    progressive_loss,
    progressive_target,
    teacher_two_steps,
    truncated_snr_weight,
)
from jaxdiff.distill.sampling import consistency_sample, consistency_sample_times, ddim_sample
from jaxdiff.distill.training import (
    check_frozen_teacher,
    student_params,
    student_train_config,
    with_teacher,
)

__all__ = [
    "CLEAN",
    "ODE_SOLVERS",
    "Denoiser",
    "DenoiserLike",
    "alpha_sigma",
    "check_frozen_teacher",
    "consistency_coefficients",
    "consistency_function",
    "consistency_loss",
    "consistency_sample",
    "consistency_sample_times",
    "consistency_times",
    "ddim_sample",
    "ddim_step",
    "discrete_denoiser",
    "halving_grid",
    "make_consistency_loss",
    "make_progressive_loss",
    "prior_std",
    "progressive_loss",
    "progressive_target",
    "student_params",
    "student_train_config",
    "teacher_ode_step",
    "teacher_two_steps",
    "truncated_snr_weight",
    "with_teacher",
]
