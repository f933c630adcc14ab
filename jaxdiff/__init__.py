"""jaxdiff: denoising diffusion models in JAX, as pure functions.

The core API works on arrays and needs no model::

    import jaxdiff
    s = jaxdiff.make_schedule("linear", num_steps=1000)
    x_t = jaxdiff.q_sample(s, x0, t, noise)
    mean, var, log_var = jaxdiff.q_posterior(s, x0, x_t, t)
    x_prev = jaxdiff.ddpm_step(s, eps, x_t, t, noise, variance="posterior")
    x_prev = jaxdiff.ddim_step(s, eps, x_t, t, t_prev, noise, eta=0.0)
    out = jaxdiff.sample(apply, params, s, (64, 28, 28, 1), key,
                         solver=jaxdiff.samplers.DDIM(eta=0.5), steps=20)

Models, training, checkpoints, data, metrics and plots live in their submodules
(``jaxdiff.models``, ``jaxdiff.train``, ``jaxdiff.loop``, ``jaxdiff.checkpoint``, ...), so that
``import jaxdiff`` stays light.
"""

from jaxdiff.forward import q_mean_variance, q_sample, q_sample_iterative, q_step
from jaxdiff.losses import (
    bits_per_dim,
    denoising_loss,
    discretized_gaussian_log_likelihood,
    loss_weight,
    normal_kl,
    prior_bpd,
    sample_timesteps,
    vlb_terms,
)
from jaxdiff.parameterization import (
    PREDICTIONS,
    eps_from_v,
    eps_from_x0,
    eps_to_x0,
    prediction_target,
    to_eps_and_x0,
    v_from_eps_x0,
    x0_from_v,
)
from jaxdiff.reverse import VARIANCES, ddim_step, ddpm_step, model_log_variance, q_posterior
from jaxdiff.samplers import (
    SAMPLERS,
    SOLVERS,
    Guidance,
    Inpaint,
    Loop,
    SampleResult,
    Solver,
    sample,
    step_sequence,
)
from jaxdiff.schedules import (
    SCHEDULE_KINDS,
    Schedule,
    TerminalSignalWarning,
    check_terminal_signal,
    make_schedule,
    schedule_from_betas,
)

__version__ = "0.1.0"

__all__ = [
    "PREDICTIONS",
    "SAMPLERS",
    "SCHEDULE_KINDS",
    "SOLVERS",
    "VARIANCES",
    "Guidance",
    "Inpaint",
    "Loop",
    "SampleResult",
    "Schedule",
    "Solver",
    "TerminalSignalWarning",
    "bits_per_dim",
    "check_terminal_signal",
    "ddim_step",
    "ddpm_step",
    "denoising_loss",
    "discretized_gaussian_log_likelihood",
    "eps_from_v",
    "eps_from_x0",
    "eps_to_x0",
    "loss_weight",
    "make_schedule",
    "model_log_variance",
    "normal_kl",
    "prediction_target",
    "prior_bpd",
    "q_mean_variance",
    "q_posterior",
    "q_sample",
    "q_sample_iterative",
    "q_step",
    "sample",
    "sample_timesteps",
    "schedule_from_betas",
    "step_sequence",
    "to_eps_and_x0",
    "v_from_eps_x0",
    "vlb_terms",
    "x0_from_v",
]
