"""Training objectives: a path, what the network outputs, how noise levels are drawn and weighted.

An objective is one concept with two faces, both pure (``jit``/``vmap``/``grad``-compatible):

- training: ``objective.loss(apply, params, x0, labels, key, dropout_key) -> (loss, aux)``,
  with ``apply(params, x, c, labels=None, *, dropout_key=None)`` a model of
  :mod:`jaxdiff.models` (:func:`train_loss` adapts it to the ``Trainer``'s ``loss=`` hook);
- sampling (the contract the samplers rely on):

  - ``objective.path``: the :class:`jaxdiff.paths.GaussianPath` ``x_t = alpha(t) x0 + sigma(t)
    eps`` the network was trained on;
  - ``objective.discrete``: True when the network is evaluated at integer ``t`` only (DDPM);
  - ``objective.denoise(net, x_t, t) -> (x0_hat, eps_hat)``: ``net(x_in, c)`` is the network
    (output of ``x_in``'s shape); the objective decides its input ``x_in`` and conditioning
    ``c``; ``t`` is a scalar or ``(B,)`` time on ``objective.path``.

The objectives (:func:`make_objective` builds one by name):

- :class:`DDPM` ``"ddpm"``: DDPM's L_simple (Ho et al. 2020, eq. 14) on the discrete schedule,
  uniform integer ``t``, the eps, x0 or v target, simple or Min-SNR-gamma weighting; its loss
  is :func:`jaxdiff.losses.denoising_loss` and its ``denoise`` is
  :func:`jaxdiff.parameterization.to_eps_and_x0`, so both equal today's to the bit.
- :class:`EDM` ``"edm"``: Karras et al. 2022 (Table 1, sec. 5): ``x = x0 + sigma eps``,
  ``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)``, log-normal ``sigma``, weighting
  ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``.
- :class:`Flow` ``"flow"`` / ``"flow-lognormal"``: flow matching on the rectified-flow path
  ``x_t = (1 - t) x0 + t eps`` (Lipman et al. 2022; Liu et al. 2022): the network predicts the
  velocity ``u = eps - x0`` at ``time_scale * t``; ``t`` uniform or logit-normal (Esser et al.
  2024, sec. 3.1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

from jaxdiff import paths
from jaxdiff._validate import as_float, check_same_shape
from jaxdiff.losses import WEIGHTINGS, denoising_loss
from jaxdiff.parameterization import PREDICTIONS, to_eps_and_x0
from jaxdiff.schedules import Schedule

__all__ = [
    "DDPM",
    "EDM",
    "OBJECTIVES",
    "TIME_SAMPLINGS",
    "Flow",
    "Objective",
    "ObjectiveName",
    "make_objective",
    "train_loss",
]

TIME_SAMPLINGS = ("uniform", "logit_normal")
#: The names of :func:`make_objective` (the experiments' ``--objective`` choices).
OBJECTIVES = ("ddpm", "edm", "flow", "flow-lognormal")
#: :data:`OBJECTIVES` as a type, for command-line choices (a test checks that they agree).
ObjectiveName = Literal["ddpm", "edm", "flow", "flow-lognormal"]

Net = Callable[[jax.Array, jax.Array], jax.Array]
Aux = dict[str, jax.Array]


def _batch(x0) -> jax.Array:
    x0 = as_float(x0, "x0")
    if x0.ndim < 1 or x0.shape[0] < 1:
        raise ValueError(f"x0 must be a batch of shape (B, ...), got shape {x0.shape}")
    return x0


def _per_example(t: jax.Array, x: jax.Array) -> jax.Array:
    """A scalar or ``(B,)`` time shaped to broadcast against ``x (B, ...)``."""
    t = jnp.asarray(t)
    if t.ndim == 0:
        return t
    if t.shape != x.shape[:1]:
        raise ValueError(
            f"t must be a scalar or have shape (B,) = ({x.shape[0]},) matching x_t of shape "
            f"{x.shape}; got shape {t.shape}"
        )
    return t.reshape(t.shape + (1,) * (x.ndim - 1))


def _mse(out: jax.Array, target: jax.Array) -> jax.Array:
    """Per-example mean squared error ``(B,)``."""
    return jnp.mean(jnp.square(out - target).reshape(out.shape[0], -1), axis=1)


def _finite_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class DDPM:
    """DDPM's objective (Ho et al. 2020): today's training, as an objective.

    Attributes:
      schedule: the discrete noise schedule (path :class:`jaxdiff.paths.DiscreteVP`).
      prediction: the network's target, ``"eps"``, ``"x0"`` or ``"v"``.
      weighting: ``"simple"`` (L_simple, eq. 14) or ``"min_snr"`` (Hang et al. 2023).
      snr_gamma: gamma of the Min-SNR weighting.
      antithetic: pair timesteps ``t`` and ``T-1-t`` (:func:`jaxdiff.losses.sample_timesteps`).
    """

    schedule: Schedule
    prediction: str = "eps"
    weighting: str = "simple"
    snr_gamma: float = 5.0
    antithetic: bool = False

    name = "ddpm"
    discrete = True

    def __post_init__(self):
        if not isinstance(self.schedule, Schedule):
            raise TypeError(f"schedule must be a jaxdiff Schedule, got {type(self.schedule)}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; choose one of {PREDICTIONS}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose one of {WEIGHTINGS}")
        _finite_positive("snr_gamma", self.snr_gamma)

    @property
    def path(self) -> paths.DiscreteVP:
        return paths.DiscreteVP(self.schedule)

    def loss(self, apply, params, x0, labels, key, dropout_key=None) -> tuple[jax.Array, Aux]:
        """:func:`jaxdiff.losses.denoising_loss` with the network ``apply(params, x_t, t,
        labels, dropout_key=...)`` at integer ``t (B,)``; ``aux``: ``{"t", "per_example"}``."""

        def denoise_fn(x_t, t):
            return apply(params, x_t, t, labels, dropout_key=dropout_key)

        return denoising_loss(
            denoise_fn,
            self.schedule,
            x0,
            key,
            prediction=self.prediction,
            antithetic=self.antithetic,
            weighting=self.weighting,
            snr_gamma=self.snr_gamma,
        )

    def denoise(self, net: Net, x_t, t) -> tuple[jax.Array, jax.Array]:
        """``(x0_hat, eps_hat)`` from ``net(x_t, t)`` at the integer times ``t`` (float ``t`` is
        rounded): :func:`jaxdiff.parameterization.to_eps_and_x0`, DDPM eq. 15."""
        t = jnp.asarray(t)
        if not jnp.issubdtype(t.dtype, jnp.integer):
            t = jnp.round(t).astype(jnp.int32)
        eps, x0 = to_eps_and_x0(self.schedule, net(x_t, t), x_t, t, self.prediction)
        return x0, eps


@dataclasses.dataclass(frozen=True)
class EDM:
    """EDM's objective (Karras et al. 2022, Table 1 and sec. 5).

    ``x = x0 + sigma eps`` (path :class:`jaxdiff.paths.EDM`, ``t = sigma``) and the denoiser
    ``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`` with (:meth:`preconditioning`)::

        c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)
        c_out  = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
        c_in   = 1 / sqrt(sigma^2 + sigma_data^2)
        c_noise = log(sigma) / 4

    Training draws ``ln sigma ~ N(p_mean, p_std^2)`` and weights ``||D - x0||^2`` by
    ``lambda(sigma) = 1 / c_out^2``, so the loss is eq. 8's ``||F - F_target||^2`` with the
    effective target ``F_target = (x0 - c_skip x) / c_out`` (unit variance for data of standard
    deviation ``sigma_data``, appendix B.6), which is what is computed.

    Attributes:
      sigma_data: the data's standard deviation; 0.5 (the paper's, for images in [-1, 1] of
        CIFAR-10 and ImageNet). MNIST in [-1, 1] is mostly background at -1, with pixel
        standard deviation 2 x 0.3081 = 0.62: the experiments measure it on their training
        data (see docs/objectives.md).
      p_mean, p_std: the log-normal noise levels of training (-1.2, 1.2).
      sigma_min, sigma_max: the path's range, for sampling (0.002, 80).
    """

    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0

    name = "edm"
    discrete = False

    def __post_init__(self):
        for name in ("sigma_data", "p_std", "sigma_min", "sigma_max"):
            _finite_positive(name, getattr(self, name))
        if not (isinstance(self.p_mean, int | float) and math.isfinite(self.p_mean)):
            raise ValueError(f"p_mean must be a finite number, got {self.p_mean!r}")
        if not self.sigma_min < self.sigma_max:
            raise ValueError(
                f"sigma_min must be below sigma_max, got {self.sigma_min} and {self.sigma_max}"
            )

    @property
    def path(self) -> paths.EDM:
        return paths.EDM(self.sigma_min, self.sigma_max, self.sigma_data)

    def preconditioning(self, sigma) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """``(c_skip, c_out, c_in, c_noise)`` at ``sigma`` (any shape; Table 1)."""
        sigma = jnp.asarray(sigma, jnp.result_type(sigma, float))
        sd2 = self.sigma_data**2
        norm = jnp.sqrt(sigma**2 + sd2)
        return sd2 / (sigma**2 + sd2), sigma * self.sigma_data / norm, 1 / norm, jnp.log(sigma) / 4

    def weight(self, sigma) -> jax.Array:
        """``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2`` (Table 1)."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def loss(self, apply, params, x0, labels, key, dropout_key=None) -> tuple[jax.Array, Aux]:
        """``E lambda(sigma) ||D(x0 + sigma eps; sigma) - x0||^2`` (eq. 2 with Table 1's
        choices) as eq. 8: the batch mean of the per-example mean of ``(F - F_target)^2``.

        ``aux``: ``{"t": sigma (B,), "per_example": (B,)}`` (``per_example``: eq. 8's MSE).
        """
        x0 = _batch(x0)
        sigma_key, noise_key = jax.random.split(key)
        sigma = jnp.exp(
            self.p_mean + self.p_std * jax.random.normal(sigma_key, x0.shape[:1], x0.dtype)
        )
        noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
        s = _per_example(sigma, x0)
        x = x0 + s * noise
        c_skip, c_out, c_in, c_noise = self.preconditioning(s)
        target = (x0 - c_skip * x) / c_out
        out = apply(params, c_in * x, c_noise.reshape(sigma.shape), labels, dropout_key=dropout_key)
        check_same_shape(out, x0, "network output", "x0")
        per_example = _mse(out, target)
        return jnp.mean(per_example), {"t": sigma, "per_example": per_example}

    def denoise(self, net: Net, x_t, t) -> tuple[jax.Array, jax.Array]:
        """``x0_hat = D(x_t; sigma)`` with ``sigma = t``, ``eps_hat = (x_t - x0_hat) / sigma``."""
        sigma = _per_example(t, x_t)
        c_skip, c_out, c_in, c_noise = self.preconditioning(sigma)
        x0 = c_skip * x_t + c_out * net(c_in * x_t, c_noise.reshape(jnp.shape(t)))
        return x0, (x_t - x0) / sigma


