"""Noise schedules: the betas of the forward process and every quantity derived from them.

A :class:`Schedule` is an immutable pytree of float32 arrays of shape ``(T,)``, computed once in
float64 NumPy (so that ``alphas_cumprod``, a product of up to thousands of factors, carries no
float32 round-off) and stored as float32 for use inside compiled code.

Index convention: ``t`` is an integer in ``0..T-1``; ``t = 0`` is the least noisy
step and ``alphas_cumprod[t] = prod_{k <= t} alphas[k]`` includes step ``t`` itself.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "SCHEDULE_KINDS",
    "Schedule",
    "TerminalSignalWarning",
    "check_terminal_signal",
    "make_schedule",
    "schedule_from_betas",
]

SCHEDULE_KINDS = ("linear", "quadratic", "sigmoid", "cosine", "constant")

# Above this, x_T still carries a visible amount of x_0 while samplers start from pure N(0, I).
TERMINAL_SIGNAL_THRESHOLD = 0.01


class TerminalSignalWarning(UserWarning):
    """The schedule keeps too much signal at its last step for sampling from N(0, I)."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A diffusion noise schedule with ``T`` steps; every array field has shape ``(T,)``.

    Forward process (DDPM eq. 2 and 4)::

        q(x_t | x_{t-1}) = N(sqrt(alphas[t]) x_{t-1}, betas[t] I)
        q(x_t | x_0)     = N(sqrt(alphas_cumprod[t]) x_0, (1 - alphas_cumprod[t]) I)

    Posterior (DDPM eq. 6-7)::

        q(x_{t-1} | x_t, x_0) = N(posterior_mean_coef1[t] x_0 + posterior_mean_coef2[t] x_t,
                                  posterior_variance[t] I)

    ``posterior_variance[0]`` is 0 (x_{-1} is x_0 itself), so its log is clipped to
    ``posterior_variance[1]`` in ``posterior_log_variance_clipped`` (as in the DDPM code).

    A Schedule is a pytree: pass it to jitted functions as an ordinary argument.
    """

    betas: jax.Array
    alphas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    log_alphas_cumprod: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    log_one_minus_alphas_cumprod: jax.Array
    sqrt_recip_alphas_cumprod: jax.Array
    sqrt_recipm1_alphas_cumprod: jax.Array
    posterior_variance: jax.Array
    posterior_log_variance_clipped: jax.Array
    posterior_mean_coef1: jax.Array
    posterior_mean_coef2: jax.Array
    kind: str = dataclasses.field(default="custom", metadata={"static": True})

    @property
    def num_steps(self) -> int:
        """T, the number of diffusion steps (a static Python int)."""
        return int(self.betas.shape[0])

    @property
    def final_alpha_bar(self) -> float:
        """``alphas_cumprod[T-1]``: the fraction of signal variance left at the last step.

        Samplers start from N(0, I), which is only right when this is close to 0.
        """
        return float(self.alphas_cumprod[-1])

    def __repr__(self) -> str:
        return (
            f"Schedule(kind={self.kind!r}, num_steps={self.num_steps}, "
            f"betas=[{float(self.betas[0]):.3g} .. {float(self.betas[-1]):.3g}], "
            f"alphas_cumprod[-1]={self.final_alpha_bar:.4g})"
        )

    # Schedules hold arrays: equality by identity keeps them hashable like other pytrees.
    __eq__ = object.__eq__
    __hash__ = object.__hash__


jax.tree_util.register_dataclass(
    Schedule,
    data_fields=[f.name for f in dataclasses.fields(Schedule) if f.name != "kind"],
    meta_fields=["kind"],
)


def _check_betas(betas: np.ndarray) -> None:
    if betas.ndim != 1 or betas.shape[0] < 1:
        raise ValueError(
            f"betas must be a non-empty 1-D array of shape (T,), got shape {betas.shape}"
        )
    if not np.all(np.isfinite(betas)):
        bad = int(np.flatnonzero(~np.isfinite(betas))[0])
        raise ValueError(f"betas must be finite, got betas[{bad}] = {float(betas[bad])}")
    if np.any(betas <= 0) or np.any(betas >= 1):
        bad = int(np.flatnonzero((betas <= 0) | (betas >= 1))[0])
        raise ValueError(
            f"betas must lie in the open interval (0, 1), got betas[{bad}] = {float(betas[bad])}; "
            "use a smaller beta_end or clip the user schedule"
        )


def schedule_from_betas(betas, *, kind: str = "custom", dtype=jnp.float32) -> Schedule:
    """Build a :class:`Schedule` from any 1-D array of betas in (0, 1).

    Args:
      betas: ``(T,)`` array-like of per-step noise variances, each in the open interval (0, 1).
      kind: a label kept on the schedule (for reports).
      dtype: storage dtype of the arrays (float32 by default; float64 needs ``jax_enable_x64``).

    Returns:
      The schedule; all derived terms are computed in float64 before the cast to ``dtype``.
    """
    betas = np.asarray(betas, dtype=np.float64)
    _check_betas(betas)
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    one_minus = 1.0 - alphas_cumprod
    # DDPM eq. 7: posterior variance and mean coefficients.
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / one_minus
    # posterior_variance[0] == 0: clip its log to the next value (as the DDPM reference code does).
    clip_from = posterior_variance[1] if len(betas) > 1 else betas[0]
    posterior_log_variance_clipped = np.log(np.append(clip_from, posterior_variance[1:]))
    fields = dict(
        betas=betas,
        alphas=alphas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        log_alphas_cumprod=np.cumsum(np.log1p(-betas)),
        sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
        sqrt_one_minus_alphas_cumprod=np.sqrt(one_minus),
        log_one_minus_alphas_cumprod=np.log(one_minus),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1.0),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=posterior_log_variance_clipped,
        posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / one_minus,
        posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / one_minus,
    )
    return Schedule(**{k: jnp.asarray(v, dtype=dtype) for k, v in fields.items()}, kind=kind)


def _cosine_betas(num_steps: int, s: float, max_beta: float) -> np.ndarray:
    # Nichol & Dhariwal (2021) eq. 17: abar(t) = f(t) / f(0),
    # f(t) = cos^2(((t/T + s) / (1 + s)) pi/2),
    # and betas_t = 1 - abar(t+1)/abar(t), clipped at max_beta to avoid the singularity at t = T.
    steps = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    f = np.cos((steps + s) / (1.0 + s) * math.pi / 2.0) ** 2
    abar = f / f[0]
    return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


def make_schedule(
    kind: str = "linear",
    num_steps: int | None = None,
    *,
    betas: Sequence[float] | np.ndarray | jax.Array | None = None,
    beta_start: float | None = None,
    beta_end: float | None = None,
    s: float | None = None,
    max_beta: float | None = None,
    a: float | None = None,
    dtype=jnp.float32,
) -> Schedule:
    """Build a noise schedule by name, or from ``betas=``.

    Kinds (T = ``num_steps``, default 1000):

    - ``"linear"``: ``betas = linspace(beta_start, beta_end, T)`` (DDPM: 1e-4 .. 0.02).
    - ``"quadratic"``: ``betas = linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2``.
    - ``"sigmoid"``: ``betas = sigmoid(linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start``
      (the 2-D tutorial's schedule).
    - ``"cosine"``: Nichol & Dhariwal's ``alphas_cumprod`` with offset ``s`` (0.008), betas clipped
      at ``max_beta`` (0.999).
    - ``"constant"``: ``alphas[t] = a`` for all t, so ``alphas_cumprod[t] = a ** (t + 1)``.
    - ``betas=array``: any user array of betas in (0, 1) (``kind`` is then ``"custom"``).

    Args:
      kind: one of :data:`SCHEDULE_KINDS`.
      num_steps: T >= 1; inferred from ``betas`` when that is given.
      betas: explicit ``(T,)`` betas; excludes every other option.
      beta_start, beta_end: end points for linear, quadratic and sigmoid (defaults 1e-4, 0.02).
      s, max_beta: cosine offset and clip (defaults 0.008, 0.999).
      a: the constant per-step alpha, in (0, 1); required for ``"constant"``.
      dtype: storage dtype (float32).

    Returns:
      A :class:`Schedule` with ``(T,)`` arrays.

    Raises:
      ValueError: unknown kind, ``num_steps < 1``, options that do not belong to the kind, or
        betas outside (0, 1).
    """
    given = {
        k: v
        for k, v in dict(
            beta_start=beta_start, beta_end=beta_end, s=s, max_beta=max_beta, a=a
        ).items()
        if v is not None
    }
    if betas is not None:
        if given:
            raise ValueError(
                f"make_schedule(betas=...) takes no other schedule options, got {sorted(given)}"
            )
        arr = np.asarray(betas, dtype=np.float64)
        if num_steps is not None and arr.ndim == 1 and arr.shape[0] != num_steps:
            raise ValueError(
                f"num_steps={num_steps} does not match len(betas)={arr.shape[0]}; "
                "omit num_steps when passing betas"
            )
        return schedule_from_betas(arr, kind="custom", dtype=dtype)

    if not isinstance(kind, str) or kind not in SCHEDULE_KINDS:
        raise ValueError(
            f"unknown schedule kind {kind!r}; known kinds: {', '.join(SCHEDULE_KINDS)} "
            "(or pass betas=array)"
        )
    num_steps = 1000 if num_steps is None else num_steps
    if isinstance(num_steps, bool) or not isinstance(num_steps, int | np.integer):
        raise TypeError(f"num_steps must be an int, got {type(num_steps).__name__}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")

    allowed = {
        "linear": {"beta_start", "beta_end"},
        "quadratic": {"beta_start", "beta_end"},
        "sigmoid": {"beta_start", "beta_end"},
        "cosine": {"s", "max_beta"},
        "constant": {"a"},
    }[kind]
    extra = sorted(set(given) - allowed)
    if extra:
        raise ValueError(
            f"schedule kind {kind!r} does not take {extra}; it takes {sorted(allowed)}"
        )

    T = int(num_steps)
    if kind in ("linear", "quadratic", "sigmoid"):
        lo = 1e-4 if beta_start is None else float(beta_start)
        hi = 0.02 if beta_end is None else float(beta_end)
        for name, v in (("beta_start", lo), ("beta_end", hi)):
            if not (0.0 < v < 1.0) or not math.isfinite(v):
                raise ValueError(f"{name} must be in (0, 1), got {v}")
        if kind == "linear":
            b = np.linspace(lo, hi, T, dtype=np.float64)
        elif kind == "quadratic":
            b = np.linspace(math.sqrt(lo), math.sqrt(hi), T, dtype=np.float64) ** 2
        else:
            x = np.linspace(-6.0, 6.0, T, dtype=np.float64)
            b = 1.0 / (1.0 + np.exp(-x)) * (hi - lo) + lo
    elif kind == "cosine":
        s_ = 0.008 if s is None else float(s)
        mb = 0.999 if max_beta is None else float(max_beta)
        if not s_ >= 0.0:
            raise ValueError(f"cosine offset s must be >= 0, got {s_}")
        if not 0.0 < mb < 1.0:
            raise ValueError(f"max_beta must be in (0, 1), got {mb}")
        b = _cosine_betas(T, s_, mb)
    else:  # constant
        if a is None:
            raise ValueError("schedule kind 'constant' needs a=..., the per-step alpha in (0, 1)")
        a_ = float(a)
        if not 0.0 < a_ < 1.0:
            raise ValueError(f"constant schedule needs a in (0, 1), got a={a_}")
        b = np.full(T, 1.0 - a_, dtype=np.float64)
    return schedule_from_betas(b, kind=kind, dtype=dtype)


def check_terminal_signal(
    schedule: Schedule, threshold: float = TERMINAL_SIGNAL_THRESHOLD, *, stacklevel: int = 2
) -> float:
    """Warn when ``alphas_cumprod[-1] > threshold``; return ``alphas_cumprod[-1]``.

    Samplers start from x_T ~ N(0, I). If the forward process has not destroyed the data by step
    T-1, q(x_T) is far from N(0, I) and even a perfect model samples the wrong distribution
    (the 2-D tutorial's sigmoid 1e-5..5e-3 schedule keeps alphas_cumprod[-1] = 0.778).
    """
    final = schedule.final_alpha_bar
    if final > threshold:
        warnings.warn(
            f"schedule {schedule.kind!r} keeps alphas_cumprod[-1] = {final:.3g} > {threshold} "
            "of the signal at its last step, but sampling starts from N(0, I): samples will be "
            "biased. Use more steps or a larger beta_end.",
            TerminalSignalWarning,
            stacklevel=stacklevel,
        )
    return final