@dataclasses.dataclass(frozen=True)
class Flow:
    """Flow matching on the rectified-flow path (Lipman et al. 2022, sec. 4.1 with
    ``sigma_min = 0``; Liu et al. 2022): ``x_t = (1 - t) x0 + t eps`` for ``t`` in [0, 1]
    (path :class:`jaxdiff.paths.RectifiedFlow`), network target the velocity
    ``u = dx_t/dt = eps - x0``, loss ``E ||u_hat(x_t, t) - (eps - x0)||^2`` (unweighted).

    Attributes:
      time_sampling: how training draws ``t``: ``"uniform"`` on [0, 1) (the papers above) or
        ``"logit_normal"``, ``t = sigmoid(m + s n)``, ``n ~ N(0, 1)`` (Esser et al. 2024,
        eq. 19; m = 0, s = 1 was among their best), which spends more steps at mid ``t``.
      logit_mean, logit_std: m and s of the logit-normal.
      time_scale: the network sees ``time_scale * t``: 1000 gives the sinusoidal timestep
        embedding of :mod:`jaxdiff.models` the range of DDPM's integer timesteps (0..999), the
        range its frequencies were chosen for.
    """

    time_sampling: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    time_scale: float = 1000.0

    name = "flow"
    discrete = False

    def __post_init__(self):
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(
                f"unknown time_sampling {self.time_sampling!r}; choose one of {TIME_SAMPLINGS}"
            )
        _finite_positive("logit_std", self.logit_std)
        _finite_positive("time_scale", self.time_scale)
        if not (isinstance(self.logit_mean, int | float) and math.isfinite(self.logit_mean)):
            raise ValueError(f"logit_mean must be a finite number, got {self.logit_mean!r}")

    @property
    def path(self) -> paths.RectifiedFlow:
        return paths.RectifiedFlow()

    def sample_t(self, key: jax.Array, batch: int, dtype=jnp.float32) -> jax.Array:
        """``(batch,)`` training times in [0, 1) (uniform) or (0, 1) (logit-normal)."""
        if self.time_sampling == "uniform":
            return jax.random.uniform(key, (batch,), dtype)
        n = jax.random.normal(key, (batch,), dtype)
        return jax.nn.sigmoid(self.logit_mean + self.logit_std * n)

    def loss(self, apply, params, x0, labels, key, dropout_key=None) -> tuple[jax.Array, Aux]:
        """The batch mean of the per-example mean of ``(u_hat - (eps - x0))^2``;
        ``aux``: ``{"t": (B,), "per_example": (B,)}``."""
        x0 = _batch(x0)
        t_key, noise_key = jax.random.split(key)
        t = self.sample_t(t_key, x0.shape[0], x0.dtype)
        noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
        tb = _per_example(t, x0)
        x_t = (1 - tb) * x0 + tb * noise
        out = apply(params, x_t, self.time_scale * t, labels, dropout_key=dropout_key)
        check_same_shape(out, x0, "network output", "x0")
        per_example = _mse(out, noise - x0)
        return jnp.mean(per_example), {"t": t, "per_example": per_example}

    def denoise(self, net: Net, x_t, t) -> tuple[jax.Array, jax.Array]:
        """From ``u = net(x_t, time_scale t)``: ``x0 = x_t - t u``, ``eps = x_t + (1 - t) u``
        (``x_t = (1 - t) x0 + t eps`` solved with ``u = eps - x0``)."""
        tb = _per_example(t, x_t)
        u = net(x_t, self.time_scale * jnp.asarray(t, jnp.result_type(t, float)))
        return x_t - tb * u, x_t + (1 - tb) * u


Objective = DDPM | EDM | Flow


def make_objective(
    name: str,
    schedule: Schedule | None = None,
    *,
    prediction: str = "eps",
    weighting: str = "simple",
    snr_gamma: float = 5.0,
    antithetic: bool = False,
    sigma_data: float = 0.5,
) -> Objective:
    """The objective called ``name`` (one of :data:`OBJECTIVES`), with the paper's defaults.

    ``"ddpm"`` needs ``schedule`` and takes ``prediction``, ``weighting``, ``snr_gamma`` and
    ``antithetic``; ``"edm"`` takes ``sigma_data``; ``"flow"`` draws ``t`` uniformly,
    ``"flow-lognormal"`` from the logit-normal (m = 0, s = 1). Options that do not apply to the
    objective are ignored.
    """
    if name == "ddpm":
        if schedule is None:
            raise ValueError("the 'ddpm' objective needs the noise schedule: pass schedule=")
        return DDPM(schedule, prediction, weighting, snr_gamma, antithetic)
    if name == "edm":
        return EDM(sigma_data=sigma_data)
    if name == "flow":
        return Flow("uniform")
    if name == "flow-lognormal":
        return Flow("logit_normal")
    raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")


def train_loss(objective: Objective, apply: Callable) -> Callable[..., jax.Array]:
    """``loss(params, x0, labels, key, dropout_key) -> scalar``: ``objective.loss`` with the
    model ``apply``, for ``Trainer(..., loss=train_loss(objective, apply))``."""

    def loss(params, x0, labels, key, dropout_key):
        return objective.loss(apply, params, x0, labels, key, dropout_key)[0]

    return loss
